"""How a reload is planned: respawn, partial or fresh (prefork.server.strategy; pure logic)."""
from __future__ import annotations

from pathlib import Path

import pytest

from prefork.server.strategy import plan_reload


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, str]:
    names = ["app.py", "views.py", "models.py", "lazy.py", "page.html", "config.json", "project.py"]
    for name in names:
        (tmp_path / name).write_text("")
    return {name: str(tmp_path / name) for name in names} | {"root": str(tmp_path)}


def plan(tree, changed, *, loaded=("app.py", "views.py", "models.py"), opened=("config.json",),
         refused=(), full=False):
    graph = {"models.py": ["models.py", "views.py", "app.py"], "views.py": ["views.py", "app.py"],
             "app.py": ["app.py"], "lazy.py": ["lazy.py"]}

    def affected(paths):
        out = []
        for path in paths:
            for name in graph[Path(path).name]:
                if tree[name] not in out:
                    out.append(tree[name])
        return out

    sources = {tree[n] for n in ("app.py", "views.py", "models.py", "lazy.py")}
    return plan_reload([tree[c] if c in tree else c for c in changed], sources=sources,
                       loaded={tree[n] for n in loaded}, opened={tree[n] for n in opened},
                       affected=affected, refused={tree[n] for n in refused}, root=tree["root"],
                       definition_file=tree["project.py"], full=full)


def test_a_loaded_module_is_reloaded_partially_with_its_loaded_dependents(tree):
    result = plan(tree, ["models.py"])
    assert result.kind == "partial"
    assert result.modules == (tree["models.py"], tree["views.py"], tree["app.py"])


def test_a_module_the_generation_never_imported_needs_only_new_workers(tree):
    assert plan(tree, ["lazy.py"]).kind == "respawn"
    assert plan(tree, ["page.html"]).kind == "respawn"


def test_files_read_at_import_new_removed_or_the_definition_need_a_fresh_generation(tree, tmp_path):
    assert plan(tree, ["config.json"]).reason == "config.json was read while the app was imported"
    new = tmp_path / "new.py"
    new.write_text("")
    assert plan(tree, [str(new)]).reason == "new.py is new"
    assert plan(tree, [str(tmp_path / "gone.py")]).reason == "gone.py was removed"
    assert plan(tree, ["project.py"]).kind == "fresh"


def test_signals_full_reloads_and_earlier_refusals_go_fresh(tree):
    assert plan(tree, []).reason == "reload requested"
    assert plan(tree, ["views.py"], full=True).reason == "a full reload was asked for"
    assert plan(tree, ["views.py"], refused=["views.py"]).reason == "partial refused before for views.py"


def test_a_module_imported_by_code_outside_the_project_goes_fresh_without_a_try(tree):
    foreign = {tree["models.py"]: ["models", "django.apps.config"]}
    result = plan_reload([tree["models.py"]], sources={tree[n] for n in ("app.py", "views.py", "models.py")},
                         loaded={tree["models.py"], tree["views.py"], tree["app.py"]}, opened=set(),
                         affected=lambda paths: [tree["models.py"], tree["views.py"], tree["app.py"]],
                         refused=set(), root=tree["root"], foreign=foreign)
    assert (result.kind, result.reason) == ("fresh", "partial refused: models is imported by django.apps.config")
