"""Which interface an app speaks (prefork.asgi), and the ``interface=`` parameter of the servers."""

from __future__ import annotations

import functools

import pytest

from prefork import Server
from prefork.asgi import check_interface, choose_interface, detect_interface


async def asgi_function(scope, receive, send):
    pass


def wsgi_function(environ, start_response):
    return []


class AsgiObject:
    async def __call__(self, scope, receive, send):
        pass


class WsgiObject:
    def __call__(self, environ, start_response):
        return []


class Asgi2App:  # ASGI2: built from the scope, its instances awaited with (receive, send)
    def __init__(self, scope):
        self.scope = scope

    async def __call__(self, receive, send):
        pass


def hidden_coroutine(scope, receive, send):  # a wrapper that returns the coroutine: three arguments
    return asgi_function(scope, receive, send)


def frameworks() -> list[tuple[str, object, str]]:
    from django.conf import settings
    from fastapi import FastAPI
    from flask import Flask
    from starlette.applications import Starlette

    if not settings.configured:
        settings.configure()
    from django.core.handlers.asgi import ASGIHandler
    from django.core.handlers.wsgi import WSGIHandler

    flask = Flask("detected")
    return [("fastapi", FastAPI(), "asgi"), ("starlette", Starlette(), "asgi"),
            ("django asgi", ASGIHandler(), "asgi"), ("django wsgi", WSGIHandler(), "wsgi"),
            ("flask", flask, "wsgi"), ("flask wsgi_app", flask.wsgi_app, "wsgi")]


@pytest.mark.parametrize("app, expected", [
    (asgi_function, "asgi"), (wsgi_function, "wsgi"), (AsgiObject(), "asgi"), (WsgiObject(), "wsgi"),
    (Asgi2App, "asgi"), (functools.partial(asgi_function), "asgi"), (hidden_coroutine, "asgi"),
    (lambda environ, start_response: [], "wsgi"),
])
def test_detects_the_interface_of_plain_callables(app, expected):
    assert detect_interface(app) == expected


def test_detects_the_interface_of_framework_apps():
    for name, app, expected in frameworks():
        assert detect_interface(app) == expected, name


def test_an_explicit_interface_wins_and_a_bad_one_is_refused():
    assert choose_interface(wsgi_function, "asgi") == "asgi"
    assert choose_interface(asgi_function, "wsgi") == "wsgi"
    assert choose_interface(asgi_function, "auto") == "asgi"
    with pytest.raises(ValueError, match="interface must be one of auto, asgi, wsgi"):
        check_interface("asgi3")
    with pytest.raises(ValueError, match="interface"):
        Server(asgi_function, interface="http")
    assert Server(asgi_function).interface == "auto"
    assert Server(wsgi_function, interface="wsgi").interface == "wsgi"
