"""A Flask app in the classic circular pattern reloads edited and added routes.

app.py creates ``app`` and imports ``views`` at the bottom; views.py imports ``app`` and adds routes.
A naive reload re-runs views.py against the old ``app`` and Flask refuses ("View function mapping
is overwriting an existing endpoint function"); projectr reloads the import cycle as one unit.
"""
from __future__ import annotations

import textwrap
from pathlib import Path

from tests.integration.integration_util import PYTHON, http_get, save, wait_for

APP = '''\
from flask import Flask

app = Flask(__name__)

import views  # noqa: E402,F401 - the classic circular pattern: views needs app
'''

VIEWS = '''\
from app import app


@app.route("/")
def index():
    return "hello from version 1"
'''

PROJECT = '''\
from projectr import Project

project = Project("flaskcircle")
project.file("app")
project.file("views")
'''


def _serve(launcher, tmp_path: Path):
    site = tmp_path / "site"
    site.mkdir()
    save(site / "app.py", APP)
    save(site / "views.py", VIEWS)
    save(site / "project.py", PROJECT)

    def command(port: int) -> list[str]:
        return [PYTHON, "-m", "prefork", "app:app", "--project", "project.py", "--reload", "--partial", "always",
                "-w", "2", "-p", str(port), "--port-per-worker"]

    return site, launcher.start_http(command, workers=2, cwd=site)


def _all_serve(server, path: str, text: str) -> None:
    def check() -> bool:
        if server.proc.poll() is not None:
            raise AssertionError(server.log())
        return all(text in http_get(port, path)[1].decode() for port in server.ports)

    try:
        wait_for(check, what=f"{text!r} on {path} from every worker")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{server.log()}") from None


def test_flask_circular_app_reloads_edited_and_new_routes(launcher, tmp_path):
    site, server = _serve(launcher, tmp_path)
    _all_serve(server, "/", "hello from version 1")

    save(site / "views.py", VIEWS.replace("version 1", "version 2"))
    _all_serve(server, "/", "hello from version 2")

    save(site / "views.py", VIEWS.replace("version 1", "version 3") + textwrap.dedent('''

        @app.route("/about")
        def about():
            return "about this site"
        '''))
    _all_serve(server, "/about", "about this site")
    _all_serve(server, "/", "hello from version 3")

    server.wait_log(r"reload #2: 2 modules \((app, views|views, app)\)")
    log = server.log()
    assert "overwriting an existing endpoint" not in log
    assert "failed" not in log, log

    # A broken view keeps the old routes serving; the fix brings the new code.
    save(site / "views.py", VIEWS.replace("version 1", "version 4") + "\nundefined_decorator\n")
    server.wait_log(r"reload #3 failed: \S*views\.py:\d+: NameError")
    _all_serve(server, "/about", "about this site")
    save(site / "views.py", VIEWS.replace("version 1", "version 5"))
    _all_serve(server, "/", "hello from version 5")
    assert all(http_get(port, "/about")[0] == 404 for port in server.ports)  # the route is gone
    assert "overwriting an existing endpoint" not in server.log()
