"""Fixtures for projectr tests."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from projectr import project as project_module
from projectr_testutil import Tree


@pytest.fixture
def tree(tmp_path: Path):
    """A Tree in tmp_path; afterwards its modules, sys.path entry and projects are forgotten."""
    saved_path = list(sys.path)
    saved_registry = dict(project_module._REGISTRY)
    t = Tree(tmp_path)
    yield t
    for key in [k for k in sys.modules if k == t.pkg or k.startswith(t.pkg + ".")]:
        del sys.modules[key]
    sys.path[:] = saved_path
    project_module._REGISTRY.clear()
    project_module._REGISTRY.update(saved_registry)


