"""The "shop" app factory under `prefork wsgi:app --reload -w 2` (zero config), and with a
project.py that only lists its files (`--project project.py --reload`).

Every test: serve, check the pages equal a fresh start's, save ONE kind of change, and every page on
every worker must become what a fresh start on the saved files serves (harness.assert_serves_like_fresh).
The hard cases are state owned by one module and filled by another: SQLAlchemy's MetaData (a new
column, a duplicate table), the plugin list (the tax plugin must be listed once, with the new rate),
the `db` object's own module, an Enum used for identity checks, a config class read by string.
"""

import pytest

from tests.realapps import harness
from tests.realapps.apps import FLASK_EDITS, FLASK_FAILURES, FLASK_PROJECT_PY


@pytest.mark.parametrize("category", list(FLASK_EDITS))
def test_save_is_served_like_a_fresh_start(flask_app, category):
    flask_app.run_edit(FLASK_EDITS[category])


@pytest.mark.parametrize("failure", list(FLASK_FAILURES))
def test_broken_save_keeps_old_pages_then_the_fix_is_served_like_a_fresh_start(flask_app, failure):
    flask_app.run_failure(FLASK_FAILURES[failure])


@pytest.mark.parametrize("category", ["view", "plugin", "child_template"])
def test_project_file_mode_save_is_served_like_a_fresh_start(flask_app, category):
    harness.write_file(flask_app.dir / "project.py", FLASK_PROJECT_PY.lstrip("\n"))
    flask_app.run_edit(FLASK_EDITS[category],
                       serve=lambda: flask_app.serve("--project", "project.py"))
