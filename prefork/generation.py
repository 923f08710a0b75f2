"""A generation: the process that holds one version of the project's code and forks its workers.

Everything here runs in a generation process, created by a double fork (see :mod:`prefork.forks`)
either from the base (a *fresh* generation: it imports the project from scratch, correct by
construction) or from the current generation (a *partial* generation: it re-executes only the
modules a change affects, and reports whether that was provably the same as a fresh import).
Once it has resolved the app it reports ``ready`` to the master and then serves fork requests:
each worker is double-forked from here, so it starts from exactly this generation's state.
"""

from __future__ import annotations

import builtins
import contextlib
import faulthandler
import gc
import importlib
import operator
import os
import signal
import socket
import sys
import time
import traceback
import types
import warnings
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, NoReturn

from prefork import forks, modules, stdio
from prefork.apps import resolve_app
from prefork.asgi import require_runtime
from prefork.discover import is_project_file
from prefork.proctitle import set_title
from projectr.runtime import Observed


@dataclass
class Recorder:
    """What the generation's import did: project modules' import edges and files it opened."""

    root: str
    edges: dict[str, set[str]] = field(default_factory=dict)  # imported module -> its importers
    opened: set[str] = field(default_factory=set)
    written: set[str] = field(default_factory=set)
    active: bool = False
    after_import: Callable[[], None] | None = None  # called after each import statement or import_module
    _project: dict[str, bool] = field(default_factory=dict)  # module name -> is a project module

    def audit(self, event: str, args: tuple[Any, ...]) -> None:
        """sys.addaudithook callback: remember non-Python files under the root that get opened.

        Files opened for writing are the app's own output (a log, a cache): their changes are not
        edits to reload for, or the app would reload itself in a loop.
        """
        if not self.active or event != "open":
            return
        path, mode, flags = args
        if isinstance(path, str) and not path.endswith((".py", ".pyc")):
            path = os.path.abspath(path)
            if path.startswith(self.root + os.sep):
                writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                    isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR)
                )
                (self.written if writing else self.opened).add(path)

    @contextlib.contextmanager
    def recording(self) -> Iterator[None]:
        """Record imports and opened files while the block runs (import statements and import_module)."""
        from importlib import _bootstrap

        real_import, real_gcd = builtins.__import__, _bootstrap._gcd_import  # type: ignore[attr-defined]
        builtins.__import__ = self._wrap_import(real_import)
        _bootstrap._gcd_import = self._wrap_gcd(real_gcd)  # type: ignore[attr-defined]  # import_module
        self.active = True
        try:
            yield
        finally:
            self.active = False
            builtins.__import__ = real_import
            _bootstrap._gcd_import = real_gcd  # type: ignore[attr-defined]

    def _wrap_import(self, real: Callable[..., Any]) -> Callable[..., Any]:
        def recording_import(
            name: str, globals: Any = None, locals: Any = None, fromlist: Any = (), level: int = 0
        ) -> Any:
            module = real(name, globals, locals, fromlist, level)
            if self.after_import is not None:
                self.after_import()
            if globals:
                package = globals.get("__package__")
                try:
                    target = importlib.util.resolve_name("." * level + name, package) if level else name
                except (ImportError, ValueError):
                    return module
                # `import a.b` binds `a` in the importer: it holds the parents too. `from a import b`
                # and relative imports bind only what they name.
                self._record(globals.get("__name__"), target, fromlist, parents=not fromlist and not level)
            return module

        return recording_import

    def _wrap_gcd(self, real: Callable[..., Any]) -> Callable[..., Any]:
        def recording_gcd(name: str, package: Any = None, level: int = 0) -> Any:
            module = real(name, package, level)
            if self.after_import is not None:
                self.after_import()
            self._record(_calling_module(), module.__name__, ())
            return module

        return recording_gcd

    def _record(self, importer: Any, target: str, fromlist: Any, parents: bool = False) -> None:
        """``importer`` imported ``target`` (its parents too if ``parents``; the submodules in ``fromlist``)."""
        if not isinstance(importer, str):
            return
        parts = target.split(".")
        names = [".".join(parts[:i]) for i in range(1, len(parts) + 1)] if parents else [target]
        names += [f"{target}.{item}" for item in (fromlist or ()) if isinstance(item, str)]
        for imported in names:
            if imported != importer and self._is_project(imported):
                self.edges.setdefault(imported, set()).add(importer)

    def _is_project(self, name: str) -> bool:
        known = self._project.get(name)
        if known is None:
            module = sys.modules.get(name)
            if module is None:
                return False  # not imported (yet): asked again next time
            known = self._project[name] = modules.is_project_module(module, self.root)
        return known


