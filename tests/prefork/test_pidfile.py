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


def test_a_symlink_planted_at_the_old_temporary_name_is_never_followed(tmp_path):
    # The temporary used to be `<path>.<pid>.tmp`, opened following symlinks: anyone who can write
    # to the directory could point that name at a file of root's and have the master overwrite it.
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    os.chmod(victim, 0o600)
    path = tmp_path / "app.pid"
    planted = tmp_path / f"app.pid.{os.getpid()}.tmp"
    planted.symlink_to(victim)
    pid_file = PidFile(str(path))
    pid_file.create()
    assert victim.read_text() == "precious\n" and oct(os.stat(victim).st_mode & 0o777) == "0o600"
    assert not path.is_symlink() and path.read_text() == f"{os.getpid()}\n"
    assert oct(os.stat(path).st_mode & 0o777) == "0o644"  # readable by monitors, as before
    assert planted.is_symlink()  # not ours: left alone
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["victim", "app.pid", planted.name])
    pid_file.remove()
    assert victim.read_text() == "precious\n"


def test_a_failed_write_leaves_no_temporary(tmp_path):
    # /dev/full-like failure without mocks: a directory we cannot write to fails before any file
    # exists; a pid file path that is a directory fails at the link, after the temporary existed.
    path = tmp_path / "app.pid"
    path.mkdir()
    (path / "keep").write_text("x")  # a non-empty directory: neither unlink nor link removes it
    with pytest.raises((PidFileError, OSError)):
        PidFile(str(path)).create()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.pid"]
