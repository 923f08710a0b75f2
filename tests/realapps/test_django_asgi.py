"""The tutorial's mysite/polls through Django's ASGI handler: `prefork mysite.asgi:application --reload
-w 2` (zero config: the interface is detected), each worker running uvicorn.

The same edits and checks as test_django.py (every page on every worker must become what a fresh start
over ASGI serves on the saved files), and the ASGI handler must serve what the WSGI handler serves.
"""

import pytest

from tests.realapps import harness
from tests.realapps.apps import DJANGO_EDITS, DJANGO_FAILURES
from tests.realapps.conftest import RealApp
from tests.integration.integration_util import process_title
from tests.reliability.harness import session_members

pytest.importorskip("uvicorn", reason="the asgi extra (pip install -e '.[asgi]') is not installed")


@pytest.mark.parametrize("category", ["view", "model_property", "settings", "child_template"])
def test_save_over_asgi_is_served_like_a_fresh_start(django_asgi_app, category):
    django_asgi_app.run_edit(DJANGO_EDITS[category])


def test_broken_save_over_asgi_keeps_old_pages_then_the_fix_is_served_like_a_fresh_start(django_asgi_app):
    django_asgi_app.run_failure(DJANGO_FAILURES["name_error"])


def test_the_asgi_handler_serves_what_the_wsgi_handler_serves_and_a_view_save_resumes_from_the_checkpoint(
        django_asgi_app, app_templates, tmp_path):
    """Pristine pages over ASGI equal those of a fresh start over WSGI; then, once the idle server's
    checkpoint is made, a view save is served from it (the millisecond path) like a fresh start."""
    server = django_asgi_app.serve("--log-level", "debug")
    paths = django_asgi_app.paths(DJANGO_EDITS["view"])
    (tmp_path / "wsgi").mkdir()
    over_wsgi = RealApp(app_templates("django"), tmp_path / "wsgi")
    try:
        expected = over_wsgi.pristine_pages(paths)  # a fresh start of mysite.wsgi:application
    finally:
        over_wsgi.close()
    harness.assert_serves(server, expected, paths, headers=django_asgi_app.spec.headers,
                          what="the pages a fresh start over WSGI serves")
    titles = map(process_title, session_members(server.proc.pid))
    workers = [title for title in titles if title.startswith("prefork worker")]
    # every worker runs uvicorn (old ones of a roll may still be draining: 2 or more)
    assert len(workers) >= 2 and all("(asgi)" in title for title in workers), workers
    server.wait_log(r"checkpoint of generation \d+ \(pid \d+\) ready")
    mark = server.log_mark()
    before = django_asgi_app.pristine_pages(paths)
    django_asgi_app.apply(DJANGO_EDITS["view"])
    django_asgi_app.assert_like_fresh(server, paths, changed_from=before)
    server.wait_log(r"reload #1: fresh generation \([^)]*resumed from its checkpoint", since=mark)

