"""The ``tfpipe`` command line: parses arguments and calls library functions, nothing more.

Each sub-command has an ``_add_<name>`` function that declares its arguments
and a ``_run_<name>`` function that calls the library: data commands in
:mod:`tfpipe.cli.data_commands`, model commands in
:mod:`tfpipe.cli.model_commands`. Library modules are imported inside
``_run_*`` so that ``tfpipe --help`` answers instantly and a command loads
only what it needs (TensorFlow takes seconds to import).

Errors caused by the user (:class:`tfpipe.errors.TfpipeError`) are printed as
one message with exit status 2; Ctrl-C exits with 130.
"""

from __future__ import annotations

import argparse
import sys

from tfpipe import __version__
from tfpipe.cli import data_commands, model_commands
from tfpipe.cli.common import quiet_tensorflow
from tfpipe.errors import TfpipeError

# name: (declare the arguments, run); in the order --help lists them.
COMMANDS = data_commands.COMMANDS | model_commands.COMMANDS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tfpipe",
        description="Fast, well-shuffled Keras input for giant images, and the numbers to prove it.",  # noqa: E501
    )
    parser.add_argument("--version", action="version", version=f"tfpipe {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add, _ in COMMANDS.values():
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``tfpipe`` console script."""
    args = build_parser().parse_args(argv)
    quiet_tensorflow()
    try:
        return COMMANDS[args.command][1](args)
    except TfpipeError as err:
        print(f"tfpipe {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tfpipe {args.command}: interrupted", file=sys.stderr)
        return 130
