"""The pid file, on real files and real processes."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from prefork.pidfile import PidFile, PidFileError, process_alive, read_pid


@pytest.fixture
def live_process():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    yield proc.pid
    proc.kill()
    proc.wait()


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_create_writes_exactly_the_path_and_remove_deletes_it(tmp_path):
    path = tmp_path / "app.pid"
    pid_file = PidFile(str(path))
    pid_file.create()
    assert path.read_text() == f"{os.getpid()}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.pid"]
    pid_file.remove()
    assert not path.exists()


def test_a_live_process_keeps_its_pid_file(tmp_path, live_process):
    path = tmp_path / "app.pid"
    path.write_text(f"{live_process}\n")
    with pytest.raises(PidFileError, match=f"names a live process {live_process}") as caught:
        PidFile(str(path)).create()
    assert caught.value.pid == live_process
    assert path.read_text() == f"{live_process}\n"


@pytest.mark.parametrize("content", [None, "", "garbage\n"])
def test_a_stale_or_unreadable_pid_file_is_replaced(tmp_path, content):
    path = tmp_path / "app.pid"
    path.write_text(f"{dead_pid()}\n" if content is None else content)
    PidFile(str(path)).create()
    assert read_pid(str(path)) == os.getpid()


def test_remove_leaves_a_file_that_names_someone_else(tmp_path, live_process):
    path = tmp_path / "app.pid"
    pid_file = PidFile(str(path))
    pid_file.create()
    path.write_text(f"{live_process}\n")  # another master took over the path
    pid_file.remove()
    assert path.exists()


def test_process_alive():
    assert process_alive(os.getpid())
    assert not process_alive(dead_pid())
    assert not process_alive(0)
