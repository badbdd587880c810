"""The ``polyloop`` command: ``backends``, and the commands of installed plugins.

Rule: bad input ends in one line on stderr and exit code 2, never a traceback.

Rule 2: the core has no third-party dependency and names no plugin. ``backends`` works
with the standard library alone (``rich`` colours its table when it is installed); every
other subcommand comes from the entry-point group ``polyloop.commands``, whose entries
name a function ``add(subparsers)`` that adds one subparser with ``set_defaults(fn=...)``
(``fn(args)`` returns the exit code and raises ``UsageError`` for bad input). The
conformance kit adds ``conformance`` and ``serve`` that way
(``polyloop_conformance.cli``), and imports its own libraries only when run.
"""

from __future__ import annotations

import argparse
import os
import sys
from importlib.metadata import entry_points
from typing import Any

from . import __version__
from ._registry import BackendSpec, available_backends, load_backend

__all__ = ["COMMANDS_GROUP", "UsageError", "check_backend", "check_writable", "main"]

#: The entry-point group of the command's plugins (see the module's docstring).
COMMANDS_GROUP = "polyloop.commands"


class UsageError(Exception):
    """Bad input on the command line: printed as one line, exit code 2."""


def _commands(wanted: str | None) -> dict[str, Any]:
    """``{name: add function}`` of the installed command plugins, in name order: only the
    one named ``wanted`` when it is installed (the others are not imported: ``polyloop
    backends`` stays quick), else all of them (for ``--help``). A plugin that cannot be
    imported maps to a ``UsageError`` saying why, raised when it is run."""
    eps = sorted(entry_points(group=COMMANDS_GROUP), key=lambda ep: ep.name)
    if any(ep.name == wanted for ep in eps) or wanted == "backends":
        eps = [ep for ep in eps if ep.name == wanted]
    found: dict[str, Any] = {}
    for ep in eps:
        try:
            found[ep.name] = ep.load()
        except ImportError as exc:  # the kit's own says which extra to install
            found[ep.name] = UsageError(f"'polyloop {ep.name}': {exc}")
        except Exception as exc:  # a broken plugin must not break the other commands
            found[ep.name] = UsageError(
                f"the command {ep.name!r} cannot be loaded: {type(exc).__name__}: {exc}"
            )
    return found


def _unloadable(error: UsageError) -> int:
    raise error


def check_writable(option: str, path: str | None) -> None:
    """``UsageError`` now, before the run, if the report could not be written later.

    The file is opened for appending (as root, ``os.access`` says yes to everything,
    even ``/proc``), and removed again if this made it.
    """
    if path is None:
        return
    existed = os.path.exists(path)
    try:
        with open(path, "a", encoding="utf-8"):
            pass
    except OSError as exc:
        raise UsageError(f"{option} {path}: cannot be written ({exc.strerror})") from None
    if not existed:
        os.unlink(path)


def check_backend(spec: str) -> str:
    try:
        BackendSpec.parse(spec)
        load_backend(spec)
    except (LookupError, ImportError, TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    return spec


TITLE = "polyloop backends (entry-point group polyloop.backends)"


def _backend_rows() -> list[tuple[str, str, str, bool]]:
    """(name, framework or why not, options, loadable) for each registered backend."""
    rows = []
    for info in available_backends(composite=True):
        if info.error is None:
            cls = load_backend(info.name).__class__
            rows.append((info.name, info.version or "?", ", ".join(cls.options) or "-", True))
        else:
            rows.append((info.name, f"unavailable: {info.error}", "", False))
    return rows


def _plain_table(rows: list[tuple[str, str, str]]) -> str:
    header = ("name", "framework", "options")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
    lines = [TITLE, ""]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    return "\n".join(line.rstrip() for line in lines)


def cmd_backends(args: argparse.Namespace) -> int:
    rows = _backend_rows()
    try:
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table
    except ImportError:  # the core alone: a plain table
        print(_plain_table([row[:3] for row in rows]))
        return 0
    table = Table(title=TITLE)
    table.add_column("name")
    table.add_column("framework")
    table.add_column("options")
    for name, framework, options, loadable in rows:
        # escape(): rich reads "[twisted]" in "pip install 'polyloop[twisted]'" as markup
        # and drops it; the extra's name must reach the user.
        framework = escape(framework) if loadable else f"[red]{escape(framework)}[/]"
        table.add_row(escape(name), framework, escape(options))
    Console().print(table)
    return 0


def _parser(wanted: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="polyloop",
        description="Networked code written once, run on asyncio, Twisted, gevent and Tornado.",
    )
    parser.add_argument("--version", action="version", version=f"polyloop {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("backends", help="list the installed backends and their frameworks")
    p.set_defaults(fn=cmd_backends)

    for name, add in _commands(wanted).items():
        if isinstance(add, UsageError):  # did not load: the command says why when run
            # Takes any arguments (no prefix char: nothing is an option) so the reason is
            # what the user reads, not argparse's complaint about them.
            p = sub.add_parser(name, help=f"(cannot be loaded: {add})", prefix_chars="\0")
            p.add_argument("arguments", nargs="*")
            p.set_defaults(fn=lambda args, error=add: _unloadable(error))
        else:
            add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``polyloop`` command; returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    wanted = next((a for a in argv if not a.startswith("-")), None)
    args = _parser(wanted).parse_args(argv)
    try:
        return int(args.fn(args))
    except UsageError as exc:
        print(f"polyloop: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
