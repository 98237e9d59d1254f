"""``otelab eval``: evaluate the unedited model, or a saved editing session, on a data set.

Without ``--session`` the unedited model is scored (efficacy is then the share of
facts it already "believes" in their new form, i.e. a floor). With
``--session DIR`` the unedited model is run first to cache its outputs (the
reference for specificity and drift), then the session's edits are applied and
the edited model is scored on the session's own edits and on the data set.
"""
from __future__ import annotations

import argparse

from otelab.cli.edit import count_or_all
from otelab.data.texts import held_out_texts  # its old home; importers may still take it from here

DATA_CHOICES = ("factbank", "counterfact", "zsre")
GLUE_DEFAULT = ("sst2", "mrpc", "cola", "rte", "mmlu")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``eval`` options on ``parser``."""
    parser.add_argument("--model", default=None,
                        help="preset name, Hugging Face id or local path (default: $OTELAB_MODEL or smollm2-135m)")
    parser.add_argument("--session", default=None, metavar="DIR",
                        help="a session folder saved by `otelab edit` / EditSession.save; its edits are applied")
    parser.add_argument("--data", default="factbank", metavar="factbank|counterfact|zsre|PATH",
                        help="records to score: the built-in fact bank, CounterFact or zsRE "
                             "(from $OTELAB_DATA_DIR), or a JSON file (default: factbank)")
    parser.add_argument("--n", type=count_or_all, default=50,
                        help="number of records, the first N, or 'all' (default 50)")
    parser.add_argument("--glue", action="store_true",
                        help="also measure general capability (sst2, mrpc, cola, rte, mmlu) on "
                             "$OTELAB_DATA_DIR subsets or the built-in probes")
    parser.add_argument("--glue-n", type=int, default=100, help="items per general-capability task (default 100)")
    parser.add_argument("--texts", type=int, default=32,
                        help="held-out texts for perplexity / top-1 agreement (0 to skip; default 32)")
    parser.add_argument("--batch", type=int, default=32, help="sequences per forward pass (default 32)")
    parser.add_argument("--json", default=None, metavar="OUT", help="also write the report as JSON to OUT")


def _load_records(spec: str, n: int):
    """Records for ``--data``; zsRE vs CounterFact files are told apart by their fields."""
    from pathlib import Path

    from otelab.data import loaders as data
    if spec == "factbank":
        return data.load_factbank(n)
    if spec == "counterfact":
        return data.load_counterfact(n=n)
    if spec == "zsre":
        return data.load_zsre(n=n, errors="skip")
    path = Path(spec).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"--data {spec!r}: not one of {', '.join(DATA_CHOICES)} and no such file")
    with open(path, encoding="utf-8") as f:
        head = f.read(1 << 16)
    looks_zsre = '"loc_ans"' in head and '"src"' in head
    return data.load_zsre(path, n=n, errors="skip") if looks_zsre else data.load_counterfact(path, n=n)


def _argument_error(args: argparse.Namespace) -> str | None:
    """What is wrong with the arguments (a missing or corrupt session too), before the model loads; or None."""
    if args.n is not None and args.n < 1:
        return "--n must be >= 1"
    if args.batch < 1:
        return "--batch must be >= 1"
    if args.session:
        from otelab.engine.store import SessionError, read

        try:
            read(args.session)
        except SessionError as err:
            return f"cannot load session {args.session!r}: {err}"
    return None


def _load_session(args: argparse.Namespace, loaded, records, texts):
    """``(session, baseline)``: the unedited outputs cached first, then the saved session applied; None, None
    without ``--session``. Raises OSError / ValueError when the session does not fit the model."""
    if not args.session:
        return None, None
    from otelab.engine.session import EditSession
    from otelab.eval.baseline import Baseline

    baseline = Baseline.compute(loaded.model, loaded.tokenizer, records, texts=texts or None,
                                latent_layer=max(loaded.preset.layers) + 1, batch_size=args.batch,
                                show_progress=True)
    return EditSession.load(args.session, loaded, progress=True), baseline


def run(args: argparse.Namespace) -> int:
    """Run ``otelab eval``; returns the process exit code."""
    import sys
    import time

    from otelab.eval import metrics as M
    from otelab.models.loading import load_model
    from otelab.eval.measure import measure
    from otelab.eval.report import Report

    why = _argument_error(args)
    if why:
        print(f"otelab eval: {why}", file=sys.stderr)
        return 2
    t0 = time.time()
    try:
        records = _load_records(args.data, args.n)
    except (OSError, ValueError) as err:
        print(f"otelab eval: cannot load --data {args.data!r}: {err}", file=sys.stderr)
        return 2
    tasks = {}
    if args.glue:
        from otelab.data.loaders import load_glue

        tasks = {t: load_glue(t, n=args.glue_n) for t in GLUE_DEFAULT}
    texts = held_out_texts(args.texts) if args.texts > 0 else []

    loaded = load_model(args.model)
    model, tok = loaded.model, loaded.tokenizer
    print(f"otelab eval: {loaded.preset.name} on {len(records)} records of {args.data!r}"
          + (f", session {args.session}" if args.session else ""), file=sys.stderr)

    try:
        session, baseline = _load_session(args, loaded, records, texts)
    except (OSError, ValueError) as err:
        print(f"otelab eval: cannot load session {args.session!r}: {err}", file=sys.stderr)
        return 2

    metrics = measure(loaded, records=records, baseline=baseline, glue_tasks=tasks or None,
                      texts=texts or None, batch_size=args.batch, show_progress=True)
    if session is not None and session.requests:
        own = M.edit_scores(model, tok, session.requests, args.batch, show_progress=True)
        metrics["edits/efficacy"] = own["efficacy"]
        metrics["edits/efficacy_top1"] = own["efficacy_top1"]

    label = "edited" if session is not None else "unedited"
    rep = Report(label, meta={"model": loaded.preset.name, "data": args.data, "n": len(records),
                              "session": args.session, "n_edits": len(session.requests) if session else 0,
                              "glue_n": args.glue_n if args.glue else 0,
                              "texts": len(texts), "batch": args.batch})
    rep.add(session.n_steps if session is not None else 0, metrics)
    print(rep.to_markdown(layout="metrics"))
    print(f"({time.time() - t0:.0f} s)", file=sys.stderr)
    if args.json:
        rep.to_json(args.json)
        print(f"otelab eval: report written to {args.json}", file=sys.stderr)
    return 0
