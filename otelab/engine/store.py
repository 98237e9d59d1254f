"""Session folders on disk: what ``save`` may replace, how it replaces it, what ``load`` verifies.

A session folder holds exactly two files: ``session.json`` (settings, history, the
checksums) and ``state.safetensors`` (tensors). ``session.json`` carries the SHA-256
of every tensor and a checksum of its own content, so any change to either file is
detected on read.

Replacing is atomic with respect to ``kill -9``. The new session is written into a
temporary folder ``.otelab-new-<name>-…`` beside the target; then the old session is
renamed to ``.otelab-old-<name>-…``, the new one renamed into place and the old one
removed. Each temporary folder holds a marker file naming its role and target, and
only folders with both the name and the marker are ever touched. A killed save leaves
the target holding the old or the new session, or (between the two renames) missing
with a complete copy beside it; :func:`recover`, run by every save and load, puts that
copy back and removes leftover temporary folders.
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import tempfile
from pathlib import Path

import torch

META_FILE = "session.json"
STATE_FILE = "state.safetensors"
MARKER = ".otelab-save"                 # inside otelab's own temporary folders
PART = MARKER + ".part"                 # the marker being replaced
SESSION_FILES = {META_FILE, STATE_FILE, MARKER, PART}   # a killed save can leave the last two in a session


class SessionError(ValueError):
    """A session could not be created, stepped, saved or loaded. Nothing was changed."""


# ----------------------------------------------------------------------------- checksums

def tensor_sha256(t: torch.Tensor) -> str:
    """SHA-256 of a tensor's bytes (its dtype and shape are recorded separately)."""
    raw = t.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
    return hashlib.sha256(raw.numpy().tobytes()).hexdigest()


def _canonical(meta: dict) -> bytes:
    return json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()


def meta_checksum(meta: dict) -> str:
    """SHA-256 of ``meta`` without its ``checksum`` field, in a canonical JSON form."""
    return hashlib.sha256(_canonical({k: v for k, v in meta.items() if k != "checksum"})).hexdigest()


# ----------------------------------------------------------------------------- what may be replaced

def _is_session_folder(path: Path) -> tuple[bool, str]:
    """Whether ``path`` (an existing, non-empty folder) is an otelab session; else why not."""
    entries = set(os.listdir(path))
    if META_FILE not in entries or not entries <= SESSION_FILES:
        other = sorted(entries - SESSION_FILES)[:3]
        return False, f"it holds {', '.join(map(repr, other)) or 'no ' + META_FILE}"
    try:
        meta = json.loads((path / META_FILE).read_text())
    except (OSError, ValueError) as err:
        return False, f"its {META_FILE} cannot be read ({err})"
    if not isinstance(meta, dict) or "format" not in meta or "method" not in meta:
        return False, f"its {META_FILE} is not an otelab session's"
    return True, ""


def check_target(path: str | os.PathLike) -> Path:
    """Check that a session may be saved at ``path``; return it as an absolute path.

    Refused: the working directory or any folder above it, a symbolic link, a file, and a
    non-empty folder that is not an otelab session.

    Raises:
        SessionError: naming the path and the reason.
    """
    p = Path(path).expanduser().absolute()
    real, cwd = p.resolve(), Path.cwd().resolve()
    if real == cwd or real in cwd.parents:
        raise SessionError(f"refusing to save a session at {p}: it is the working directory or a folder above it")
    if p.is_symlink():
        raise SessionError(f"refusing to save a session at {p}: it is a symbolic link")
    if p.exists():
        if not p.is_dir():
            raise SessionError(f"refusing to save a session at {p}: it exists and is not a folder")
        if os.listdir(p):
            ok, why = _is_session_folder(p)
            if not ok:
                raise SessionError(f"refusing to save a session at {p}: it is a non-empty folder that is not "
                                   f"an otelab session ({why}); choose another path")
    return p


# ----------------------------------------------------------------------------- temporary folders

def _temps(p: Path) -> list[tuple[Path, dict | None]]:
    """otelab's temporary folders for target ``p``: (folder, marker) with marker None when empty."""
    out = []
    if not p.parent.is_dir():
        return out
    for role in ("new", "old"):
        prefix = f".otelab-{role}-{p.name}-"
        for d in p.parent.iterdir():
            if not d.name.startswith(prefix) or d.is_symlink() or not d.is_dir():
                continue
            try:
                marker = json.loads((d / MARKER).read_text())
            except (OSError, ValueError):
                # killed right after mkdtemp or while writing the first marker: nothing else in it
                if set(os.listdir(d)) <= {MARKER}:
                    out.append((d, None))
                continue
            if isinstance(marker, dict) and marker.get("target") == p.name and marker.get("role") == role:
                out.append((d, marker))
    return out


def _write_marker(folder: Path, target: Path, role: str, complete: bool) -> None:
    """Write the marker that makes ``folder`` one of otelab's temporary folders.

    The first marker is written in place (a kill can leave it torn, but then it is the
    folder's only file, which :func:`_temps` recognises); later updates go through a
    temporary file and ``os.replace`` so the folder always has a whole marker.
    """
    data = json.dumps({"otelab": "session save", "role": role, "target": target.name,
                       "complete": complete}).encode()
    if not (folder / MARKER).exists():
        _write_file(folder / MARKER, data)
        return
    part = folder / PART
    _write_file(part, data)
    os.replace(part, folder / MARKER)


