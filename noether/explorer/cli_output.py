"""Output of the command line, shared by every command module: exit codes, problem lines on stderr, escaping of
names, atomic writes and progress messages.

Exit codes: 0 ok, 1 invalid input or refused, 2 usage error. Problems go to stderr as ``FILE: where: message hint``.
"""

import contextlib
import os
import sys
import tempfile
import unicodedata
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from noether.explorer.problems import Problem

PROG = "noether-explorer"
EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2
MAX_PROBLEMS_SHOWN = 100
"""Problems printed per file; a file of thousands of broken items is summarised after this many."""

Progress = Callable[[str], None]


def _print_problems(label: str, problems: Sequence["Problem"]) -> None:
    label = _printable(label)
    for problem in problems[:MAX_PROBLEMS_SHOWN]:
        prefix = f"{label}: warning: " if problem.severity == "warning" else f"{label}: "
        _err(prefix + _printable(str(problem)))
    if len(problems) > MAX_PROBLEMS_SHOWN:
        _err(f"{label}: ... and {len(problems) - MAX_PROBLEMS_SHOWN} more problems not shown.")


def _printable(text: str) -> str:
    """Escape control, format and separator characters so that a name cannot rewrite the terminal or split lines."""
    return "".join(
        f"\\u{ord(char):04x}" if unicodedata.category(char) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp") else char
        for char in text
    )


def _emit(text: str, out: str | None) -> int:
    if out is None:
        _write_stdout(text)
        return EXIT_OK
    try:
        _write_atomically(Path(out), text)
    except OSError as exc:
        _err(f"{_printable(out)}: cannot write ({exc.strerror or exc}). Check the folder exists and is writable.")
        return EXIT_INVALID
    return EXIT_OK


def _write_atomically(path: Path, content: str | bytes) -> None:
    """Write via a temporary file in the same folder, so that a failed write never leaves half a file."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(content.encode("utf-8") if isinstance(content, str) else content)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _write_stdout(text: str) -> None:
    """Exports are UTF-8 whatever the terminal's encoding, so that piping them to a file keeps them exact."""
    stream = sys.stdout
    encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "").replace("_", "")
    buffer = getattr(stream, "buffer", None)
    if encoding != "utf8" and buffer is not None:
        stream.flush()
        buffer.write(text.encode("utf-8"))
        buffer.flush()
    else:
        stream.write(text)
        stream.flush()


def _make_streams_safe() -> None:
    # A name the terminal's encoding cannot show is escaped rather than crashing the command.
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            with contextlib.suppress(ValueError, OSError):
                reconfigure(errors="backslashreplace")


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def _progress(quiet: bool) -> Progress:
    def report(message: str) -> None:
        if not quiet:
            _err(f"{PROG}: {message}")

    return report


def _out(line: str) -> None:
    print(line, file=sys.stdout, flush=True)


def _err(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
