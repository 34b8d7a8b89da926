"""Command-line parsing shared by ``train.py`` and ``evaluate.py``: tyro, with one-line errors.

tyro explains a bad argument in a framed box of a dozen lines; in a log or a
job scheduler's output, one line is what users read. :func:`parse` runs tyro
with its output captured and, when tyro rejects the arguments, raises
:class:`CliError` carrying one line that names the bad value and what is
allowed (the option's expected type, or the closest known options).
``--help`` is left to tyro untouched.
"""

from __future__ import annotations

import contextlib
import difflib
import io
import os
import re
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import tyro

T = TypeVar("T")

_RULE = re.compile(r"^[\s\-─━│╭╮╰╯┌┐└┘]*$")


class CliError(ValueError):
    """Arguments that tyro rejected; the message is one line."""


def parse(cls: Any, argv: Sequence[str], *, description: str | None = None, default: Any = None, prog: str | None = None) -> T:
    """``tyro.cli`` on ``argv``; a :class:`CliError` with one line instead of tyro's box on bad input."""
    if any(arg in ("-h", "--help") for arg in argv):
        try:
            return tyro.cli(cls, args=list(argv), default=default, description=description, prog=prog)
        except BrokenPipeError:  # `--help | head`: the reader went away (see print_or_quit)
            raise SystemExit(_quiet_broken_pipe()) from None
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured), contextlib.redirect_stdout(captured):
            kwargs = {"default": default} if default is not None else {}
            return tyro.cli(cls, args=list(argv), description=description, prog=prog, **kwargs)
    except SystemExit as exit_:
        if exit_.code in (0, None):
            raise
        text = captured.getvalue()
        options = known_options(cls, default) if "Unrecognized option" in text else []
        raise CliError(one_line(text, options=options)) from None


def one_line(text: str, *, options: Sequence[str] = ()) -> str:
    """tyro's error box -> its message, the expected form of the option, close matches of unknown options."""
    sections: list[list[str]] = [[]]
    for raw in text.splitlines():
        line = raw.strip().strip("│").strip()
        if _RULE.match(line):
            if sections[-1]:
                sections.append([])
            continue
        sections[-1].append(line)
    sections = [s for s in sections if s]
    if not sections:
        return "bad command-line arguments (see --help)."
    # A title line ("Value error", "Invalid choice") stands alone before the first rule.
    body = sections[1] if len(sections) > 1 and len(sections[0]) == 1 and len(sections[0][0].split()) <= 3 else sections[0]
    message = " ".join(body)
    for section in sections:
        if section[0].startswith("Argument helptext") and len(section) > 1:
            message += f" Expected: {section[1]}."
    unknown = re.search(r"Unrecognized options?: (.*)", message)
    if unknown:
        bad = [word.strip(",") for word in unknown.group(1).split() if word.startswith("-")]
        message = f"unknown option{'s' if len(bad) > 1 else ''} {', '.join(bad) or unknown.group(1)}"
        hints = []
        for option in bad:
            close = difflib.get_close_matches(option, options, n=2, cutoff=0.75)
            if close:
                hints.append(f"{option + ': ' if len(bad) > 1 else ''}did you mean {' or '.join(close)}?")
        message += "; " + (" ".join(hints) if hints else "see --help for the options.")
    return message.replace("  ", " ")


def known_options(cls: Any, default: Any = None) -> list[str]:
    """Every ``--option`` of a tyro parser, from its help text."""
    captured = io.StringIO()
    with contextlib.suppress(SystemExit), contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
        kwargs = {"default": default} if default is not None else {}
        tyro.cli(cls, args=["--help"], **kwargs)
    return sorted(set(re.findall(r"(--[a-z][a-z0-9\-]*)", captured.getvalue())))


def check_writable(folder: str | os.PathLike, what: str) -> None:
    """Raise ValueError (one line) unless ``folder`` exists as a writable folder or can be created.

    Nothing is left behind: the nearest existing folder is probed by creating
    and removing an empty folder in it, because ``os.access`` answers yes to
    root on a read-only filesystem and in /proc or /sys, where mkdir then fails.
    """
    existing = Path(folder)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{what}: {str(existing)!r} is a file, not a folder; give a folder you can write to.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{what}: {str(existing)!r} is not writable; give a folder you can write to.")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".write-probe-", dir=existing))
    except OSError as err:
        raise ValueError(f"{what}: cannot create a folder in {str(existing)!r} ({err.strerror}); give a folder you can write to.") from None


def print_or_quit(text: str) -> int:
    """Print ``text`` on stdout; 0, or 141 when the reader went away (``| head``), quietly.

    141 (128 + SIGPIPE) is the status a shell reports for a Unix tool cut off
    the same way (``seq 100000 | head -3`` under ``set -o pipefail``): the
    output was not all read. Python ignores SIGPIPE, so a closed pipe raises
    BrokenPipeError instead; stdout then points at devnull, or the flush at
    exit would raise it again (the recipe of Python's ``signal`` docs).
    """
    try:
        print(text, flush=True)
    except BrokenPipeError:
        return _quiet_broken_pipe()
    return 0


def _quiet_broken_pipe() -> int:
    """After a BrokenPipeError on stdout: point stdout at devnull (so the flush at exit is quiet); the status 141."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 128 + int(signal.SIGPIPE)
