"""The generated FastAPI app under ``prefork main:app --reload -w 2`` (zero config, the interface detected).

Every test: serve, check the pages equal a fresh start's, save ONE kind of change, and every page on
every worker must become what a fresh start on the saved files serves (tests/realapps' harness).
A broken save keeps the old pages served; its fix is then served like a fresh start. The edits that
are a broken save's fix (the router view, the service) are checked there only: a server start less each.
"""

import pytest

from tests.asgi.fastapi_app import FASTAPI_EDITS, FASTAPI_FAILURES

FIXES = {id(failure.fix) for failure in FASTAPI_FAILURES.values()}


@pytest.mark.parametrize("category", [name for name, case in FASTAPI_EDITS.items() if id(case) not in FIXES])
def test_fastapi_save_is_served_like_a_fresh_start(fastapi_app, category):
    fastapi_app.run_edit(FASTAPI_EDITS[category])


@pytest.mark.parametrize("failure", list(FASTAPI_FAILURES))
def test_fastapi_broken_save_keeps_old_pages_then_the_fix_is_served_like_a_fresh_start(fastapi_app, failure):
    fastapi_app.run_failure(FASTAPI_FAILURES[failure])
