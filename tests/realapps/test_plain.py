"""A one-module WSGI app plus a helper (the quick sanity case), and the harness's own checks:
two fresh starts agree, a restart after a save passes, a server that did not reload fails with a
readable diff, a save that changes no page is refused as vacuous, saves move the mtime's second.
"""

import os

import pytest

from tests.realapps import harness
from tests.realapps.apps import FLASK_EDITS, PLAIN_EDITS, PLAIN_FAILURES


@pytest.mark.parametrize("category", list(PLAIN_EDITS))
def test_save_is_served_like_a_fresh_start(plain_app, category):
    plain_app.run_edit(PLAIN_EDITS[category])


@pytest.mark.parametrize("failure", list(PLAIN_FAILURES))
def test_broken_save_keeps_old_pages_then_the_fix_is_served_like_a_fresh_start(plain_app, failure):
    plain_app.run_failure(PLAIN_FAILURES[failure])


# --- the harness checks itself (no reloading involved) ------------------------------------------

@pytest.mark.parametrize("kind", ["plain", "django"])
def test_harness_a_fresh_start_serves_like_another_fresh_start(request, kind):
    app = request.getfixturevalue(f"{kind}_app")
    server = app.serve(reload=False)
    harness.assert_serves_like_fresh(server, app.dir, app.spec.app, app.spec.all_paths, timeout=5,
                                     headers=app.spec.headers)


@pytest.mark.parametrize("kind, category", [("plain", "view"), ("flask", "plugin")])
def test_harness_a_restart_after_a_save_serves_like_a_fresh_start(request, kind, category):
    app = request.getfixturevalue(f"{kind}_app")
    case = (PLAIN_EDITS if kind == "plain" else FLASK_EDITS)[category]
    server = app.serve(reload=False)
    before = app.assert_pristine(server, app.paths(case))
    app.apply(case)
    server.restart()
    harness.assert_serves_like_fresh(server, app.dir, app.spec.app, app.paths(case), timeout=5,
                                     headers=app.spec.headers, changed_from=before)


def test_harness_a_server_that_did_not_reload_fails_with_a_diff(plain_app):
    server = plain_app.serve(reload=False)
    plain_app.apply(PLAIN_EDITS["view"])
    with pytest.raises(AssertionError) as failure:
        harness.assert_serves_like_fresh(server, plain_app.dir, plain_app.spec.app, ["/", "/info"], timeout=1)
    message = str(failure.value)
    assert "did not serve the fresh start's pages within 1 s" in message
    assert "worker 0 (port" in message and "worker 1 (port" in message and "/info" in message
    assert "-plain wsgi app v2" in message and "+plain wsgi app v1" in message
    assert "--- server log" in message


def test_harness_refuses_a_save_that_changes_no_page(plain_app):
    server = plain_app.serve(reload=False)
    before = plain_app.assert_pristine(server, ["/"])
    plain_app.apply(PLAIN_EDITS["view"])  # changes /info only
    with pytest.raises(harness.HarnessError, match="changed no page"):
        harness.assert_serves_like_fresh(server, plain_app.dir, plain_app.spec.app, ["/"], changed_from=before)


@pytest.mark.parametrize("atomic", [False, True])
def test_harness_saves_move_the_mtime_to_a_new_second(tmp_path, atomic):
    path = tmp_path / "mod.py"
    path.write_text("X = 1\n")
    inode = path.stat().st_ino
    seconds = path.stat().st_mtime_ns // 10**9
    harness.edit(path, "X = 1", "X = 2", atomic=atomic)
    assert path.read_text() == "X = 2\n"
    assert path.stat().st_mtime_ns // 10**9 > seconds
    assert (path.stat().st_ino != inode) == atomic
    assert not [name for name in os.listdir(tmp_path) if name != "mod.py"]
    with pytest.raises(AssertionError, match="is not in"):
        harness.edit(path, "X = 1", "X = 3")
