"""What the master's mixins share: the Server's attributes and methods, declared for the type checker.

``Server`` (prefork/server/__init__.py) is one class made of mixins: ``Processes`` (reaping, slots,
forks), ``Rolling`` (rolls), ``WorkerChannels`` (the master's side of the worker channels) and, for
ProjectrServer, ``Generations``. Each uses state and methods that another part defines. This class
names them once, with their types, as annotations only: it adds no attribute and no method at run
time, so the real ones (set in ``Server.__init__``, defined by a mixin) are what runs.
"""

from __future__ import annotations

import selectors
import socket
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prefork import signals
    from prefork.server.rolling import Roll
    from prefork.server.slots import Slot, SlotTable
    from prefork.server.timers import TimerHandle, TimerQueue
    from prefork.sockets import Address
    from prefork.worker import Worker


class MasterState:
    """Annotations of the Server's shared state (master); see the module docstring."""

    # -- configuration (Server.__init__) --------------------------------------------------------------
    app: Any
    address: Address
    more_addresses: list[Address]
    host: str
    port: int
    num_workers: int
    threads: int
    shared_port: bool
    backlog: int
    slow_start: float
    graceful_timeout: float
    timeout: float | None
    term_timeout: float
    ready_timeout: float
    inline_requests: bool
    worker_class: type[Worker]

    # -- state --------------------------------------------------------------------------------------
    state: str
    generation: int
    code_generation: int
    stopped_cleanly: bool
    _slots: SlotTable
    _timers: TimerQueue
    _by_pid: dict[int, Worker]
    _child_watchers: dict[int, Callable[[int], Any]]
    _io_handlers: dict[int, tuple[Any, Callable[[Any], Any]]]
    _events: deque[tuple[str, tuple[Any, ...]]]
    _selector: selectors.BaseSelector | None
    _pipe: signals.WakeupPipe | None
    _request_ids: Any
    _roll: Roll | None
    _roll_again: bool
    _announced: bool
    _shared_sock: socket.socket | None
    _more_socks: list[socket.socket]
    _unix_paths: list[str]
    _output_fd: int | None
    _output_path: str | None
    _master_pid: int
    _spawn_from: Any
    _pending_forks: dict[int, Worker]
    _stranger_exits: dict[int, int]

    # -- methods one part calls and another defines ---------------------------------------------------
    if TYPE_CHECKING:  # Server.workers is a read-only property

        @property
        def workers(self) -> list[Worker]: ...

    call_later: Callable[[float, Callable[[], Any]], TimerHandle]
    post_event: Callable[..., None]
    handle_set_workers: Callable[[int], None]
    _guarded: Callable[[Callable[[], Any], str], None]
    _call_hook: Callable[..., None]
    _call_worker_hook: Callable[[Worker, str], None]
    _signal: Callable[[Worker, int], None]
    _retire: Callable[[Worker], None]
    _terminate: Callable[[Worker], None]
    _spawn: Callable[[Slot], Worker | None]
    _maybe_announce: Callable[[], None]
    _abandon_roll: Callable[[str], None]
    _read_worker: Callable[[Worker], None]
    _close_channel: Callable[[Worker], None]
    _fork_worker_from: Callable[..., bool]
