"""Server construction and start-up failures, in-process (nothing is forked in these tests)."""

from __future__ import annotations

import json
import socket

import pytest

from prefork import BindError, Server, Worker
from prefork.server import resolve_app


def app(environ, start_response):
    start_response("200 OK", [])
    return [b""]


def test_resolve_app_imports_module_and_dotted_attribute():
    assert resolve_app("json:dumps") is json.dumps
    assert resolve_app("json:decoder.JSONDecoder") is json.decoder.JSONDecoder


def test_hooks_are_checked_when_the_server_is_created():
    with pytest.raises(TypeError, match=r"hook worker_exited must accept \(worker, status\)"):
        Server(app, worker_exited=lambda worker: None)
    with pytest.raises(TypeError, match="hook when_ready must be callable"):
        Server(app, when_ready="nope")
    Server(app, worker_ready=lambda worker: None, worker_exited=lambda worker, status: None,
           when_ready=lambda server: None, on_reload=lambda server: None)


def test_worker_mixins_come_before_worker_in_the_mro():
    class Mixin:
        def child_dump(self):
            return 1

    server = Server(app, worker_mixins=[Mixin])
    assert server.worker_class.__mro__[1:3] == (Mixin, Worker)


def test_an_app_that_cannot_be_imported_fails_start_before_binding():
    server = Server("no_such_module_here:app", host="127.0.0.1", port=0)
    with pytest.raises(ModuleNotFoundError):
        server.start()
    server2 = Server("json:nothing", host="127.0.0.1", port=0)
    with pytest.raises(AttributeError):
        server2.start()


def test_a_port_in_use_fails_start_with_a_bind_error_naming_it(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = Server(app, workers=1, host="127.0.0.1", port=port, pid_file=str(tmp_path / "app.pid"))
        with pytest.raises(BindError, match=f"cannot listen on 127.0.0.1:{port}"):
            server.start()
    assert not (tmp_path / "app.pid").exists()
    assert server.state == "stopped"


def test_a_subclass_may_name_its_own_worker_class():
    class MyWorker(Worker):
        pass

    class Mixin:
        pass

    class MyServer(Server):
        worker_class = MyWorker

    assert MyServer(app).worker_class is MyWorker
    assert MyServer(app, worker_mixins=[Mixin]).worker_class.__mro__[1:3] == (Mixin, MyWorker)
