"""The tutorial's mysite/polls under `prefork mysite.wsgi:application --reload -w 2` (zero config).

Every test: serve, check the pages equal a fresh start's, save ONE kind of change, and every page on
every worker must become what a fresh start on the saved files serves (harness.assert_serves_like_fresh).
Pages: the class-based list and detail views, a function view showing model method, property and
fields, a page showing settings.SITE_TITLE, one listing admin.site's registry and list_display, and
the admin changelist itself (logged in through a session made by the generator).
"""

import pytest

from tests.realapps.apps import DJANGO_EDITS, DJANGO_FAILURES


@pytest.mark.parametrize("category", list(DJANGO_EDITS))
def test_save_is_served_like_a_fresh_start(django_app, category):
    django_app.run_edit(DJANGO_EDITS[category])


@pytest.mark.parametrize("failure", list(DJANGO_FAILURES))
def test_broken_save_keeps_old_pages_then_the_fix_is_served_like_a_fresh_start(django_app, failure):
    django_app.run_failure(DJANGO_FAILURES[failure])


def test_view_saves_resume_from_the_checkpoint_and_a_model_save_between_them_imports_afresh(django_app):
    """A fresh generation leaves a checkpoint before its warm-up (the app set up, no URLconf or view
    imported); a save of a file it did not load goes on from there, a save of one it did (models.py)
    imports the project afresh. Every step must serve what a fresh start serves."""
    server = django_app.serve("--log-level", "debug")
    paths = django_app.paths(DJANGO_EDITS["new_route"])
    before = django_app.assert_pristine(server, paths)
    server.wait_log(r"checkpoint of generation \d+ \(pid \d+\) ready")
    for number, (case, how) in enumerate(
        [("view", "resumed from its checkpoint"), ("model_property", "partial refused"),
         ("new_route", "resumed from its checkpoint"), ("settings", "partial refused|changed")], start=1):
        django_app.apply(DJANGO_EDITS[case])
        before = django_app.assert_like_fresh(server, paths, changed_from=before)
        server.wait_log(rf"reload #{number}: fresh generation \((?:[^)]*)(?:{how})")
