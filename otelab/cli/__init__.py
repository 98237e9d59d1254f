"""The ``otelab`` command line: ``main`` dispatches to the module that owns each sub-command."""
from otelab.cli.main import main

__all__ = ["main"]
