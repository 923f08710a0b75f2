"""Process titles (``prefork master``, ``prefork worker 2 :8002``) when setproctitle is installed."""

from __future__ import annotations

from collections.abc import Callable

_setproctitle: Callable[[str], None] | None = None
try:
    import setproctitle
except ImportError:  # optional dependency: titles are a convenience
    pass
else:
    _setproctitle = setproctitle.setproctitle


def set_title(title: str) -> bool:
    """Set this process's title; return False when setproctitle is not installed."""
    if _setproctitle is None:
        return False
    _setproctitle(title)
    return True
