"""Fixtures of the real-app tests: one generated app per kind per session (Django's migrations made
once), copied into a fresh folder for every test; servers stopped at teardown, whatever happened.

``django_app``, ``django_asgi_app`` (the same app through Django's ASGI handler), ``flask_app``,
``plain_app`` are ``RealApp`` objects: the test's own copy of the app
plus the scenario steps (serve, check the pristine pages, save, compare with a fresh start).
"""

from __future__ import annotations

import copy
import dataclasses
import shutil
import sys
from pathlib import Path
from typing import Callable, Iterable

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.realapps import apps, harness  # noqa: E402
from tests.realapps.apps import AppSpec, Change, EditCase, FailureCase  # noqa: E402
from tests.realapps.harness import Pages, ServerProcess  # noqa: E402

FAILURE_LOG_TIMEOUT = 20.0  # the endless import is only given up after the server's reload timeout


class Template:
    """A generated app in a session folder (never served itself), and its pristine pages, once."""

    def __init__(self, kind: str, root: Path) -> None:
        self.kind = kind
        self.dir = root / "app"
        self.spec: AppSpec = apps.GENERATORS[kind](self.dir)
        self.pristine: Pages | None = None

    def copy_to(self, dest: Path) -> Path:
        shutil.copytree(self.dir, dest, ignore=shutil.ignore_patterns("__pycache__"))
        return dest


class RealApp:
    """One test's copy of a generated app and the steps every scenario is made of."""

    def __init__(self, template: Template, tmp_path: Path) -> None:
        self.template = template
        self.spec = template.spec
        self.dir = template.copy_to(tmp_path / template.spec.name)
        self.run_dir = tmp_path / "run"
        self.run_dir.mkdir()
        self.servers: list[ServerProcess] = []

    # --- serving ---
    def serve(self, *extra_args: str, reload: bool = True, workers: int = 2, name: str = "server",
              ) -> ServerProcess:
        """Zero config: ``prefork APP --reload -w 2`` from the app's folder (plus ``extra_args``)."""
        server = ServerProcess(self.dir, self.spec.app, reload=reload, workers=workers,
                               extra_args=extra_args, run_dir=self.run_dir, name=name)
        self.servers.append(server)
        return server.start()

    def paths(self, case: EditCase | None = None) -> list[str]:
        return list(self.spec.paths) + list(case.extra_paths if case else ())

    def pristine_pages(self, paths: Iterable[str]) -> Pages:
        """What a fresh start serves on the untouched app (every path it may be asked, computed once)."""
        if self.template.pristine is None:
            self.template.pristine = harness.fresh_pages(
                self.dir, self.spec.app, self.spec.all_paths, headers=self.spec.headers,
                run_dir=self.run_dir, name="pristine-fresh")
        return {path: self.template.pristine[path] for path in paths}

    def assert_pristine(self, server: ServerProcess, paths: list[str]) -> Pages:
        """The server, before any save, serves what a fresh start serves; return those pages."""
        expected = self.pristine_pages(paths)
        harness.assert_serves(server, expected, paths, headers=self.spec.headers,
                              what="the pristine app's pages (before any save)")
        return expected

    def assert_like_fresh(self, server: ServerProcess, paths: list[str], changed_from: Pages | None = None,
                          timeout: float = 15.0) -> Pages:
        if harness.restart_mode():
            server.restart()
        return harness.assert_serves_like_fresh(server, self.dir, self.spec.app, paths, timeout,
                                                headers=self.spec.headers, changed_from=changed_from)

    # --- saving ---
    def save(self, change: Change) -> None:
        harness.edit(self.dir / change.path, change.old, change.new, atomic=change.atomic)

    def apply(self, case: EditCase) -> None:
        if case.before:
            case.before(self.dir)
        for change in case.changes:
            self.save(change)
        if case.after:
            case.after(self.dir)

    # --- whole scenarios ---
    def run_edit(self, case: EditCase, serve: Callable[[], ServerProcess] | None = None) -> None:
        """Serve, check the pristine pages, save, then every worker must serve like a fresh start."""
        paths = self.paths(case)
        server = (serve or self.serve)()
        before = self.assert_pristine(server, paths)
        self.apply(case)
        self.assert_like_fresh(server, paths, changed_from=before)

    def run_failure(self, case: FailureCase) -> None:
        """A broken save: the log names the failure and the old pages stay; then the fix is served."""
        paths = self.paths(case.fix)
        server = self.serve()
        before = self.assert_pristine(server, paths)
        original = (self.dir / case.broken.path).read_text()
        mark = server.log_mark()
        self.save(case.broken)
        if not harness.restart_mode():
            self._check_broken_state(server, case, mark, before, paths)
        # The fix, in one save: the file as it was, with the good edit instead of the broken one.
        fixed = original
        for change in case.fix.changes:
            if change.path == case.broken.path:
                assert change.old in fixed, f"{change.old!r} is not in {change.path}"
                fixed = fixed.replace(change.old, change.new, 1)
        harness.write_file(self.dir / case.broken.path, fixed)
        self.apply(EditCase(tuple(c for c in case.fix.changes if c.path != case.broken.path),
                            before=case.fix.before, after=case.fix.after))
        self.assert_like_fresh(server, paths, changed_from=before)

    def _check_broken_state(self, server: ServerProcess, case: FailureCase, mark: int, before: Pages,
                            paths: list[str]) -> None:
        """The log shows the failure (waited for, with a deadline), then ONE sweep: the old pages.

        When the log never shows it, the pages are still checked, so the report says both.
        """
        what = f"the failure of the broken save of {case.broken.path} (/{case.log_pattern}/)"
        try:
            server.wait_log(case.log_pattern, since=mark, timeout=FAILURE_LOG_TIMEOUT, what=what)
        except AssertionError as log_error:
            try:  # the log tail is in log_error, taken before this sweep added request tracebacks
                harness.assert_serves_now(server, before, paths, headers=self.spec.headers,
                                          what="the old pages while the save is broken", log_lines=0)
            except AssertionError as page_error:
                raise AssertionError(f"{page_error}\n\nand {log_error}") from None
            raise AssertionError(f"{log_error}\n(the old pages were still served)") from None
        harness.assert_serves_now(server, before, paths, headers=self.spec.headers,
                                  what="the old pages while the save is broken")

    def close(self) -> None:
        for server in self.servers:
            server.stop()


