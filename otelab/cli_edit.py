"""``otelab edit``: apply a stream of edits to a model, save the session and per-step JSON."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="preset name, HF id or local path (default: smollm2-135m or $OTELAB_MODEL)")
    p.add_argument("--method", default="memit", choices=["memit", "alphaedit", "prune", "rect", "rlsedit"])
    p.add_argument("--mode", default="aligned",
                   choices=["aligned", "naive", "no-ec", "memorize-nullspace", "memorize-full", "conflict"])
    p.add_argument("--requests", default=None,
                   help="JSON/JSONL file of requests or CounterFact records (default: the built-in fact bank)")
    p.add_argument("--n", type=int, default=20, help="number of requests to edit (default 20)")
    p.add_argument("--batch", type=int, default=10, help="requests per step (default 10)")
    p.add_argument("--corpus", default=None, help="covariance corpus: 'wiki' (default), 'wikitext' or a file path")
    p.add_argument("--cov-tokens", type=int, default=None, help="tokens for the covariance (default: the preset's)")
    p.add_argument("--values", default="per-step", choices=["per-step", "bank"],
                   help="target values: per-step re-optimises them every step on the edited model (the seed "
                        "code's protocol, default); bank optimises them once on the unedited model and keeps them "
                        "in the value bank (otelab values)")
    p.add_argument("--eval", action="store_true", help="record edit metrics after each step")
    p.add_argument("--out", default="runs/edit", help="output folder (default runs/edit)")


def read_records(path: str | None, n: int | None) -> list:
    """Records to edit: the fact bank, a CounterFact file (ROME or flat format), or plain requests.

    Returns:
        ``FactRecord`` objects when the file is CounterFact-shaped (so ``--eval`` can score
        paraphrases and neighbourhoods), else ``EditRequest`` objects.
    """
    from otelab.data import DataError, load_counterfact, load_factbank
    from otelab.requests import EditRequest

    if path is None:
        return load_factbank(n=n)
    try:
        return load_counterfact(path, n=n)
    except DataError:
        pass
    text = Path(path).read_text()
    try:
        items = json.loads(text)
    except json.JSONDecodeError:
        items = [json.loads(line) for line in text.splitlines() if line.strip()]
    if not isinstance(items, list):
        raise SystemExit(f"{path}: expected a JSON list or JSON lines of records")
    items = items[:n] if n else items
    return [EditRequest.from_dict(d, i) for i, d in enumerate(items)]


def _as_request(record):
    return record.request() if hasattr(record, "request") else record


def run(args: argparse.Namespace) -> int:
    from otelab.engine import EditSession
    from otelab.models import load_model
    from otelab.tables import format_table

    if args.batch < 1:
        raise SystemExit("--batch must be ≥ 1")
    records = read_records(args.requests, args.n)
    for r in records:  # structural checks first: a bad file fails before the model loads
        _as_request(r).validate()
    loaded = load_model(args.model)
    for r in records:
        _as_request(r).validate(loaded.tokenizer)
    bank = None
    if args.values == "bank":
        from otelab.valuebank import ValueBank
        bank = ValueBank(loaded)
        bank.compute([_as_request(r) for r in records])   # on the unedited model, before any step
    session = EditSession(loaded, args.method, args.mode, corpus=args.corpus, n_tokens=args.cov_tokens)
    out = Path(args.out)
    (out / "steps").mkdir(parents=True, exist_ok=True)
    baseline = None
    if args.eval:
        from otelab.metrics import Baseline, edit_scores
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
        (out / "steps" / f"step_{rec.step:04d}.json").write_text(json.dumps(record, indent=1))
    session.save(out / "session")
    print(format_table(rows))
    print(f"saved the session to {out / 'session'} and per-step JSON to {out / 'steps'}")
    return 0
