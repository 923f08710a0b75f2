"""What a failed reload says: file, line, error and the user's frames; the master's load alarm.

Used by the master and by the trial child; everything returned is JSON-serialisable, because the
trial child sends it to the master over a pipe.
"""

from __future__ import annotations

import contextlib
import importlib
import linecache
import os
import re
import signal
import traceback
from collections.abc import Iterable
from typing import Any

from projectr import LoadError, Project

_FRAME_LINE = re.compile(r'^\s*File "(?P<file>.+)", line (?P<line>\d+) in (?P<func>.*)$')
_TRACEBACK_FRAMES = 6  # frames of the failing code shown in the log block


def describe_load_error(exc: LoadError) -> dict[str, Any]:
    """The file, line, error text and short traceback of a failed load, as JSON-able values."""
    original = exc.exception
    return {
        "file": exc.file,
        "line": exc.line,
        "error": f"{type(original).__name__}: {original}",
        "traceback": short_traceback(original, exc.traceback),
    }


def describe_exception(exc: BaseException, project: Project | None = None) -> dict[str, Any]:
    """Like describe_load_error for an exception outside project.load() (e.g. resolving the app)."""
    frames = traceback.extract_tb(exc.__traceback__)
    sources = set(project.source_files) if project is not None else set()
    mine = [f for f in frames if f.filename in sources] or frames
    last = mine[-1] if mine else None
    return {
        "file": last.filename if last else None,
        "line": last.lineno if last else None,
        "error": f"{type(exc).__name__}: {exc}",
        "traceback": short_traceback(exc, exc.__traceback__),
    }


def _machinery_dirs() -> tuple[str, ...]:
    """Folders whose frames say nothing about the user's error: projectr's and prefork's own."""
    import prefork
    import projectr

    return tuple(os.path.dirname(os.path.abspath(m.__file__ or "")) + os.sep for m in (projectr, prefork, importlib))


def short_traceback(exc: BaseException, tb: Any) -> str:
    """The last few frames and the error line, without the import machinery's frames."""
    machinery = _machinery_dirs()
    frames = [
        f
        for f in traceback.extract_tb(tb)
        if not f.filename.startswith("<frozen ") and not f.filename.startswith(machinery)
    ]
    lines = [
        f'  File "{f.filename}", line {f.lineno}, in {f.name}\n' + (f"    {f.line}\n" if f.line else "")
        for f in frames[-_TRACEBACK_FRAMES:]
    ]
    if isinstance(exc, SyntaxError):
        lines += traceback.format_exception_only(type(exc), exc)
    return "".join(lines).rstrip()


def parse_stack_dump(text: str, sources: Iterable[str]) -> tuple[str | None, int | None]:
    """From a faulthandler dump, the innermost frame in a project file (else the innermost)."""
    frames = [(m["file"], int(m["line"])) for m in map(_FRAME_LINE.match, text.splitlines()) if m]
    wanted = set(sources)
    for file, line in frames:  # faulthandler lists the most recent call first
        if file in wanted:
            return file, line
    return frames[0] if frames else (None, None)


def user_frames_of_dump(dump: str) -> str:
    """The frames of a faulthandler dump above the import machinery, formatted like a traceback."""
    machinery = _machinery_dirs()
    frames = []
    for match in map(_FRAME_LINE.match, dump.splitlines()):  # most recent call first
        if match is None:
            continue
        file = match["file"]
        if file.startswith(machinery) or file.startswith("<frozen "):
            break  # below here: projectr's loader and the master that called it
        frames.append((file, int(match["line"]), match["func"]))
    lines = []
    for file, line, func in reversed(frames[:_TRACEBACK_FRAMES]):
        linecache.checkcache(file)  # the file may have changed since it was last read
        source = linecache.getline(file, line).strip()
        lines.append(f'  File "{file}", line {line}, in {func}' + (f"\n    {source}" if source else ""))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# the master's own guard against a load that hangs


class ReloadTimeout(BaseException):
    """Raised by SIGALRM in the master when its own load runs past ``reload_timeout``.

    A BaseException, like KeyboardInterrupt, so that module code catching Exception does not
    swallow it; projectr's loader restores sys.modules and lets it through.
    """


@contextlib.contextmanager
def alarm(seconds: float) -> Any:
    """Raise ReloadTimeout in the block if it runs longer than ``seconds`` (master, main thread).

    A pure-Python loop is interrupted between bytecodes; a blocking call is interrupted by EINTR.
    Code stuck in C without returning to the interpreter is not: the trial child is the full cure.
    """

    def ring(signum: int, frame: Any) -> None:
        raise ReloadTimeout(f"the import did not finish within {seconds:g} s and was interrupted")

    previous = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def describe_timeout(exc: ReloadTimeout, project: Project) -> dict[str, Any]:
    """Where an interrupted load was: the innermost frame in a project file (master)."""
    report = describe_exception(exc, project)
    report["error"] = f"hung: {exc}"
    return report