_LEARN_BATCH = 0.01  # seconds: generation 0 sends the modules it learned at most this often


@dataclass
class Learner:
    """Generation 0's running report of the third-party modules its import loads (generation 0).

    The master hands each batch to the base, which imports them on another core while generation 0
    goes on: when generation 0 is ready, the base is (nearly) warm, and the first save is a fresh
    generation from it rather than a checked partial reload of generation 0's cold copy (which
    would compete with the base's preload for the CPU). The ``ready`` report still lists every
    module; the master sends the base what these batches did not.
    """

    channel: socket.socket
    root: str
    seen: set[str]
    known: int = 0  # len(sys.modules) when last looked
    pending: list[str] = field(default_factory=list)
    sent_at: float = 0.0

    def after_import(self) -> None:
        """Recorder hook: note the modules this import added; send a batch when one is due."""
        if len(sys.modules) == self.known:
            return
        names = list(sys.modules)
        self.known = len(names)
        for name in names:
            if name not in self.seen:
                self.seen.add(name)
                if not modules.is_project_module(sys.modules[name], self.root):
                    self.pending.append(name)
        now = time.perf_counter()
        if self.pending and now - self.sent_at >= _LEARN_BATCH:
            batch, self.pending, self.sent_at = self.pending, [], now
            try:
                forks.send(self.channel, {"event": "learned", "modules": batch})
            except OSError:  # the master is gone: the import goes on, the report will fail
                self.pending = batch


def _calling_module() -> str | None:
    """The module whose code called importlib.import_module (skipping the import machinery)."""
    frame: types.FrameType | None = sys._getframe(2)
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if name in (__name__, "projectr.loader"):
            return None  # the reload itself imports its modules: nobody's dependency
        if not (name.startswith("importlib") or name == "projectr.runtime"):
            return str(name)
        frame = frame.f_back
    return None


@dataclass
class GenerationState:
    """This generation's app, and what the master needs to know to plan the next reload."""

    app: Any
    recorder: Recorder
    import_ms: float
    # where sys.modules ended before the fresh import began: every project module comes after it
    import_mark: modules.Mark | None = None
    # ... and when its checkpoint was forked (None: none was)
    setup_modules: modules.Mark | None = None


def run_generation(
    server: Any, channel: socket.socket, dump_fd: int, request: dict[str, Any], state: GenerationState | None
) -> NoReturn:
    """Become generation ``request["number"]``: load the code, report, serve fork requests; never returns.

    ``state`` is None for a fresh generation (forked from the base), else the parent
    generation's state (a partial generation, forked from it) or the checkpoint's (a generation
    resumed from a checkpoint: ``request["resume"]``).
    """
    code = 0
    try:
        _isolate(server, dump_fd, request)
        forks.send(channel, {"event": "started", "pid": os.getpid()})
        set_title(f"prefork generation {request['number']}")  # after: a titled one's pid is sent
        if request.get("probe"):
            _probe(channel, request)
            state = None  # a probe serves nothing
        elif state is None:
            state = _import_fresh(server, channel, dump_fd, request)
        elif request.get("resume"):
            state = _resume(server, channel, request, state)
        else:
            state = _apply_partial(server, channel, request, state)
        if state is not None:
            _serve(server, channel, dump_fd, state)
    except BaseException:  # noqa: BLE001 - the master learns of it by EOF; the log says why
        import logging

        logging.getLogger("prefork").exception("generation %s failed", request.get("number"))
        code = 1
    finally:
        stdio.flush_all()
        os._exit(code)


