"""The ``onward`` command line: reads any log without the user's code."""

from onward.cli.main import main

__all__ = ["main"]
