"""Fixtures of the end-to-end tests: ``launcher`` (servers started by a test, killed by process group
at teardown) and ``project_copy``. The helpers are in integration_util.py: a test module imports them
from there (``conftest`` is a name every test folder has, and which one it means depends on the order
pytest collects the folders in).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.integration.integration_util import EXAMPLES, Launcher  # noqa: E402


@pytest.fixture
def launcher(tmp_path: Path):
    launch = Launcher(tmp_path)
    try:
        yield launch
    finally:
        launch.close()


@pytest.fixture
def project_copy(tmp_path: Path) -> Path:
    """A private copy of examples/myproject that the test may edit."""
    target = tmp_path / "myproject"
    shutil.copytree(EXAMPLES / "myproject", target,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return target