def _report(channel: socket.socket, request: dict[str, Any], message: dict[str, Any]) -> None:
    """Send this generation's verdict, once adopted by the master (exit if the master is gone)."""
    if not forks.adopted(request["master_pid"]):
        os._exit(0)
    forks.send(channel, message)


def _isolate(server: Any, dump_fd: int, request: dict[str, Any]) -> None:
    """Signals, parent-death signal, stdio and the stack-dump pipe of a new generation."""
    faulthandler.unregister(signal.SIGUSR1)  # a partial generation inherits its parent's registration
    forks.ignore_terminal_signals()
    stdio.redirect_stdio(server._output_fd)
    # SIGUSR1 from the master (a reload that ran past reload_timeout) dumps every thread's stack.
    faulthandler.register(signal.SIGUSR1, file=dump_fd, all_threads=True, chain=False)


def _import_fresh(server: Any, channel: socket.socket, dump_fd: int, request: dict[str, Any]) -> GenerationState | None:
    """Import the project from scratch and resolve the app; report ready (with what was learned) or
    failed. Asked for a checkpoint (``request["checkpoint"]``): leave one and serve nothing."""
    root = request["root"]
    if root not in sys.path:
        sys.path.insert(0, root)
    importlib.invalidate_caches()  # the base listed folders before files were added or removed
    recorder = Recorder(root)
    sys.addaudithook(recorder.audit)
    # What the master and the base loaded is shared by every process: keep the collector off it.
    # The project's own objects stay collectable, which is what lets a partial reload prove that
    # the old code became garbage (a collection then costs what the project allocated, not more).
    gc.freeze()
    mark = modules.mark()
    if request.get("learn") and request.get("stream"):
        recorder.after_import = Learner(channel, root, set(sys.modules), mark[0]).after_import
    started = time.perf_counter()
    try:
        with recorder.recording():
            app = resolve_app(request["app"])
    except BaseException as exc:  # noqa: BLE001 - any failure is reported, the master keeps serving
        _report_failure(channel, exc, request)
        return None
    state = GenerationState(app, recorder, 0.0, import_mark=mark)
    if request.get("checkpoint"):
        _leave_checkpoint(server, channel, dump_fd, request, state, started)
        return None
    return _finish_fresh(server, channel, request, state, started, mark)


def _finish_fresh(
    server: Any,
    channel: socket.socket,
    request: dict[str, Any],
    state: GenerationState,
    started: float,
    since: modules.Mark,
) -> GenerationState | None:
    """Warm the app up and report ready, or failed: the end of a fresh generation's import, and all
    of a generation resumed from a checkpoint. ``since``: where sys.modules ended when this
    process's own imports began (the third-party modules it loaded after it are learned)."""
    root = request["root"]
    try:
        with state.recorder.recording():
            _warm_up(request)
        require_runtime(
            state.app, getattr(server, "interface", "auto")
        )  # ASGI: uvicorn imported once, learned by the base
        state.recorder.after_import = None
    except BaseException as exc:  # noqa: BLE001 - any failure is reported, the master keeps serving
        _report_failure(channel, exc, request)
        return None
    state.import_ms = (time.perf_counter() - started) * 1000.0
    loaded, setup = _loaded_project_files(root, state.import_mark, state.setup_modules)
    preload = []
    if request.get("learn"):
        imported = modules.since(since)
        pairs = imported if imported is not None else list(sys.modules.items())  # generation 0: no base below it
        preload = [name for name, module in pairs if not modules.is_project_module(module, root)]
    _report(
        channel,
        request,
        {
            "event": "ready",
            "ms": state.import_ms,
            "loaded": loaded,
            "setup": setup,  # of those, the ones its checkpoint holds (loaded before the warm-up)
            "opened": sorted(state.recorder.opened),
            "written": sorted(state.recorder.written),
            "foreign": _foreign_importers(state.recorder),
            "preload": preload,
            "checkpointable": _warm_up_needed(),  # the master asks for a checkpoint when idle
        },
    )
    return state


