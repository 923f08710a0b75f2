"""The master's side of the process tree: the base, the generations, and workers forked by them.

Runs in the master. The master never imports the app: it forks the base once (and again for a
full reload), asks the base (fresh) or the serving generation (partial) for a new generation,
waits for that generation's report without blocking its loop, and sends each worker fork to the
generation the worker belongs to. Generations and workers are double-forked and adopted by the
master (a subreaper), so reaping and supervision stay where they always were.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import os
import selectors
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prefork import forks, modules, signals
from prefork.server.failures import parse_stack_dump, user_frames_of_dump

log = logging.getLogger("prefork")

_DUMP_GRACE = 0.2  # seconds a hung generation gets to write its stack before SIGKILL

Report = Callable[["GenerationProcess", dict[str, Any]], None]


@dataclass
class GenerationProcess:
    """One generation process as the master sees it."""

    number: int
    kind: str  # "fresh" or "partial"
    channel: socket.socket
    dump_fd: int  # read end of the pipe its stack dump goes to
    on_report: Report  # called once: ready, failed, refused or died
    started: float = field(default_factory=time.perf_counter)
    pid: int | None = None
    state: str = "booting"  # booting -> ready -> retired
    report: dict[str, Any] = field(default_factory=dict)
    timed_out: bool = False
    timers: list[Any] = field(default_factory=list)
    checkpoint: Checkpoint | None = None  # the one it made (a checkpoint's maker), was given or resumed from

    def fileno(self) -> int:
        return self.channel.fileno()

    @property
    def loaded(self) -> set[str]:
        """Project source files this generation has imported."""
        return set(self.report.get("loaded", ()))

    @property
    def opened(self) -> set[str]:
        """Non-Python files under the root it opened while importing."""
        return set(self.report.get("opened", ()))

    @property
    def foreign(self) -> dict[str, list[str]]:
        """Project modules that code outside the project imported: ``{path: [module, importer]}``."""
        return dict(self.report.get("foreign", {}))

    @property
    def written(self) -> set[str]:
        """Files under the root it opened for writing while importing (the app's own output)."""
        return set(self.report.get("written", ()))


@dataclass
class Checkpoint:
    """A Django app as a fresh import leaves it before the warm-up (set up, no URLconf imported), made
    by a generation of its own while the server is idle (``ProjectrServer._maybe_checkpoint``)."""

    owner: int  # the number of the generation that left it
    channel: socket.socket
    opened: set[str] = field(default_factory=set)  # files under the root it read
    pid: int | None = None
    files: set[str] | None = None  # project files it loaded or read; None until both reported
    loaded: set[str] | None = None  # from its generation's ready report
    retired: bool = False

    def fileno(self) -> int:
        return self.channel.fileno()


@dataclass
class BaseProcess:
    """The base process as the master sees it."""

    pid: int
    channel: socket.socket
    preloaded: bool = False  # the last batch of the preload is imported
    asked: set[str] = field(default_factory=set)  # modules sent to it to preload
    preload_ms: float = 0.0  # what the batches imported so far took, and added to its memory
    preload_mb: float = 0.0
    imported: int = 0
    paused: bool = False  # stopped (SIGSTOP) while a reload that does not need it is built

    def fileno(self) -> int:
        return self.channel.fileno()


class Generations:
    """Mixed into ProjectrServer: base and generation processes, and forking workers through them."""

    # Provided by Server and ProjectrServer (this is a mixin of theirs):
    state: str
    project: Any
    app_spec: Any
    _output_fd: int | None
    _access_fd: int | None
    _more_socks: list[socket.socket]
    _selector: selectors.BaseSelector | None
    call_later: Callable[..., Any]
    post_event: Callable[..., None]
    watch_child: Callable[[int, Callable[[int], Any]], None]
    _next_request_id: Callable[[], int]
    _adopt_pid: Callable[[Any, int], None]
    _worker_gone: Callable[[Any, int], None]
    reload_timeout: float
    _base: BaseProcess | None
    _generations: dict[int, GenerationProcess]
    _serving: GenerationProcess | None
    _spawn_from: GenerationProcess | None
    _pending_forks: dict[int, Any]
    _stranger_exits: dict[int, int]
    _generation_numbers: Any
    _preload: list[str]
    _checkpoint: Checkpoint | None  # the serving generation's, while none of its files changed

    # -- the base ---------------------------------------------------------------------------------

    def _start_base(self) -> BaseProcess:
        """Fork the base from this (app-free) master and watch its channel (master)."""
        mine, theirs = forks.channel_pair()
        master_pid = os.getpid()
        # What the base needs, imported here: imports in the base would write into the pages
        # it shares with the master (each copied into both); and project modules (a script that
        # imported the app before start()) are found here, where reading them copies nothing.
        import prefork.base
        import prefork.child
        import prefork.generation  # noqa: F401

        stale = modules.of_project(self.project.root)
        # Everything the master holds now is shared with the base, its generations and workers:
        # the master's own collections must not write to those objects (a write copies the page
        # into the master, and the whole heap ends up counted twice).
        gc.collect()
        gc.freeze()
        with signals.blocked_for_fork():
            pid = os.fork()
        if pid == 0:
            keep = [theirs.fileno()] + [fd for fd in (self._output_fd, self._access_fd) if fd]
            keep += [sock.fileno() for sock in self._more_socks]  # every worker accepts on these too
            forks.close_inherited(keep)
            prefork.base.run_base(self, theirs, master_pid, stale)
        theirs.close()
        base = BaseProcess(pid, mine)
        self._base = base
        self.watch_child(pid, functools.partial(self._base_exited, base))
        self._register_channel(base, lambda: self._read_base(base))
        log.debug("base process %d started", pid)
        return base

    @staticmethod
    def _receive(channel: socket.socket, closed: Callable[[], None]) -> tuple[dict[str, Any], list[int]] | None:
        """One message and its fds from a child's channel (master).

        None when nothing is ready, or at EOF, after calling ``closed()``.
        """
        try:
            return forks.receive(channel)
        except (BlockingIOError, InterruptedError):
            return None
        except (forks.ChannelClosed, OSError):
            closed()
            return None

    def _read_base(self, base: BaseProcess) -> None:
        received = self._receive(base.channel, lambda: self._unregister_channel(base))
        if received is None:
            return
        message, fds = received
        forks.close_fds(fds)
        if message.get("event") == "preloaded":
            base.preload_ms += float(message.get("ms", 0.0))
            base.preload_mb += float(message.get("mb", 0.0))
            base.imported += int(message.get("imported", 0))
            if not message.get("final", True):
                return
            base.preloaded = True
            log.info(
                "base: %d of %d third-party modules preloaded in %.0f ms (%.1f MB)",
                base.imported,
                len(base.asked),
                base.preload_ms,
                base.preload_mb,
            )
            self._base_preloaded(base.preload_ms, base.preload_mb)

    def _base_preloaded(self, ms: float, mb: float) -> None:
        """The base holds the third-party modules now, imported in ``ms`` into ``mb`` of memory
        (a subclass estimates costs from them)."""

    def _base_exited(self, base: BaseProcess, status: int) -> None:
        self._unregister_channel(base)
        if self._base is base:
            self._base = None
            if self.state == "running":
                log.warning("base process %d exited with status %d; the next reload starts a new one", base.pid, status)

    def _preload_base(self, modules: list[str], final: bool = True) -> None:
        """Ask the base to import what generation 0 learned it needs: a batch while generation 0
        imports, the rest (``final``) once it reported (master)."""
        base = self._base
        if base is None or base.preloaded:
            return
        wanted = [name for name in modules if name not in base.asked]
        if not wanted and (not final or not base.asked):
            return
        base.asked.update(wanted)
        forks.send(base.channel, {"command": "preload", "args": {"modules": wanted, "final": final}})

    def _pause_base(self) -> None:
        """Stop the base's preload (SIGSTOP) while a reload that does not need the base is built,
        so that the two do not share the CPU; ``_resume_base`` lets it go on (master)."""
        base = self._base
        if base is not None and not base.preloaded and not base.paused:
            with contextlib.suppress(ProcessLookupError):
                os.kill(base.pid, signal.SIGSTOP)
                base.paused = True
                log.debug("base: preload paused while this reload is built")

    def _resume_base(self) -> None:
        """Let a paused base go on (master)."""
        base = self._base
        if base is not None and base.paused:
            base.paused = False
            with contextlib.suppress(ProcessLookupError):
                os.kill(base.pid, signal.SIGCONT)
                log.debug("base: preload resumed")

    def _stop_base(self) -> None:
        base, self._base = self._base, None
        if base is not None:
            self._unregister_channel(base)
            with contextlib.suppress(ProcessLookupError):
                os.kill(base.pid, signal.SIGKILL)

    # -- generations ------------------------------------------------------------------------------

    def _request_generation(
        self, kind: str, args: dict[str, Any], on_report: Report, checkpoint: Checkpoint | None = None
    ) -> GenerationProcess:
        """Ask the base (fresh), the serving generation (partial) or ``checkpoint`` (a fresh import
        resumed there) for a new generation (master)."""
        zygote: Any = checkpoint if checkpoint is not None else self._serving if kind == "partial" else self._base
        if zygote is self._base:
            self._resume_base()
        if zygote is None:  # the base died: a new one imports what the last one did first
            zygote = self._start_base()
            self._preload_base(self._preload)
        mine, theirs = forks.channel_pair()
        dump_read, dump_write = os.pipe()
        number = next(self._generation_numbers)
        request = {"number": number, "master_pid": os.getpid(), "root": self.project.root, "app": self.app_spec, **args}
        try:
            forks.send(zygote.channel, {"command": "fork_generation", "args": request}, [theirs.fileno(), dump_write])
        except OSError as exc:  # the zygote died just now: the new channel's EOF fails this generation
            log.debug("generation %d: its zygote (pid %s) is gone: %s", number, zygote.pid, exc)
        finally:
            theirs.close()
            os.close(dump_write)
        os.set_blocking(dump_read, False)
        gen = GenerationProcess(number, kind, mine, dump_read, on_report, checkpoint=checkpoint)
        self._generations[number] = gen
        self._register_channel(gen, lambda: self._read_generation(gen))
        gen.timers.append(self.call_later(self.reload_timeout, lambda: self._generation_overdue(gen)))
        return gen

    def _read_generation(self, gen: GenerationProcess) -> None:
        """Handle one message from a generation, or its EOF (master)."""
        received = self._receive(gen.channel, lambda: self._generation_gone(gen))
        if received is None:
            return
        message, fds = received
        event = message.get("event")
        if event == "checkpoint" and len(fds) == 1:
            self._checkpoint_offered(gen, socket.socket(fileno=fds[0]), set(message.get("opened", ())))
            return
        forks.close_fds(fds)
        if event == "started":
            gen.pid = int(message["pid"])
            if gen.state == "retired":  # retired while importing, before its pid was known
                self._kill_generation(gen)
        elif event == "learned" and gen.state == "booting":
            self._preload_base(list(message.get("modules", ())), final=False)
        elif event in ("ready", "failed", "refused") and gen.state == "booting":
            self._cancel_timers(gen)
            gen.report = message
            gen.state = "ready" if event == "ready" else "failed"
            if gen.checkpoint is not None and gen.checkpoint.owner == gen.number and event == "ready":
                gen.checkpoint.loaded = set(message.get("setup", ()))
                self._checkpoint_complete(gen.checkpoint)
            log.debug(
                "generation %d (%s) %s after %.1f ms (its own work: %.1f ms)",
                gen.number,
                gen.kind,
                event,
                (time.perf_counter() - gen.started) * 1000.0,
                message.get("ms", 0.0),
            )
            gen.on_report(gen, message)
        elif event == "forked":
            self._fork_done(int(message["id"]), int(message["pid"]))
        elif event == "fork_failed":
            self._fork_failed(int(message["id"]), str(message.get("error")))

    def _generation_gone(self, gen: GenerationProcess) -> None:
        """A generation's channel closed: it died (or was told to exit) (master)."""
        self._unregister_channel(gen)
        self._cancel_timers(gen)
        self._generations.pop(gen.number, None)
        dump = self._read_dump(gen)
        log.debug(
            "generation %d (pid %s) gone while %s; %d bytes of stack dump", gen.number, gen.pid, gen.state, len(dump)
        )
        with contextlib.suppress(OSError):
            os.close(gen.dump_fd)
        if gen.checkpoint is not None and gen.checkpoint is not self._checkpoint:
            self._retire_checkpoint(gen.checkpoint)
        for request_id, worker in list(self._pending_forks.items()):
            if getattr(worker, "_zygote", None) is gen:
                self._fork_failed(request_id, f"generation {gen.number} exited")
        if gen.state == "booting":
            gen.state = "failed"
            gen.on_report(gen, self._death_report(gen, dump))
        elif gen.state == "ready" and gen is self._serving and self.state == "running":
            log.warning("generation %d (pid %s) exited; starting a fresh one", gen.number, gen.pid)
            self._serving = None
            self.post_event("reload")
        gen.state = "retired"

    def _death_report(self, gen: GenerationProcess, dump: str) -> dict[str, Any]:
        """What to say about a generation that died or was killed before it reported."""
        if gen.timed_out:
            file, line = parse_stack_dump(dump, self.project.source_files)
            return {
                "event": "failed",
                "file": file,
                "line": line,
                "error": f"hung: the import did not finish within {self.reload_timeout:g} s and was killed",
                "traceback": user_frames_of_dump(dump),
            }
        return {
            "event": "failed",
            "file": None,
            "line": None,
            "error": "the new generation died before it reported",
            "traceback": dump.strip(),
        }

    def _read_dump(self, gen: GenerationProcess) -> str:
        chunks = []
        with contextlib.suppress(OSError):
            while True:
                chunk = os.read(gen.dump_fd, 65536)
                if not chunk:
                    break
                chunks.append(chunk)
        return b"".join(chunks).decode("utf-8", "replace")

    def _generation_overdue(self, gen: GenerationProcess) -> None:
        """Past reload_timeout: ask for its stack, then kill it (master)."""
        if gen.state != "booting" or gen.pid is None:
            if gen.state == "booting":  # not even started: give up on it
                gen.timed_out = True
                self._unregister_channel(gen)
                self._generation_gone(gen)
            return
        gen.timed_out = True
        with contextlib.suppress(ProcessLookupError):
            os.kill(gen.pid, signal.SIGUSR1)
        gen.timers.append(self.call_later(_DUMP_GRACE, lambda: self._kill_generation(gen)))

    def _kill_generation(self, gen: GenerationProcess) -> None:
        """SIGKILL a generation that is still importing (master).

        Its pid comes in its first message, "started"; one sent but not read yet is read here. One
        not sent yet is killed when it arrives (``_read_generation``), or by the parent-death
        signal when the master is on its way out.
        """
        if gen.pid is None:
            received = self._receive(gen.channel, lambda: None)
            if received is not None:
                forks.close_fds(received[1])
                if received[0].get("event") == "started":
                    gen.pid = int(received[0]["pid"])
        if gen.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(gen.pid, signal.SIGKILL)

    def _retire_generation(self, gen: GenerationProcess | None) -> None:
        """Tell a generation that nothing more will be forked from it: it exits (master)."""
        if gen is None or gen.state == "retired":
            return
        if gen.checkpoint is not None and gen.checkpoint is not self._checkpoint:
            self._retire_checkpoint(gen.checkpoint)
        booting, gen.state = gen.state != "ready", "retired"  # its EOF reports nothing now
        self._cancel_timers(gen)
        with contextlib.suppress(OSError):
            forks.send(gen.channel, {"command": "exit"})
        if booting:
            self._kill_generation(gen)

    # -- checkpoints (Django: the app set up, before the warm-up) ------------------------------------

    def _checkpoint_offered(self, gen: GenerationProcess, channel: socket.socket, opened: set[str]) -> None:
        """A checkpoint's maker left one on ``channel``; its ready report (``setup``) says what the
        checkpoint loaded, and its callback decides whether it is kept (master)."""
        checkpoint = Checkpoint(gen.number, channel, opened=opened)
        self._register_channel(checkpoint, lambda: self._read_checkpoint(checkpoint))
        if gen.state not in ("booting", "ready") or gen.checkpoint is not None:
            self._retire_checkpoint(checkpoint)
            return
        gen.checkpoint = checkpoint

    def _checkpoint_gone(self, checkpoint: Checkpoint) -> None:
        """The checkpoint's channel closed: forget it (master)."""
        checkpoint.retired = True
        self._unregister_channel(checkpoint)
        if self._checkpoint is checkpoint:
            self._checkpoint = None

    def _read_checkpoint(self, checkpoint: Checkpoint) -> None:
        received = self._receive(checkpoint.channel, lambda: self._checkpoint_gone(checkpoint))
        if received is None:
            return
        message, fds = received
        forks.close_fds(fds)
        if message.get("event") == "ready":
            checkpoint.pid = int(message["pid"])
            self._checkpoint_complete(checkpoint)

    def _checkpoint_complete(self, checkpoint: Checkpoint) -> None:
        """Usable once both the checkpoint and its generation reported (master)."""
        if checkpoint.pid is not None and checkpoint.loaded is not None:
            checkpoint.files = checkpoint.loaded | checkpoint.opened
            log.debug("checkpoint of generation %d (pid %d) ready", checkpoint.owner, checkpoint.pid)

    def _retire_checkpoint(self, checkpoint: Checkpoint | None) -> None:
        """Tell a checkpoint nothing more will be resumed from it: it exits (master)."""
        if checkpoint is None or checkpoint.retired:
            return
        checkpoint.retired = True
        if self._checkpoint is checkpoint:
            self._checkpoint = None
        with contextlib.suppress(OSError):
            forks.send(checkpoint.channel, {"command": "exit"})
        self._unregister_channel(checkpoint)

    def _cancel_timers(self, gen: GenerationProcess) -> None:
        for timer in gen.timers:
            timer.cancel()
        gen.timers.clear()

    # -- workers through generations ------------------------------------------------------------------

    def _fork_worker_from(
        self, gen: GenerationProcess, worker: Any, listener: socket.socket, worker_end: socket.socket
    ) -> bool:
        """Ask ``gen`` to fork ``worker``; its pid arrives later (``forked`` or the ready message)."""
        request_id = self._next_request_id()
        args = {
            "id": request_id,
            "index": worker.index,
            "port": worker.port,
            "generation": worker.generation,
            "code_generation": worker.code_generation,
            "master_pid": os.getpid(),
        }
        try:
            forks.send(gen.channel, {"command": "fork_worker", "args": args}, [listener.fileno(), worker_end.fileno()])
        except OSError as exc:
            log.error("cannot ask generation %d for worker %d: %s", gen.number, worker.index, exc)
            return False
        worker._zygote = gen
        self._pending_forks[request_id] = worker
        return True

    def _fork_done(self, request_id: int, pid: int) -> None:
        worker = self._pending_forks.pop(request_id, None)
        if worker is not None:
            self._adopt_pid(worker, pid)

    def _fork_failed(self, request_id: int, error: str) -> None:
        worker = self._pending_forks.pop(request_id, None)
        if worker is not None and worker.pid is None:
            log.error("cannot fork %s: %s", worker.describe(), error)
            self._worker_gone(worker, -1)

    # -- channels ----------------------------------------------------------------------------------

    def _register_channel(self, process: Any, callback: Callable[[], None]) -> None:
        process.channel.setblocking(False)
        assert self._selector is not None, "helpers are forked once the loop exists"
        self._selector.register(process.channel, selectors.EVENT_READ, callback)

    def _unregister_channel(self, process: Any) -> None:
        if self._selector is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(process.channel)
        with contextlib.suppress(OSError):
            process.channel.close()
