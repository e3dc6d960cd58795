"""The `edgernn` command line. Nothing imports this package; it imports the layers below."""

from edgernn.cli.app import main

__all__ = ["main"]