# ---------------------------------------------------------------------------------------------
# checkpoints: a Django app as set up, before the warm-up


def _warm_up_needed() -> bool:
    """True when the app is a Django project that ``_warm_up`` has work for (its apps are ready)."""
    apps = sys.modules.get("django.apps")
    return apps is not None and bool(getattr(apps.apps, "ready", False))


def _leave_checkpoint(
    server: Any,
    channel: socket.socket,
    dump_fd: int,
    request: dict[str, Any],
    state: GenerationState,
    started: float,
) -> None:
    """Leave a checkpoint of the app as imported and set up, report what it holds, serve nothing
    (a generation the master asked for a checkpoint only, while the server was idle).

    A checkpoint is made apart from the generation that serves, not by it before its warm-up: the
    fork, and the copy-on-write faults of the warm-up that follows it, would be paid on the save's
    path (about 14 ms of a Django model save).
    """
    if not _warm_up_needed():
        _report(channel, request, {"event": "refused", "reason": "the app has no set-up state to keep"})
        return
    state.setup_modules = modules.mark()
    _offer_checkpoint(server, channel, dump_fd, request, state)
    _loaded, setup = _loaded_project_files(request["root"], state.import_mark, state.setup_modules)
    ms = (time.perf_counter() - started) * 1000.0
    _report(channel, request, {"event": "ready", "ms": ms, "setup": setup})


def _offer_checkpoint(
    server: Any, channel: socket.socket, dump_fd: int, request: dict[str, Any], state: GenerationState
) -> None:
    """Leave a copy of this generation as it is now, the app set up and not yet warmed up (a
    generation asked for a checkpoint).

    The copy (a *checkpoint*, forked as a sibling and adopted by the master like every generation) gets
    a channel of its own, which goes to the master with a ``checkpoint`` message. A generation
    forked from it later and warmed up there is what a fresh import would give, as long as none
    of the files the checkpoint loaded or read changed (the master checks): Django's view and
    URLconf edits skip ``django.setup()`` and the models' import.
    """
    mine, theirs = forks.channel_pair()
    try:
        child = forks.spawn_adopted(request["master_pid"])
    except OSError:
        mine.close()
        theirs.close()
        return  # no checkpoint: every reload imports the project from the base
    if child:
        mine.close()
        forks.close_fds([channel.fileno(), dump_fd])
        _serve_checkpoint(server, theirs, request, state)
    theirs.close()
    try:  # what it loaded comes with this generation's report ("setup"): the checkpoint does no work
        forks.send(channel, {"event": "checkpoint", "opened": sorted(state.recorder.opened)}, [mine.fileno()])
    finally:
        mine.close()


def _serve_checkpoint(server: Any, channel: socket.socket, request: dict[str, Any], state: GenerationState) -> NoReturn:
    """Report what the checkpoint holds, then fork a resumed generation per request; never returns (checkpoint)."""
    code = 0
    try:
        faulthandler.unregister(signal.SIGUSR1)  # the generation's dump pipe is not ours
        set_title(f"prefork checkpoint {request['number']}")
        if not forks.adopted(request["master_pid"]):
            os._exit(0)
        forks.send(channel, {"event": "ready", "pid": os.getpid()})
        forks.serve_requests(
            channel,
            {"fork_generation": lambda args, fds: _fork_generation(server, channel, -1, state, args, fds)},
        )
    except BaseException:  # noqa: BLE001 - the master sees EOF and imports afresh from the base
        import logging

        logging.getLogger("prefork").exception("checkpoint %s failed", request.get("number"))
        code = 1
    finally:
        stdio.flush_all()
        os._exit(code)


def _resume(
    server: Any, channel: socket.socket, request: dict[str, Any], state: GenerationState
) -> GenerationState | None:
    """Finish a fresh import from a checkpoint's state: the warm-up imports the files that changed (generation)."""
    importlib.invalidate_caches()  # files may have been added since the checkpoint listed its folders
    return _finish_fresh(server, channel, request, state, time.perf_counter(), modules.mark())


