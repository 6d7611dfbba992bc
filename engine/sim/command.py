"""``onward simulate`` (being built)."""

from onward.cli.main import AddCommand

__all__ = ["register_command"]


def register_command(command: AddCommand) -> None:
    """Add ``onward simulate`` to the command line (the ``onward.commands`` entry point)."""