@pytest.fixture(scope="session")
def app_templates(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Template]:
    """Generate each kind of app at most once per session, on first use."""
    made: dict[str, Template] = {}

    def get(kind: str) -> Template:
        if kind not in made:
            made[kind] = Template(kind, tmp_path_factory.mktemp(f"realapps-{kind}"))
        return made[kind]

    return get


def _real_app(kind: str, app_templates: Callable[[str], Template], tmp_path: Path):
    app = RealApp(app_templates(kind), tmp_path)
    try:
        yield app
    finally:
        app.close()


@pytest.fixture
def django_app(app_templates, tmp_path):
    yield from _real_app("django", app_templates, tmp_path)


@pytest.fixture(scope="session")
def django_asgi_template(app_templates) -> Template:
    """The Django template, served through Django's ASGI handler (``mysite.asgi:application``), with
    pristine pages of its own (computed by a fresh start over ASGI)."""
    template = copy.copy(app_templates("django"))
    template.spec = dataclasses.replace(template.spec, app="mysite.asgi:application")
    template.pristine = None
    return template


@pytest.fixture
def django_asgi_app(django_asgi_template, tmp_path):
    app = RealApp(django_asgi_template, tmp_path)
    try:
        yield app
    finally:
        app.close()


@pytest.fixture
def flask_app(app_templates, tmp_path):
    yield from _real_app("flask", app_templates, tmp_path)


@pytest.fixture
def plain_app(app_templates, tmp_path):
    yield from _real_app("plain", app_templates, tmp_path)
