"""The `compresslm` command line: a thin layer over the Python API.

Each command group lives in its own module with a ``register(subparsers)`` function that adds its
parsers and sets ``func`` to a callable taking the parsed namespace and returning an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from compresslm import __version__

# Modules of this package that contribute commands, in the order `--help` lists them.
COMMAND_MODULES: tuple[str, ...] = ("select", "study", "demo", "compress", "tokens")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="compresslm",
        description="Compression for language-model training data.",
    )
    parser.add_argument("--version", action="version", version=f"compresslm {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="<command>")
    for name in COMMAND_MODULES:
        importlib.import_module(f"compresslm.cli.{name}").register(subparsers)
    from compresslm.cli.common import use_defaults_formatter

    use_defaults_formatter(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a bad option (argparse printed why)
        return exc.code if isinstance(exc.code, int) else 2
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:
        # The reader went away (`compresslm inspect --json x.clm | head`): stop quietly like `cat`,
        # and point stdout at /dev/null so the interpreter's final flush does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a command killed by a closed pipe
    except KeyboardInterrupt:
        print("interrupted: no output was left behind that looks complete", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
