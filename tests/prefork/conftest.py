"""Fixtures for the prefork tests (see prefork_testutil for the helpers)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import pytest

from tests.prefork.prefork_testutil import Master, port_block


@pytest.fixture
def master(tmp_path: Path) -> Iterator[Callable[..., Master]]:
    """Start masters with ``master(body, ports=1)``; each is killed by process group at teardown.

    ``preexec_fn`` runs in the child before exec (after its new session): what a parent hands down,
    such as an ignored signal.
    """
    started: list[Master] = []

    def start(body: str, ports: int = 1, port: int | None = None, name: str = "server",
              preexec_fn: Callable[[], object] | None = None) -> Master:
        chosen = port if port is not None else port_block(ports)
        started.append(Master(tmp_path, body, chosen, name, preexec_fn=preexec_fn))
        return started[-1]

    yield start
    for running in started:
        running.kill()
