"""Undo a failed load exactly: sys.modules and package attributes as before, for the project's modules.

What a load changes, and how each change is put back:

- the batch's modules are detached (out of sys.modules, off their parent packages): the old module
  objects and the old attribute values go back;
- modules imported for the first time during the load: the import system sets each one as an
  attribute of its parent package (overwriting whatever had that name); the project's among them
  (anything under its top-level packages, Scope.is_project) are removed again with that attribute
  restored, while third-party modules are kept (numpy refuses to be imported twice in a process).

The rollback is shielded from asynchronous exceptions (a SIGALRM handler raising ReloadTimeout, a
KeyboardInterrupt): signals are blocked while it runs, and it is idempotent and re-run until it
completes if a handler raises anyway; what interrupted or was deferred is raised once everything
is back.
"""

from __future__ import annotations

import logging
import signal
import sys
import types
from typing import Any

from .runtime import Scope

log = logging.getLogger("projectr.load")

_MISSING = object()
_ATTEMPTS = 10  # beyond a few, a failure is deterministic (a package whose __setattr__ raises), not a signal


class Transaction:
    """What one load changed in sys.modules and in packages' attributes, to put back on failure."""

    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        self.saved: dict[str, Any] = dict(sys.modules)
        self.detached: list[tuple[Any, str, object]] = []  # (package, name, old value) of batch modules
        self.first: list[tuple[str, Any, str, object]] = []  # (module, package, name, old value)
        self._drop: frozenset[str] | None = None

    def detach(self, module: str) -> None:
        """Take a batch module out of sys.modules and off its parent, logging first (so an interruption
        between the two steps still has everything it needs to put back)."""
        parent = self._parent(module)
        if parent is not None:
            child = module.rpartition(".")[2]
            self.detached.append((parent, child, vars(parent).get(child, _MISSING)))
            vars(parent).pop(child, None)
        sys.modules.pop(module, None)

    def first_import(self, module: str) -> None:
        """Called before the import system looks for `module` (not in sys.modules): log the parent
        attribute that a successful import will overwrite."""
        parent = self._parent(module)
        if parent is not None:
            child = module.rpartition(".")[2]
            self.first.append((module, parent, child, vars(parent).get(child, _MISSING)))

    def rollback(self) -> None:
        """Restore everything; re-run until complete if interrupted, then raise what interrupted it."""
        mask = _SignalMask()
        interruption: BaseException | None = None
        for _ in range(_ATTEMPTS):
            try:
                mask.block()
                self._plan()
                self._apply()
                break
            except BaseException as exc:  # noqa: BLE001 - an async exception must not cut the rollback short
                interruption = interruption or exc
                log.debug("rollback interrupted (%s: %s); resuming it", type(exc).__name__, exc)
        else:
            log.error("rollback could not complete after %d attempts", _ATTEMPTS)
        mask.restore()  # signals that arrived meanwhile are delivered now: their handlers may raise
        if interruption is not None:
            raise interruption

    def _plan(self) -> None:
        """Decide once (an interrupted _apply must resume with the same list) which new modules go."""
        if self._drop is None:
            self._drop = frozenset(
                name for name in list(sys.modules) if name not in self.saved and self.scope.is_project(name)
            )

    def _apply(self) -> None:
        """Idempotent: can be re-run from the start after an interruption anywhere in it."""
        modules = sys.modules
        assert self._drop is not None
        for name in self._drop:
            modules.pop(name, None)
        for name, module in self.saved.items():
            if modules.get(name) is not module:
                modules[name] = module
        for module_name, parent, child, old in reversed(self.first):
            if module_name in self._drop:
                _set(parent, child, old)
        for parent, child, old in reversed(self.detached):
            _set(parent, child, old)

    @staticmethod
    def _parent(module: str) -> Any:
        parent_name = module.rpartition(".")[0]
        parent = sys.modules.get(parent_name) if parent_name else None
        return parent if isinstance(parent, types.ModuleType) else None


def _set(obj: Any, attr: str, value: object) -> None:
    """Put an attribute back (or remove it if it did not exist), bypassing a custom __setattr__."""
    namespace = vars(obj)
    if value is _MISSING:
        namespace.pop(attr, None)
    else:
        namespace[attr] = value


class _SignalMask:
    """Blocks every signal for this thread while the rollback runs; restore() puts the mask back, and the
    kernel then delivers what arrived (its Python handler runs right after: a deferred ReloadTimeout).

    A signal the kernel hands to another thread, or one already pending before block(), can still
    run its handler in the rollback: the retry loop covers those.
    """

    def __init__(self) -> None:
        self.old: set[int | signal.Signals] | None = None
        self.available = hasattr(signal, "pthread_sigmask")

    def block(self) -> None:
        """Block all signals (re-callable: the first call remembers the mask to put back)."""
        if not self.available:
            return
        if self.old is None:
            self.old = signal.pthread_sigmask(signal.SIG_BLOCK, [])  # a query: nothing changes yet
        signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())

    def restore(self) -> None:
        """Put back the mask from before block()."""
        if self.old is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, self.old)