def _warm_up(request: dict[str, Any]) -> None:
    """Build here what the framework builds lazily on a worker's first request, once for all workers.

    Django imports the URLconfs (and with them the views), builds its URL resolver and its
    template engines (importing every app's tag libraries) on the first request: 40-100 ms that
    every new worker would pay, and modules a worker would read from disk at some later moment
    rather than at this generation's. Nothing is served or written, and no template is read
    (a template edit still only respawns workers): these are Django's own cached objects,
    exactly what the first request builds.
    Generation 0 keeps the old behaviour on an error (a fresh start serves the error pages);
    any other generation fails like an import error would, and the old workers serve on.
    """
    if not _warm_up_needed():
        return
    try:
        from django.template import engines
        from django.urls import get_resolver

        get_resolver()._populate()  # imports ROOT_URLCONF and every include()d URLconf
        for backend in engines.all():  # the template engines and their tag libraries
            engine = getattr(backend, "engine", None)
            if engine is not None:  # Django's own: its loaders and context processors (no template read)
                engine.template_loaders, engine.template_context_processors  # noqa: B018
    except Exception:
        if request.get("learn"):
            return  # the workers meet the error on their first request, as on a plain start
        raise


def _report_failure(channel: socket.socket, exc: BaseException, request: dict[str, Any]) -> None:
    """Tell the master why this generation cannot serve (file, line, traceback)."""
    from prefork.server.failures import describe_exception

    report = describe_exception(exc)
    mine = [
        frame
        for frame in traceback.extract_tb(exc.__traceback__)
        if is_project_file(os.path.abspath(frame.filename), request["root"])
    ]
    if mine:
        report.update(file=mine[-1].filename, line=mine[-1].lineno)
    if isinstance(exc, SyntaxError) and exc.filename:
        report.update(file=exc.filename, line=exc.lineno)
    _report(channel, request, {"event": "failed", **report})


def _foreign_importers(recorder: Recorder) -> dict[str, list[str]]:
    """``{path: [module, importer]}`` for project modules that code outside the project imported.

    The master plans no partial reload of those (it would be refused here): a fresh one at once.
    """
    found = {}
    for name, importers in recorder.edges.items():
        foreign = sorted(i for i in importers if i != "prefork.apps" and not recorder._is_project(i))
        path = getattr(sys.modules.get(name), "__file__", None)
        if foreign and isinstance(path, str):
            found[os.path.abspath(path)] = [name, foreign[0]]
    return found


def _loaded_project_files(
    root: str, since: modules.Mark | None = None, setup: modules.Mark | None = None
) -> tuple[list[str], list[str]]:
    """The project's source files this process has imported (their modules are in sys.modules),
    and those among the modules imported before ``setup`` was marked (none if None; all of them if
    a module imported before was removed since: the mark no longer says).

    ``since``: a mark taken before any project module was imported (a fresh generation's: the
    base holds none); only the modules after it are read then (see :mod:`prefork.modules`).
    """
    items = modules.since(since) if since is not None else None
    first = since[0] if since is not None and items is not None else 0
    if items is None:
        items = list(sys.modules.items())
    count = setup[0] if setup is not None else 0
    if setup is not None and not (first < count <= first + len(items) and items[count - 1 - first][0] == setup[1]):
        count = first + len(items)
    files, early = [], []
    for index, (_name, module) in enumerate(items, start=first):
        path = getattr(module, "__file__", None)
        if path and path.endswith(".py") and is_project_file(os.path.abspath(path), root):
            files.append(os.path.abspath(path))
            if index < count:
                early.append(files[-1])
    return files, early


def _probe(channel: socket.socket, request: dict[str, Any]) -> None:
    """Import what the workers would import on their first request; report, then exit.

    Runs in a throwaway copy of the serving generation, so that a bad save in a module the
    framework imports lazily (Django's views and URLconfs) fails here, not in every new worker.
    """
    started = time.perf_counter()
    try:
        for name in request["probe"]:
            importlib.import_module(name)
    except BaseException as exc:  # noqa: BLE001 - reported to the master; the old workers serve on
        _report_failure(channel, exc, request)
        return
    _report(channel, request, {"event": "ready", "ms": (time.perf_counter() - started) * 1000.0})


