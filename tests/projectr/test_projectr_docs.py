"""Run every code block of docs/projectr.md against a real example project."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from projectr_testutil import run_python

DOC = Path(__file__).resolve().parents[2] / "docs" / "projectr.md"

FILES = {
    "myproject/__init__.py": "",
    "myproject/version.py": "VERSION = '1.0'\n",
    "myproject/util.py": "from myproject import version\n\ndef describe():\n    return version.VERSION\n",
    "myproject/views/__init__.py": "",
    "myproject/views/home.py": "from myproject import util\nPAGE = util.describe()\n",
    "myproject/templates/index.html": "<h1>hi</h1>\n",
}


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC.read_text(), flags=re.S)


@pytest.fixture
def example(tmp_path: Path) -> Path:
    for rel, text in FILES.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    (tmp_path / "project.py").write_text(_blocks("python")[0])
    return tmp_path


def test_doc_has_the_blocks_this_test_runs():
    assert len(_blocks("python")) == 3 and len(_blocks("sh")) == 1


def test_declaring_and_loading(example):
    result = run_python(_blocks("python")[1], cwd=example, extra_args=["-B"])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    root = str(example)
    assert eval(lines[0]) == [os.path.join(root, p) for p in (
        "myproject/__init__.py", "myproject/version.py", "myproject/util.py",
        "myproject/views/__init__.py", "myproject/views/home.py", "myproject/templates/index.html")]
    assert lines[1:] == [
        "[]",
        "['version.py', 'util.py', 'views/home.py']",
        "failed: version.py 1 SyntaxError",
        "2.0",
        "['util.py', 'views/home.py']",
        "['import', 'import', 'needs', 'needs']",
    ]


def test_watch_loop(example):
    driver = _blocks("python")[2] + """
import threading
from projectr import Project
p = Project.from_file("project.py")
p.load()
t = threading.Thread(target=reload_on_save, args=(p, 1))
t.start()
n = 0
while t.is_alive():   # the watcher may start after a write: write again until it reloads
    n += 1
    with open("myproject/version.py", "w") as f:
        f.write(f"VERSION = '{n}'\\n")
    t.join(0.05)
print("PAGE", __import__("sys").modules["myproject.views.home"].PAGE)
"""
    result = run_python(driver, cwd=example, extra_args=["-B"], timeout=30)
    assert result.returncode == 0, result.stderr
    assert "reloaded" in result.stdout and "PAGE" in result.stdout


def test_command_line(example):
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    for line in _blocks("sh")[0].splitlines():
        command = line.split("#")[0].strip()
        if not command:
            continue
        result = subprocess.run(command, shell=True, cwd=example, env=env, capture_output=True, text=True,
                                timeout=60, start_new_session=True)
        assert result.returncode == 0, (command, result.stdout, result.stderr)
        assert result.stdout
