"""The ``circuitlab`` command line.

Each subcommand lives in its own module ``cli/cmd_<name>.py`` exposing ``NAME``, ``HELP``,
``add_arguments(parser)`` and ``run(args) -> int``; modules are discovered automatically.
Errors a user can fix are printed as one line naming the problem and the fix, without a
traceback, with exit status 2 (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import NoReturn


class UsageError(Exception):
    """A problem with the user's input; its message says what to do."""


def check_at_least(*checks: tuple[str, float | None, float]) -> None:
    """``UsageError`` for the first ``(flag, value, low)`` whose value is below ``low``
    (a None value is not given and passes): range checks argparse cannot do, before any work."""
    for flag, value, low in checks:
        if value is not None and value < low:
            raise UsageError(f"{flag} must be at least {low}; got {value}")


class _Parser(argparse.ArgumentParser):
    """Flag errors on one line (argparse would print the whole usage first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _commands() -> list[ModuleType]:
    mods = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("cmd_"):
            mods.append(importlib.import_module(f"{__name__}.{info.name}"))
    return sorted(mods, key=lambda m: m.NAME)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="circuitlab",
        description="Circuit tracing for language models: attribution graphs, interventions, a web lab.",
    )
    sub = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=_Parser
    )
    for mod in _commands():
        p = sub.add_parser(
            mod.NAME,
            help=mod.HELP,
            description=getattr(mod, "DESCRIPTION", mod.HELP),
            epilog=getattr(mod, "EXAMPLES", None),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("circuitlab: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if getattr(args, "debug", False) or not _is_user_error(e):
            raise
        print(f"circuitlab {args.command}: error: {_message(e, args)}", file=sys.stderr)
        return 2


def _is_user_error(e: Exception) -> bool:
    """Errors that come from the user's input, not from a bug: their messages name the fix.

    OSError covers missing files and folders and failed hub look-ups (unknown model ids),
    ImportError a missing optional extra, SafetensorError a damaged weight file,
    NotEnoughMemoryError an attribution refused before it starts (settings too large; its
    disk counterpart NotEnoughDiskError is an OSError).
    """
    if isinstance(e, (UsageError, ValueError, OSError, ImportError)):
        return True
    return type(e).__name__ in ("SafetensorError", "NotEnoughMemoryError")


def _message(e: Exception, args: argparse.Namespace) -> str:
    from_library = getattr(e, "message", None)
    if type(e).__name__ in ("NotEnoughMemoryError", "NotEnoughDiskError") and callable(
        from_library
    ):
        return one_line(Exception(from_library(cli=True)))  # flags instead of keywords
    text = one_line(e)
    model = getattr(args, "model", None)
    hub_error = "huggingface.co" in text or "Repo id must" in text
    if hub_error and isinstance(model, str) and _looks_local(model):
        return (
            f"-m/--model {model}: no such file or folder; pass a model folder (with "
            "config.json), a .gguf file, or a hub id"
        )
    if isinstance(e, OSError) and hub_error:
        what = f"model {model!r}" if model else "a model or transcoder"
        return (
            f"could not load {what} from the Hugging Face hub (offline, or no such id): pass a "
            "local folder (or .gguf file), or check the id and your network"
        )
    if type(e).__name__ == "SafetensorError":
        return (
            f"a weight file is not readable safetensors ({text}): re-download or re-save the "
            "model/transcoder files"
        )
    return text


def _looks_local(ref: str) -> bool:
    from pathlib import Path

    return not Path(ref).exists() and (ref.startswith(("/", ".", "~")) or ref.count("/") != 1)


def one_line(e: BaseException) -> str:
    """The message of ``e`` on one line (library messages may span several)."""
    text = " ".join(str(e).split())
    return text or type(e).__name__


if __name__ == "__main__":
    sys.exit(main())