# ---------------------------------------------------------------------------------------------
# partial reloads


# Modules whose containers change with any import (not registries a module could fill twice).
_BOOKKEEPING = frozenset(
    {
        "sys",
        "gc",
        "linecache",
        "warnings",
        "typing",
        "abc",
        "_abc",
        "encodings",
        "codecs",
        "re",
        "sre_compile",
        "functools",
        "zipimport",
        "inspect",
        "dis",
        "tokenize",
    }
)


class Refused(Exception):
    """A partial reload ran, but cannot be shown to equal a fresh import; the reason says why."""


def _apply_partial(
    server: Any, channel: socket.socket, request: dict[str, Any], state: GenerationState
) -> GenerationState | None:
    """Re-execute the affected loaded modules; report ready, refused or failed."""
    from projectr.loader import Unit, execute

    started = time.perf_counter()
    names = _reload_set(request["units"], state.recorder)
    units = [Unit(path, name, is_pkg, _read(path)) for name, path, is_pkg in names]
    state.app = None  # the parent's app object would keep the old code alive and fail the check
    try:
        app = _checked_reload(units, request["app"], state.recorder, execute)
    except Refused as exc:
        _report(channel, request, {"event": "refused", "reason": str(exc)})
        return None
    except BaseException as exc:  # noqa: BLE001 - a fresh generation will say it properly
        _report(channel, request, {"event": "refused", "reason": f"{type(exc).__name__}: {exc}", "error": True})
        return None
    elapsed = (time.perf_counter() - started) * 1000.0
    _report(
        channel,
        request,
        {
            "event": "ready",
            "ms": elapsed,
            "modules": [n for n, _, _ in names],
            "loaded": _loaded_project_files(request["root"])[0],
            "opened": sorted(state.recorder.opened),
            "written": sorted(state.recorder.written),
            "foreign": _foreign_importers(state.recorder),
            "preload": [],
        },
    )
    return GenerationState(app, state.recorder, elapsed)


def _reload_set(units: list[list[Any]], recorder: Recorder) -> list[tuple[str, str, bool]]:
    """The master's affected modules plus their run-time importers, limited to what is imported here."""
    wanted = {name: (path, is_pkg) for name, path, is_pkg in units if name in sys.modules}
    given = list(wanted)  # the master's load order; importers found at run time follow
    todo = list(wanted)
    while todo:
        name = todo.pop()
        for importer in recorder.edges.get(name, ()):
            module = sys.modules.get(importer)
            path = getattr(module, "__file__", None)
            if importer not in wanted and path and path.endswith(".py") and recorder._is_project(importer):
                wanted[importer] = (os.path.abspath(path), os.path.basename(path) == "__init__.py")
                todo.append(importer)
    extra = [name for name in sys.modules if name in wanted and name not in given]
    return [(name, *wanted[name]) for name in given + extra]


