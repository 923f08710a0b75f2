"""The tutorial's mysite/polls under `prefork mysite.wsgi:application --reload -w 2` (zero config).

Every test: serve, check the pages equal a fresh start's, save ONE kind of change, and every page on
every worker must become what a fresh start on the saved files serves (harness.assert_serves_like_fresh).
Pages: the class-based list and detail views, a function view showing model method, property and
fields, a page showing settings.SITE_TITLE, one listing admin.site's registry and list_display, and
the admin changelist itself (logged in through a session made by the generator).
"""

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from tests.realapps import harness
from tests.reliability.harness import process_alive, session_members
from tests.realapps.apps import DJANGO_EDITS, DJANGO_FAILURES


@pytest.mark.parametrize("category", list(DJANGO_EDITS))
def test_save_is_served_like_a_fresh_start(django_app, category):
    django_app.run_edit(DJANGO_EDITS[category])


@pytest.mark.parametrize("failure", list(DJANGO_FAILURES))
def test_broken_save_keeps_old_pages_then_the_fix_is_served_like_a_fresh_start(django_app, failure):
    django_app.run_failure(DJANGO_FAILURES[failure])


def test_view_saves_resume_from_the_checkpoint_and_a_model_save_between_them_imports_afresh(django_app):
    """While the server is idle, a generation from the base sets the app up and leaves a checkpoint
    (no URLconf or view imported); a save of a file it did not load goes on from there, a save of one
    it did (models.py) imports the project afresh, and a new checkpoint is made once that is served.
    Every step must serve what a fresh start serves."""
    server = django_app.serve("--log-level", "debug")
    paths = django_app.paths(DJANGO_EDITS["new_route"])
    before = django_app.assert_pristine(server, paths)
    since = 0  # the log after the last reload from the base: its checkpoint comes after it
    for number, (case, how) in enumerate(
        [("view", "resumed from its checkpoint"), ("model_property", "partial refused"),
         ("new_route", "resumed from its checkpoint"), ("settings", "partial refused|changed")], start=1):
        if how.startswith("resumed"):
            server.wait_log(r"checkpoint of generation \d+ \(pid \d+\) ready", since=since)
        mark = len(server.log_text())
        django_app.apply(DJANGO_EDITS[case])
        before = django_app.assert_like_fresh(server, paths, changed_from=before)
        line = server.wait_log(rf"reload #{number}: fresh generation \((?:[^)]*)(?:{how})", since=mark)
        if not how.startswith("resumed"):
            since = mark + line.end()
    # made apart from the generations that serve: none of them paid for a checkpoint on its way
    made = set(re.findall(r"checkpoint of generation (\d+) \(pid", server.log_text()))
    serving = set(re.findall(r"asked generation (\d+) for worker", server.log_text()))
    assert made and serving and not made & serving, (made, serving)


def test_a_save_while_the_checkpoint_is_made_leaves_no_stale_checkpoint(django_app):
    """models.py is saved while the idle server's checkpoint is importing it (a sleep in models.py
    makes that moment long): that checkpoint is dropped, and a view save after it serves the saved
    models, as a fresh start would."""
    server = django_app.serve("--log-level", "debug")
    paths = django_app.paths(DJANGO_EDITS["view"])
    before = django_app.assert_pristine(server, paths)
    server.wait_log(r"checkpoint of generation \d+ \(pid \d+\) ready")
    models = django_app.dir / "polls/models.py"
    original = models.read_text()
    slow = original.replace("from django.utils import timezone\n",
                            "from django.utils import timezone\nimport time\ntime.sleep(2)\n", 1)
    mark = server.log_mark()
    harness.write_file(models, slow)
    line = server.wait_log(r"reload #1: fresh generation", since=mark)
    server.wait_log(r"a checkpoint of generation \d+'s set-up state is being made", since=mark + line.end())
    # ... and it sleeps in models.py now: the sleep goes, and the model's property changes
    change = DJANGO_EDITS["model_property"].changes[0]
    mark = server.log_mark()
    harness.write_file(models, original.replace(change.old, change.new, 1))
    line = server.wait_log(r"reload #2: fresh generation", since=mark)
    server.wait_log(r"checkpoint of generation \d+ \(pid \d+\) ready", since=mark + line.end())
    django_app.apply(DJANGO_EDITS["view"])
    django_app.assert_like_fresh(server, paths, changed_from=before)
    server.wait_log(r"reload #3: fresh generation \([^)]*resumed from its checkpoint")


def test_a_stop_while_the_checkpoint_is_made_leaves_no_process_behind(django_app):
    """SIGTERM to the master while the idle server's checkpoint is importing (a sleep in models.py):
    the master exits cleanly and nothing of its session is left."""
    models = django_app.dir / "polls/models.py"
    harness.write_file(models, models.read_text().replace(
        "from django.utils import timezone\n", "from django.utils import timezone\nimport time\ntime.sleep(1)\n", 1))
    server = django_app.serve("--log-level", "debug")
    server.wait_log(r"a checkpoint of generation \d+'s set-up state is being made", timeout=30)
    master = server.proc.pid
    os.kill(master, signal.SIGTERM)
    assert server.proc.wait(timeout=15) == 0, server.log_tail()
    deadline = time.monotonic() + 5
    while session_members(master) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert session_members(master) == set(), server.log_tail()


def test_a_full_reload_drops_the_checkpoint_of_the_old_base(django_app):
    """`prefork ctl reload --full` rebuilds the base: the checkpoint made from the old one goes, a new
    one is made from the new base, and a view save resumes from it, served like a fresh start."""
    server = django_app.serve("--log-level", "debug")
    paths = django_app.paths(DJANGO_EDITS["view"])
    before = django_app.assert_pristine(server, paths)
    first = server.wait_log(r"checkpoint of generation (\d+) \(pid (\d+)\) ready")
    mark = server.log_mark()
    subprocess.run([sys.executable, "-m", "prefork", "ctl", "--pid", str(server.pid_file), "reload", "--full"],
                   check=True, capture_output=True, timeout=30)
    line = server.wait_log(r"reload #1: fresh generation", since=mark)
    again = server.wait_log(r"checkpoint of generation (\d+) \(pid (\d+)\) ready", since=mark + line.end())
    assert again.group(2) != first.group(2)
    wait_gone = time.monotonic() + 5
    while process_alive(int(first.group(2))) and time.monotonic() < wait_gone:
        time.sleep(0.05)
    assert not process_alive(int(first.group(2))), "the old base's checkpoint is still running"
    django_app.apply(DJANGO_EDITS["view"])
    django_app.assert_like_fresh(server, paths, changed_from=before)
    server.wait_log(r"reload #2: fresh generation \([^)]*resumed from its checkpoint")
