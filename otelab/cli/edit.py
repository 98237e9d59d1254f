"""``otelab edit``: apply a stream of edits to a model, save the session and per-step JSON.

Everything that can be checked without the model is checked first (method × mode, the
output folder, every request: file, line and field), so a bad invocation exits 2 with one
line before any model or covariance is loaded.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from otelab.engine.session import METHODS, SESSION_MODES

STEP_FILE = re.compile(r"step_\d{4,}\.json")     # the per-step files this command writes


def count_or_all(text: str) -> int | None:
    """``--n``: an integer >= 1, or ``all`` (returned as None); the same for files and the fact bank."""
    if text.strip().lower() == "all":
        return None
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1 or 'all', got {text!r}")
    return n


def positive_int(text: str) -> int:
    """An integer >= 1 (``--batch``)."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return n


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="preset name, HF id or local path (default: smollm2-135m or $OTELAB_MODEL)")
    p.add_argument("--method", default="memit", choices=METHODS)     # live: a registered row is a choice
    p.add_argument("--mode", default="aligned", choices=SESSION_MODES)
    p.add_argument("--requests", default=None,
                   help="JSON/JSONL file of requests or CounterFact records (default: the built-in fact bank)")
    p.add_argument("--n", type=count_or_all, default=20,
                   help="number of requests to edit, the first N, or 'all' (default 20)")
    p.add_argument("--batch", type=positive_int, default=10, help="requests per step (default 10)")
    p.add_argument("--corpus", default=None, help="covariance corpus: 'wiki' (default), 'wikitext' or a file path")
    p.add_argument("--cov-tokens", type=positive_int, default=None, help="tokens for the covariance (default: the preset's)")
    p.add_argument("--values", default="per-step", choices=["per-step", "bank"],
                   help="target values: per-step re-optimises them every step on the edited model (the seed "
                        "code's protocol, default); bank optimises them once on the unedited model and keeps them "
                        "in the value bank (otelab values)")
    p.add_argument("--eval", action="store_true", help="record edit metrics after each step")
    p.add_argument("--out", default="runs/edit", help="output folder (default runs/edit)")


def read_records(path: str | None, n: int | None) -> list:
    """Records to edit: the fact bank, a CounterFact file (ROME or flat format), or plain requests.

    Every record is checked (without a tokenizer) before it is returned.

    Arguments:
        path: a JSON or JSON Lines file, or None for the built-in fact bank.
        n: keep the first ``n`` records; None keeps all.
    Returns:
        ``FactRecord`` objects when the file is CounterFact-shaped (so ``--eval`` can score
        paraphrases and neighbourhoods), else ``EditRequest`` objects.
    Raises:
        DataError: naming the file, the line and the field at fault.
    """
    from otelab.data.files import read_records as read_file
    from otelab.data.loaders import load_counterfact, load_factbank
    from otelab.data.records import DataError
    from otelab.data.requests import EditRequest, RequestError

    if path is None:
        return load_factbank(n=n)
    raw = read_file(path)
    if not raw:
        raise DataError(f"{path}: the file holds no records")
    first = raw[0]
    if isinstance(first, dict) and ("requested_rewrite" in first or "ground_truth" in first):
        records = load_counterfact(path, n=n)
    else:
        records = []
        for i, d in enumerate(raw[:n] if n else raw):
            try:
                records.append(EditRequest.from_dict(d, i))
            except RequestError as err:
                raise DataError(f"{path}: line {raw.line(i)}: {err}") from None
    for i, r in enumerate(records):
        try:
            _as_request(r).validate()
        except RequestError as err:
            raise DataError(f"{path}: line {raw.line(i)}: {err}") from None
    return records


def _as_request(record):
    return record.request() if hasattr(record, "request") else record


def _remove_old_steps(folder: Path) -> None:
    """Remove the step files of an earlier run into the same folder (only files this command writes)."""
    if folder.is_dir():
        for f in folder.iterdir():
            if STEP_FILE.fullmatch(f.name) and f.is_file() and not f.is_symlink():
                f.unlink()


def run(args: argparse.Namespace) -> int:
    """Run ``otelab edit``; one line on stderr and exit 2 for bad input."""
    from otelab.data.records import DataError
    from otelab.data.requests import RequestError
    from otelab.engine.store import SessionError

    try:
        return _run(args)
    except (DataError, RequestError, SessionError, FileNotFoundError) as err:
        print(f"otelab edit: {err}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from otelab.engine import store as session_store
    from otelab.cache import atomic_write_bytes
    from otelab.engine.session import EditSession, SessionError, check_combo

    check_combo(args.method, args.mode)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise SessionError(f"--out {out}: exists and is not a folder")
    session_store.check_target(out / "session")
    records = read_records(args.requests, args.n)

    from otelab.models.loading import load_model
    from otelab.views.text_table import format_table

    loaded = load_model(args.model)
    for r in records:
        _as_request(r).validate(loaded.tokenizer)
    bank = None
    if args.values == "bank":
        from otelab.engine.valuebank import ValueBank
        bank = ValueBank(loaded)
        bank.compute([_as_request(r) for r in records])   # on the unedited model, before any step
    session = EditSession(loaded, args.method, args.mode, corpus=args.corpus, n_tokens=args.cov_tokens)
    _remove_old_steps(out / "steps")
    (out / "steps").mkdir(parents=True, exist_ok=True)
    baseline = None
    if args.eval:
        from otelab.eval.metrics import Baseline, edit_scores
        baseline = Baseline.compute(loaded.model, loaded.tokenizer, records)
    from tqdm.auto import tqdm

    rows = []
    batches = [records[i:i + args.batch] for i in range(0, len(records), args.batch)]
    for b, batch in enumerate(tqdm(batches, desc=f"{args.method}/{args.mode}", unit="step")):
        reqs = [_as_request(r) for r in batch]
        rec = session.step(reqs, values=bank.get(reqs, progress=False, compute=False) if bank is not None else None)
        row = {"step": rec.step, "edits": sum(len(h.requests) for h in session.history),
               "‖Δ‖ (sum over layers)": round(sum(rec.delta_norms.values()), 4),
               "value NLL": round(sum(rec.value_losses[-1]) / len(rec.value_losses[-1]), 4),
               "time (s)": rec.timings["total"]}
        record = {"step": rec.step, "requests": rec.requests, "delta_norms": rec.delta_norms,
                  "value_steps": rec.value_steps, "timings": rec.timings}
        if baseline is not None:
            so_far = [r for bb in batches[:b + 1] for r in bb]
            scores = {}
            for tag, recs in (("all", so_far), ("latest", batch)):
                res = edit_scores(loaded.model, loaded.tokenizer, recs, baseline=baseline, show_progress=False)
                scores.update({f"{k}_{tag}": res[k] for k in ("efficacy", "paraphrase", "specificity")
                               if isinstance(res.get(k), float)})
            row.update({k: round(v, 3) for k, v in scores.items()})
            record["metrics"] = scores
        rows.append(row)
        atomic_write_bytes(out / "steps" / f"step_{rec.step:04d}.json", json.dumps(record, indent=1).encode())
    session.save(out / "session")
    print(format_table(rows))
    print(f"saved the session to {out / 'session'} and per-step JSON to {out / 'steps'}")
    return 0
