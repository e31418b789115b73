"""The ``lort`` command line (:mod:`lort.cli.commands`) and what it prints
(:mod:`lort.cli.tables`)."""

from lort.cli.commands import main

__all__ = ["main"]
