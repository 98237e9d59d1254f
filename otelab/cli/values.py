"""``otelab values``: compute, inspect, verify, export and import a value bank (:mod:`otelab.engine.valuebank`).

Values in a bank are optimised once on the unedited model (the ``bank`` protocol); the seed
code's ``per-step`` protocol re-optimises them every step on the edited model and never uses
a bank.

Examples::

    otelab values compute --data counterfact --n 2000 --seed 0      # resumes if interrupted
    otelab values compute --data counterfact --n 2000 --seed 0 --templates plain   # the recorded streams' bank
    otelab values status                                             # every bank in the cache
    otelab values status --data counterfact --n 2000 --seed 0        # done / missing of a selection
    otelab values export --data factbank --out factbank-values.safetensors
    otelab values import factbank-values.safetensors
"""
from __future__ import annotations

import argparse
import sys


def _selection(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="preset name, HF id or local path (default: smollm2-135m or $OTELAB_MODEL)")
    p.add_argument("--data", default=None, choices=["factbank", "counterfact"],
                   help="the built-in fact bank or CounterFact ($OTELAB_DATA_DIR/counterfact/counterfact-edit.json)")
    p.add_argument("--path", default=None, help="a CounterFact file instead of the default one (with --data counterfact)")
    p.add_argument("--requests", default=None, help="a JSON/JSONL file of requests or CounterFact records")
    p.add_argument("--n", type=int, default=None, help="how many records (default: all)")
    p.add_argument("--seed", type=int, default=None, help="draw the --n records at random with this seed (default: the first n)")
    p.add_argument("--bank", default=None, metavar="DIR", help="the bank's folder (default: under the otelab cache)")
    p.add_argument("--chunk", type=int, default=None, help="requests optimised and stored together (default 32)")
    p.add_argument("--templates", default="context", choices=["context", "plain"],
                   help="prompts the values are optimised on: the preset's context templates (default, the seed "
                        "code's way) or the plain prompt only (about 3x cheaper; the recorded 2,000-edit runs)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True)
    _selection(sub.add_parser("compute", help="compute (or resume) the values of a selection of requests"))
    s = sub.add_parser("status", help="list the banks in the cache, or say how many values of a selection are done")
    _selection(s)
    _selection(sub.add_parser("inspect", help="per request of a selection: steps, final NLL, ‖δ‖"))
    _selection(sub.add_parser("verify", help="re-check every shard of a model's bank; bad ones are set aside"))
    e = sub.add_parser("export", help="write a bank (or a selection's values) to one safetensors file")
    _selection(e)
    e.add_argument("--out", required=True, help="the file to write")
    i = sub.add_parser("import", help="add an exported file's values to this model's bank, after checking them")
    _selection(i)
    i.add_argument("file", help="a file written by `otelab values export`")


class _Usage(Exception):
    """A bad argument or input: reported on one line, exit 2."""


def read_selection(args: argparse.Namespace, required: bool) -> list | None:
    """The records the arguments select (``None`` when none are named and ``required`` is False)."""
    from otelab.data.loaders import load_counterfact, load_factbank, sample_records

    if args.n is not None and args.n < 1:
        raise _Usage(f"--n must be ≥ 1, got {args.n}")
    if args.chunk is not None and args.chunk < 1:
        raise _Usage(f"--chunk must be ≥ 1, got {args.chunk}")
    if args.requests and (args.data or args.path):
        raise _Usage("give either --requests or --data/--path, not both")
    if args.path and args.data != "counterfact":
        raise _Usage("--path needs --data counterfact")
    if not (args.requests or args.data):
        if required or args.n is not None or args.seed is not None:
            raise _Usage("name the requests: --data factbank|counterfact or --requests FILE")
        return None
    if args.requests:
        from otelab.cli.edit import read_records
        records = read_records(args.requests, None)
    elif args.data == "factbank":
        records = load_factbank()
    else:
        from otelab.data.files import ENV_VAR
        import os
        if args.path is None and not os.environ.get(ENV_VAR):
            raise _Usage(f"--data counterfact needs ${ENV_VAR} (or --path FILE); without it otelab would "
                         "silently use the fact bank")
        records = load_counterfact(args.path)
    n = len(records) if args.n is None else args.n
    if n > len(records):
        raise _Usage(f"--n {n}: the selection has only {len(records)} records")
    records = sample_records(records, n, args.seed) if args.seed is not None else records[:n]
    return [r.request() if hasattr(r, "request") else r for r in records]


def _bank(args, requests):
    from otelab.models.loading import load_model
    from otelab.engine.valuebank import ValueBank
    from otelab.engine.values import DEFAULT_CHUNK

    for r in requests or []:   # structural checks first: a bad file fails before the model loads
        r.validate()
    loaded = load_model(args.model)
    for r in requests or []:
        r.validate(loaded.tokenizer)
    templates = ["{}"] if getattr(args, "templates", "context") == "plain" else None
    return loaded, ValueBank(loaded, path=args.bank, templates=templates, chunk=args.chunk or DEFAULT_CHUNK,
                             progress=not args.no_progress)


def _run(args: argparse.Namespace) -> int:
    from otelab.views.text_table import format_table
    from otelab.engine.bankfiles import list_banks
    from otelab.engine.valuebank import ValueBank

    if args.action == "status" and read_selection(args, required=False) is None:
        from otelab.cache import cache_dir
        from pathlib import Path
        banks = list_banks(Path(args.bank).parent if args.bank else None)
        if not banks:
            print(f"no value banks under {cache_dir('values')}")
            return 0
        print(format_table([{"model": b["model"], "fingerprint": (b["fingerprint"] or "?")[:12], "values": b["values"],
                             "shards": b["shards"], "templates": b["templates"], "path": b["path"]} for b in banks]))
        return 0
    if args.action == "import":
        from pathlib import Path
        if not Path(args.file).is_file():
            raise _Usage(f"{args.file}: no such file")
        if args.data or args.requests:
            raise _Usage("import takes a file only (no --data/--requests)")
        _, bank = _bank(args, None)
        before = len(bank)
        bank = ValueBank.import_(args.file, bank.loaded, path=bank.path, chunk=bank.chunk, progress=bank.progress)
        print(f"imported {args.file}: {len(bank) - before} new values, {len(bank)} in {bank.path}")
        return 0
    required = args.action in ("compute", "inspect")
    requests = read_selection(args, required=required)
    loaded, bank = _bank(args, requests)
    if args.action == "compute":
        todo = len(bank.missing(requests))
        print(f"{len(requests)} requests: {len(requests) - todo} already in {bank.path}, computing {todo}",
              flush=True)
        bank.compute(requests)
        print(f"done: {len(requests)} values in {bank.path}")
    elif args.action == "status":
        todo = len(bank.missing(requests))
        print(f"{bank.path}: {len(requests) - todo} of {len(requests)} requests done, {todo} missing "
              f"({len(bank)} values stored)")
    elif args.action == "inspect":
        todo = bank.missing(requests)
        if todo:
            raise _Usage(f"{len(todo)} of the {len(requests)} requests are not in the bank yet "
                         f"(first: {todo[0].name}); run `otelab values compute` with the same selection")
        v = bank.get(requests, progress=False)
        rows = [{"request": r.name, "target": r.target_new, "steps": s, "final NLL": v.losses[-1][j],
                 "‖δ‖/‖h‖": round(float((v.z[j] - v.z_init[j]).norm() / v.z_init[j].norm()), 4)}
                for j, (r, s) in enumerate(zip(requests, v.row_steps))]
        print(format_table(rows))
    elif args.action == "verify":
        rep = bank.verify()
        print(f"{rep['path']}: {rep['values']} values in {rep['shards']} shards verified; "
              f"{len(rep['bad'])} bad shard(s) set aside" + "".join(f"\n  {n}: {w}" for n, w in rep["bad"]))
        return 1 if rep["bad"] else 0
    elif args.action == "export":
        file = bank.export(args.out, requests)
        print(f"wrote {file} ({len(requests) if requests else len(bank)} values)")
    return 0


def run(args: argparse.Namespace) -> int:
    from otelab.data.records import DataError
    from otelab.data.requests import RequestError
    from otelab.engine.bankfiles import ValueBankError

    try:
        return _run(args)
    except (_Usage, DataError, RequestError, ValueBankError, FileNotFoundError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"otelab values {args.action}: error: {msg}", file=sys.stderr)
        return 2