def recover(path: str | os.PathLike) -> bool:
    """Finish or undo an interrupted save at ``path``; remove leftover temporary folders.

    When ``path`` is missing but a complete new session (or the old one) waits beside it,
    that folder is renamed into place. Only folders named ``.otelab-new-<name>-…`` or
    ``.otelab-old-<name>-…`` holding otelab's marker for this target are touched.

    Returns:
        True when a folder was renamed into place.
    """
    p = Path(path).expanduser().absolute()
    temps = _temps(p)
    restored = False
    if not p.exists() and not p.is_symlink():
        # a complete new session first (the save got past writing it), else the old one
        ready = [d for d, m in temps if m and m["role"] == "new" and m.get("complete")]
        ready += [d for d, m in temps if m and m["role"] == "old"]
        if ready:
            os.rename(ready[0], p)
            (p / MARKER).unlink(missing_ok=True)
            restored = True
            temps = [(d, m) for d, m in temps if d != ready[0]]
    for d, marker in temps:
        _remove(d)
    if p.is_dir() and not p.is_symlink() and _is_session_folder(p)[0]:
        for name in (MARKER, PART):       # a save killed just before or after its swap
            (p / name).unlink(missing_ok=True)
    return restored


def _remove(folder: Path) -> None:
    """Remove one of otelab's temporary folders, its marker last, so a kill midway leaves it recognisable."""
    for entry in folder.iterdir():
        if entry.name == MARKER:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    (folder / MARKER).unlink(missing_ok=True)
    os.rmdir(folder)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(path, 0o644)


# ----------------------------------------------------------------------------- write and read

def write(path: str | os.PathLike, meta: dict, tensors: dict[str, torch.Tensor]) -> Path:
    """Save a session folder at ``path``, replacing an older session there atomically.

    Arguments:
        path: the session folder (see :func:`check_target` for what is refused).
        meta: JSON-serialisable settings; ``tensors`` and ``checksum`` are added here.
        tensors: name -> CPU tensor.
    Returns:
        The absolute path.
    """
    from safetensors.torch import save

    p = check_target(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    recover(p)
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    meta = dict(meta, tensors={k: {"sha256": tensor_sha256(v), "dtype": str(v.dtype).replace("torch.", ""),
                                   "shape": list(v.shape)} for k, v in tensors.items()})
    meta["checksum"] = meta_checksum(meta)
    text = json.dumps(meta, indent=1).encode()
    tmp = Path(tempfile.mkdtemp(prefix=f".otelab-new-{p.name}-", dir=p.parent))
    old = None
    try:
        tmp.chmod(0o755)
        _write_marker(tmp, p, "new", complete=False)
        _write_file(tmp / STATE_FILE, save(tensors))
        _write_file(tmp / META_FILE, text)
        _write_marker(tmp, p, "new", complete=True)
        _fsync_dir(tmp)
        if p.exists():
            old = p.parent / f".otelab-old-{p.name}-{secrets.token_hex(4)}"
            _write_marker(p, p, "old", complete=True)
            os.rename(p, old)
        os.rename(tmp, p)
    except BaseException:
        if old is not None and not p.exists():
            os.rename(old, p)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    (p / MARKER).unlink(missing_ok=True)
    _fsync_dir(p.parent)
    if old is not None:
        _remove(old)
    return p


def read(path: str | os.PathLike) -> tuple[dict, dict[str, torch.Tensor]]:
    """Read and verify a session folder (no model needed).

    Returns:
        ``(meta, tensors)``; the tensors are owned CPU memory.
    Raises:
        SessionError: naming the file and what is wrong with it.
    """
    from safetensors.torch import load

    p = Path(path).expanduser().absolute()
    try:
        recover(p)
    except OSError:
        pass                                         # read-only location: read what is there
    if not p.is_dir():
        raise SessionError(f"{p}: no such session folder")
    mfile, sfile = p / META_FILE, p / STATE_FILE
    try:
        meta = json.loads(mfile.read_bytes())
    except FileNotFoundError:
        raise SessionError(f"{mfile}: missing; {p} is not an otelab session") from None
    except (OSError, ValueError) as err:
        raise SessionError(f"{mfile}: not valid JSON ({err})") from None
    if not isinstance(meta, dict) or "format" not in meta:
        raise SessionError(f"{mfile}: not an otelab session file (no 'format' field)")
    if meta.get("checksum") is None:
        raise SessionError(f"{mfile}: format {meta.get('format')} has no checksums; this otelab reads "
                           f"verified sessions only (re-create and save it again)")
    if meta_checksum(meta) != meta["checksum"]:
        raise SessionError(f"{mfile}: its content does not match its checksum (the file was changed or corrupted)")
    try:
        tensors = load(sfile.read_bytes())
    except FileNotFoundError:
        raise SessionError(f"{sfile}: missing") from None
    except Exception as err:     # safetensors raises its own error types for torn files
        raise SessionError(f"{sfile}: unreadable, truncated or corrupted ({type(err).__name__}: {err})") from None
    expected = meta.get("tensors") or {}
    for name in expected:
        if name not in tensors:
            raise SessionError(f"{sfile}: tensor {name!r} is missing")
    for name in tensors:
        if name not in expected:
            raise SessionError(f"{sfile}: unexpected tensor {name!r}")
    for name, info in expected.items():
        t = tensors[name]
        if list(t.shape) != info["shape"] or str(t.dtype).replace("torch.", "") != info["dtype"]:
            raise SessionError(f"{sfile}: tensor {name!r} has shape {list(t.shape)} and dtype {t.dtype}, "
                               f"recorded {info['shape']} {info['dtype']}")
        if tensor_sha256(t) != info["sha256"]:
            bad = " (it holds NaN or inf)" if t.is_floating_point() and not bool(torch.isfinite(t).all()) else ""
            raise SessionError(f"{sfile}: tensor {name!r} does not match its checksum{bad}")
    return meta, tensors
