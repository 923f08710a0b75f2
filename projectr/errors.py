"""The two exceptions projectr raises: a bad definition, and a failed (rolled back) load."""

from __future__ import annotations

import traceback as _traceback
from types import TracebackType


class ProjectError(Exception):
    """A project definition is wrong: an unknown `needs` entry, a cycle, a bad name."""


class LoadError(ProjectError):
    """A transactional load failed; every module was restored to its state before the call.

    `file` is the file that failed, `line` the line (or None), `exception` the original
    exception and `traceback` its traceback object (`formatted_traceback` as text).
    """

    def __init__(
        self, file: str, exception: BaseException, traceback: TracebackType | None = None, line: int | None = None
    ) -> None:
        self.file = file
        self.exception = exception
        self.traceback = traceback if traceback is not None else exception.__traceback__
        self.line = line if line is not None else _failing_line(file, exception, self.traceback)
        where = f"{file}:{self.line}" if self.line is not None else file
        super().__init__(f"{where}: {type(exception).__name__}: {exception}")

    @property
    def original(self) -> BaseException:
        """The original exception (same as `exception`)."""
        return self.exception

    @property
    def path(self) -> str:
        """The failing file (same as `file`)."""
        return self.file

    @property
    def lineno(self) -> int | None:
        """The failing line (same as `line`)."""
        return self.line

    @property
    def formatted_traceback(self) -> str:
        """The original exception's traceback as text."""
        return "".join(_traceback.format_exception(type(self.exception), self.exception, self.traceback))


def _failing_line(file: str, exc: BaseException, tb: TracebackType | None) -> int | None:
    """Find the line of `file` where `exc` happened (innermost frame in that file)."""
    if isinstance(exc, SyntaxError) and exc.lineno is not None:
        return exc.lineno
    line = None
    for frame in _traceback.extract_tb(tb):
        if frame.filename == file:
            line = frame.lineno
    return line
