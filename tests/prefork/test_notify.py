"""prefork.notify against real datagram sockets (no systemd needed)."""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

import pytest

from prefork.notify import notify


@pytest.fixture
def listener(tmp_path: Path):
    """A real AF_UNIX datagram socket standing in for systemd's notify socket."""
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    yield str(path), sock
    sock.close()


def test_without_notify_socket_does_nothing(monkeypatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify("READY=1") is False


def test_sends_one_datagram_joined_by_newlines(monkeypatch, listener) -> None:
    path, sock = listener
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    assert notify("READY=1", "STATUS=serving 3 workers") is True
    assert sock.recv(4096) == b"READY=1\nSTATUS=serving 3 workers"
    assert notify("STOPPING=1") is True
    assert sock.recv(4096) == b"STOPPING=1"


def test_abstract_namespace(monkeypatch) -> None:
    name = f"prefork-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert notify("RELOADING=1") is True
        assert sock.recv(4096) == b"RELOADING=1"
    finally:
        sock.close()


def test_missing_socket_is_logged_not_raised(monkeypatch, tmp_path, caplog) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens"))
    assert notify("READY=1") is False
    assert "cannot notify systemd" in caplog.text
    assert not os.path.exists(tmp_path / "nobody-listens")