def _read(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def _checked_reload(units: list[Any], app_spec: str, recorder: Recorder, execute: Callable[..., None]) -> Any:
    """Run the reload and verify it is what a fresh import would give; raise Refused if not.

    Verified: no module outside the set imported one in it; no warning while the modules ran;
    every old function, class and module object became garbage (nothing outside the reload set
    still refers to the old code); no module outside the set had a global set, rebound or deleted,
    and none of their module-level lists, dicts or sets changed size (nothing registered itself
    twice, no setting left behind by a line the edit removed).
    """
    names = {unit.module for unit in units}
    old = _weak_old_objects(names)
    outside = OutsideState.take(names)
    _check_importers(names, recorder)
    observed = Observed()  # projectr's loader collects the warnings the modules raise
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with recorder.recording():
            execute(units, observed=observed)
            app = resolve_app(app_spec)
    if observed.warnings:
        raise Refused(observed.warnings[0][1].replace(os.path.dirname(units[0].path) + os.sep, ""))
    if caught:
        first = caught[0]
        raise Refused(f"{os.path.basename(first.filename)}:{first.lineno}: {first.category.__name__}: {first.message}")
    change = outside.changed()  # before the collection: the copies keep the old values (and ids) alive
    if change:
        raise Refused(f"{change} while the reloaded modules ran")
    del outside
    gc.collect()
    for name, ref in old:
        obj = ref()
        if obj is not None:
            raise Refused(f"{name} is still referenced by {_holder(obj)}")
    return app


def _check_importers(names: set[str], recorder: Recorder) -> None:
    """Refuse when a module outside the set imported one in it: it may keep what it read.

    (Django's settings object copies the settings module's values; its app registry holds the
    models.) The app's own module is imported by prefork, which resolves the app again.
    """
    allowed = names | {"prefork.apps"}
    for name in sorted(names):
        outside = sorted(recorder.edges.get(name, set()) - allowed)
        if outside:
            raise Refused(f"{name} is imported by {outside[0]}")


def _holder(obj: Any) -> str:
    """Name what keeps an old object alive (only on a refusal: get_referrers scans the heap)."""
    namespaces = {id(vars(m)): name for name, m in list(sys.modules.items()) if m is not None}
    for referrer in gc.get_referrers(obj):
        if isinstance(referrer, dict) and id(referrer) in namespaces:
            return f"module {namespaces[id(referrer)]}"
    kinds = sorted({type(r).__name__ for r in gc.get_referrers(obj) if not isinstance(r, types.FrameType)})
    return "objects outside the reloaded modules (" + ", ".join(kinds[:4]) + ")"


def _weak_old_objects(names: set[str]) -> list[tuple[str, weakref.ref[Any]]]:
    """Weak references to the modules about to be replaced and the functions and classes they define."""
    refs: list[tuple[str, weakref.ref[Any]]] = []
    for name in names:
        module = sys.modules.get(name)
        if module is None:
            continue
        refs.append((name, weakref.ref(module)))
        for attr, value in list(vars(module).items()):
            if isinstance(value, (types.FunctionType, type)) and getattr(value, "__module__", None) == name:
                refs.append((f"{name}.{attr}", weakref.ref(value)))
    return refs


@dataclass
class OutsideState:
    """The namespaces of the modules outside a reload set, and the size of their containers.

    Taken and compared at C speed (shallow copies, ``map``): it runs on every partial reload, over
    every module of the process. Only a difference found is looked at attribute by attribute.
    """

    namespaces: list[tuple[str, dict[str, Any], dict[str, Any]]]  # name, the namespace, a copy of it
    containers: list[Any]  # module-level lists, dicts, sets
    sizes: list[int]  # their sizes when taken
    reloaded: set[str]  # the reload set

    @classmethod
    def take(cls, excluded: set[str]) -> OutsideState:
        """Copy what a reload of ``excluded`` must leave alone."""
        namespaces = [
            (name, namespace, namespace.copy())
            for name, module in list(sys.modules.items())
            if (namespace := getattr(module, "__dict__", None)) is not None
            and name not in excluded
            and name not in _BOOKKEEPING
            and not name.startswith("importlib")
        ]
        found = {
            id(value): value
            for _, namespace, _ in namespaces
            for attr, value in namespace.items()
            if type(value) in _CONTAINERS and _watched(attr)
        }
        found.pop(id(vars(builtins)), None)
        containers = list(found.values())
        return cls(namespaces, containers, list(map(len, containers)), set(excluded))

    def changed(self) -> str | None:
        """``module.attr`` and how it changed since ``take()``, or None."""
        for name, namespace, before in self.namespaces:
            if namespace.keys() == before.keys() and not any(map(operator.is_not, namespace.values(), before.values())):
                continue
            change = self._explain(name, namespace, before)
            if change:
                return change
        if list(map(len, self.containers)) != self.sizes:
            for container, size in zip(self.containers, self.sizes, strict=True):
                if len(container) != size:
                    return f"{self._owner(container)} changed size"
        return None

    def _explain(self, name: str, namespace: dict[str, Any], before: dict[str, Any]) -> str | None:
        """The first change in one module's namespace that is state (not bookkeeping or a submodule)."""
        for attr, value in namespace.items():
            old = before.get(attr, _ABSENT)
            if old is value or not _watched(attr) or self._submodule(value, old):
                continue
            return f"{name}.{attr} was {'set' if old is _ABSENT else 'rebound'}"
        for attr in before.keys() - namespace.keys():
            if _watched(attr):
                return f"{name}.{attr} was deleted"
        return None

    def _owner(self, container: Any) -> str:
        """``module.attr`` of a container (only on a refusal)."""
        for name, namespace, _ in self.namespaces:
            for attr, value in namespace.items():
                if value is container:
                    return f"{name}.{attr}"
        return "a module-level container"

    def _submodule(self, value: Any, old: Any) -> bool:
        """A package's attribute for a submodule: a reloaded one, or one imported for the first time."""
        if not isinstance(value, types.ModuleType):
            return False
        return old is _ABSENT or value.__name__ in self.reloaded


_CONTAINERS = (list, dict, set)
_ABSENT = object()


def _watched(attr: str) -> bool:
    """Module attributes that are state (not the import system's bookkeeping, not a cache)."""
    return not (attr.startswith("__") and attr.endswith("__")) and "cache" not in attr.lower()


# ---------------------------------------------------------------------------------------------
# serving fork requests


def _serve(server: Any, channel: socket.socket, dump_fd: int, state: GenerationState) -> None:
    """Answer the master's fork requests until it closes the channel or asks us to exit."""
    forks.serve_requests(
        channel,
        {
            "fork_worker": lambda args, fds: _fork_worker(server, channel, dump_fd, state, args, fds),
            "fork_generation": lambda args, fds: _fork_generation(server, channel, dump_fd, state, args, fds),
        },
    )


def _fork_worker(
    server: Any, channel: socket.socket, dump_fd: int, state: GenerationState, args: dict[str, Any], fds: list[int]
) -> None:
    """Double-fork a worker for slot ``args["index"]`` on the listener and control socket received."""
    listener_fd, control_fd = fds

    def report(pid: int | None, error: str | None) -> None:  # in the intermediate process
        forks.send(
            channel,
            {"event": "forked", "id": args["id"], "pid": pid}
            if pid is not None
            else {"event": "fork_failed", "id": args["id"], "error": error},
        )

    try:
        child = forks.spawn_adopted(args["master_pid"], report)
    except OSError as exc:
        forks.close_fds(fds)
        report(None, str(exc))
        return
    if child:
        from prefork.child import run_worker

        forks.close_fds([channel.fileno(), dump_fd])
        worker = server.worker_class(server, args["index"], args["port"], args["generation"])
        worker.code_generation = args.get("code_generation", args["generation"])
        run_worker(
            worker,
            app=state.app,
            listener=socket.socket(fileno=listener_fd),
            control=socket.socket(fileno=control_fd),
            threads=server.threads,
            output_fd=server._output_fd,
            output_path=server._output_path,
            master_pid=args["master_pid"],
            close_inherited=lambda: None,
            inline=server.inline_requests,
        )
    forks.close_fds(fds)


def _fork_generation(
    server: Any, channel: socket.socket, dump_fd: int, state: GenerationState, args: dict[str, Any], fds: list[int]
) -> None:
    """Double-fork a partial generation: it applies ``args["units"]`` to a copy of this one."""
    new_channel_fd, new_dump_fd = fds
    try:
        child = forks.spawn_adopted(args["master_pid"])  # it tells the master its pid itself
    except OSError:
        forks.close_fds(fds)  # the new generation's channel sees EOF: the master gives it up
        return
    if child:
        forks.close_fds([channel.fileno(), dump_fd])
        run_generation(server, socket.socket(fileno=new_channel_fd), new_dump_fd, args, state)
    forks.close_fds(fds)
