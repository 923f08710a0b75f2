"""Fixtures of the reliability suite: a Launcher whose processes are killed by process group."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from tests.reliability.harness import Launcher


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Launcher]:
    """Start processes with ``processes.spawn/start_http``; every session is SIGKILLed at teardown."""
    launch = Launcher(tmp_path)
    try:
        yield launch
    finally:
        launch.close()
