"""The ``otelab`` command line: one parser whose sub-commands are imported from the modules that own them.

Each sub-command lives in the module that owns its logic; this file only wires
them up, importing a module when its command runs so that ``otelab verify``
never pays for loading transformers.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# command -> (module, one-line help). Each module defines
# ``add_arguments(parser)`` and ``run(args) -> int``.
COMMANDS = {
    "verify": ("otelab.toy.verify", "check every identity of the paper numerically, then the toy collapse"),
    "edit": ("otelab.cli.edit", "apply a stream of edits to a real model and save the session"),
    "eval": ("otelab.cli.eval", "evaluate the unedited model or a saved session on a data set"),
    "values": ("otelab.cli.values", "compute, inspect, verify, export and import a bank of target values"),
    "demo": ("otelab.demo.run", "the headline comparison: aligned vs misaligned editing, with an HTML report"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="otelab", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module, help_text) in COMMANDS.items():
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name != module:
                raise
            continue  # command not shipped in this build
        p = sub.add_parser(name, help=help_text, description=help_text)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
