"""Fixtures of the ASGI tests: servers run as scripts in their own sessions, the generated FastAPI app.

Every process is started with ``start_new_session=True`` and its process group is killed at
teardown; waits are on conditions (an HTTP answer, a log line, a file) with deadlines.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.asgi.asgi_util import ScriptServer  # noqa: E402
from tests.asgi.fastapi_app import generate_fastapi  # noqa: E402
from tests.realapps.conftest import RealApp  # noqa: E402
from tests.realapps.harness import Pages  # noqa: E402

pytest.importorskip("uvicorn")
pytest.importorskip("fastapi")


@pytest.fixture
def script_server(tmp_path: Path):
    """``script_server(source, workers=1)``: run ``source`` (a Python script) as a server; stopped at teardown."""
    servers: list[ScriptServer] = []

    def start(source: str, workers: int = 1, wait: bool = True) -> ScriptServer:
        server = ScriptServer(tmp_path / f"server{len(servers)}", source, workers)
        servers.append(server)
        return server.start(wait=wait)

    yield start
    for server in servers:
        server.stop()


class FastAPITemplate:
    """The generated FastAPI app in a session folder (never served itself), its pristine pages once.

    Duck-types tests/realapps' Template so its RealApp (serve, save, compare with a fresh start) is reused.
    """

    def __init__(self, root: Path) -> None:
        self.kind = "fastapi"
        self.dir = root / "app"
        self.spec = generate_fastapi(self.dir)
        self.pristine: Pages | None = None

    def copy_to(self, dest: Path) -> Path:
        shutil.copytree(self.dir, dest, ignore=shutil.ignore_patterns("__pycache__"))
        return dest


@pytest.fixture(scope="session")
def fastapi_template(tmp_path_factory: pytest.TempPathFactory) -> Callable[[], FastAPITemplate]:
    made: list[FastAPITemplate] = []

    def get() -> FastAPITemplate:
        if not made:
            made.append(FastAPITemplate(tmp_path_factory.mktemp("asgi-fastapi")))
        return made[0]

    return get


@pytest.fixture
def fastapi_app(fastapi_template, tmp_path):
    """A test's own copy of the generated FastAPI app (tests/realapps' RealApp); servers stopped at teardown."""
    app = RealApp(fastapi_template(), tmp_path)  # type: ignore[arg-type]
    try:
        yield app
    finally:
        app.close()
