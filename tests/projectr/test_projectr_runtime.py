"""What load() observes while modules execute: imports made at run time become edges."""
from __future__ import annotations

import builtins
import importlib
import sys

import pytest

from projectr import LoadError
from projectr_testutil import tree  # noqa: F401  (tree is a fixture)

_original_import = builtins.__import__
_original_gcd = importlib._bootstrap._gcd_import  # type: ignore[attr-defined]


def _files(tree, *names):
    return [str(tree.path(f"PKG/{n}.py")) for n in names]


def _registry_project(tree, app_first: bool = False):
    """app calls registry.autodiscover() at import time, which imports plugin inside the function;
    dyn and dyn2 reach settings only through importlib.import_module."""
    tree.write("PKG/__init__.py", "")
    tree.write("PKG/settings.py", "DEBUG = 1\n")
    tree.write("PKG/plugin.py", "NAME = 'one'\n")
    tree.write("PKG/registry.py", "def autodiscover():\n    from . import plugin\n    return plugin.NAME\n")
    tree.write("PKG/app.py", "from . import registry\nFOUND = registry.autodiscover()\n")
    tree.write("PKG/dyn.py", "import importlib\nS = importlib.import_module('PKG.settings').DEBUG\n")
    tree.write("PKG/dyn2.py", "from importlib import import_module\nS = import_module('.settings', __package__).DEBUG\n")
    p = tree.project()
    with p.directory(tree.pkg):
        p.file("__init__")
        if app_first:
            p.file("registry")
            p.file("app")  # declared before plugin: its run-time edge points backwards
        for name in ("settings", "plugin", "registry", "app", "dyn", "dyn2"):
            p.file(name)
    return p


def test_an_import_inside_a_function_called_at_load_time_is_an_edge(tree):
    p = _registry_project(tree)
    plugin, registry, app = _files(tree, "plugin", "registry", "app")
    assert p.affected([plugin]) == [plugin]  # the source scan cannot see it
    p.load()
    assert p.affected([plugin]) == [plugin, app]
    assert p.graph.edges[plugin, app]["kind"] == "runtime"
    assert not p.graph.has_edge(plugin, registry)  # registry's own load never imported plugin
    tree.write("PKG/plugin.py", "NAME = 'two'\n")
    assert p.load() == [plugin, app]
    assert sys.modules[f"{tree.pkg}.app"].FOUND == "two"


def test_import_module_calls_are_edges(tree):
    p = _registry_project(tree)
    settings, dyn, dyn2 = _files(tree, "settings", "dyn", "dyn2")
    p.load()
    assert p.affected([settings]) == [settings, dyn, dyn2]
    tree.write("PKG/settings.py", "DEBUG = 2\n")
    assert p.load() == [settings, dyn, dyn2]
    assert sys.modules[f"{tree.pkg}.dyn"].S == sys.modules[f"{tree.pkg}.dyn2"].S == 2


def test_an_import_module_bound_before_the_load_is_seen(tree):
    """Django's setup() imports the settings module with an import_module it imported long ago."""
    helper = tree.write("site/runtime_helper_PKG.py",
                        "from importlib import import_module\ndef setup(name):\n    return import_module(name)\n")
    sys.path.insert(0, str(tree.root / "site"))
    importlib.import_module(f"runtime_helper_{tree.pkg}")
    try:
        tree.write("PKG/__init__.py", "")
        tree.write("PKG/settings.py", "X = 1\n")
        tree.write("PKG/wsgi.py", f"import runtime_helper_{tree.pkg} as h\nX = h.setup('{tree.pkg}.settings').X\n")
        p = tree.project()
        with p.directory(tree.pkg):
            p.file("__init__")
            p.file("settings")
            p.file("wsgi")
        p.load()
        assert p.affected(_files(tree, "settings")) == _files(tree, "settings", "wsgi")
    finally:
        del sys.modules[f"runtime_helper_{tree.pkg}"]
        assert helper


def test_a_backward_run_time_edge_reorders_the_load(tree):
    p = _registry_project(tree, app_first=True)
    plugin, app = _files(tree, "plugin", "app")
    p.load()
    tree.write("PKG/plugin.py", "NAME = 'three'\n")
    assert p.load() == [plugin, app]  # plugin first, though app was declared before it
    assert sys.modules[f"{tree.pkg}.app"].FOUND == "three"


def test_run_time_edges_follow_the_last_successful_run(tree):
    p = _registry_project(tree)
    plugin, app = _files(tree, "plugin", "app")
    p.load()
    tree.write("PKG/app.py", "from . import registry\nFOUND = None\n")  # stops calling autodiscover
    assert p.load() == [app]
    assert not p.graph.has_edge(plugin, app)
    tree.write("PKG/app.py", "from . import registry\nFOUND = registry.autodiscover()\nraise RuntimeError\n")
    with pytest.raises(LoadError):
        p.load()
    assert not p.graph.has_edge(plugin, app)  # a failed run teaches nothing
    tree.write("PKG/app.py", "from . import registry\nFOUND = registry.autodiscover()\n")
    p.load()
    assert p.graph.edges[plugin, app]["kind"] == "runtime"


def test_the_import_hooks_exist_only_during_load(tree):
    p = _registry_project(tree)
    p.load()
    assert builtins.__import__ is _original_import
    assert importlib._bootstrap._gcd_import is _original_gcd  # type: ignore[attr-defined]
    tree.write("PKG/app.py", "raise RuntimeError\n")
    with pytest.raises(LoadError):
        p.load()
    assert builtins.__import__ is _original_import
    assert importlib._bootstrap._gcd_import is _original_gcd  # type: ignore[attr-defined]


REGISTRY = '''
import warnings
REG = {}
def register(name, module):
    """Like Django's apps.register_model: warn on a re-registration, raise on a conflict."""
    if name in REG and REG[name] != module:
        raise RuntimeError(f"Conflicting {name!r}: {REG[name]} and {module}")
    if name in REG:
        warnings.warn(f"{name!r} was already registered", RuntimeWarning)
    REG[name] = module
'''


@pytest.fixture
def registry(tree):
    """A third-party registry (outside the project, so it is never reloaded)."""
    tree.write("site/registry_PKG.py", REGISTRY)
    sys.path.insert(0, str(tree.root / "site"))
    yield f"registry_{tree.pkg}"
    sys.modules.pop(f"registry_{tree.pkg}", None)


def _models_project(tree):
    tree.write("PKG/__init__.py", "")
    models = tree.write("PKG/models.py", "import registry_PKG\nX = 1\nregistry_PKG.register('thing', __name__)\n")
    p = tree.project()
    with p.directory(tree.pkg):
        p.file("__init__")
        p.file("models")
    return p, models


def test_a_reload_that_re_registers_state_reports_the_warning(tree, registry, caplog):
    import warnings
    p, models = _models_project(tree)
    with warnings.catch_warnings():
        warnings.simplefilter("default")  # a normal process: each warning shown once per location
        p.load()
        assert p.last_load_warnings == []
        for x in (2, 3):  # every reload re-registers: every reload says so
            tree.write("PKG/models.py", f"import registry_PKG\nX = {x}\nregistry_PKG.register('thing', __name__)\n")
            caplog.clear()
            with caplog.at_level("WARNING", logger="projectr"):
                assert p.load() == [models]
            expected = f"{models}:3: RuntimeWarning: 'thing' was already registered"
            assert p.last_load_warnings == [expected]
            logged = [r.getMessage() for r in caplog.records if r.name == "projectr"]
            assert any(f"{tree.pkg}.models" in m and expected in m for m in logged), logged
    assert p.load() == [] and p.last_load_warnings == []


def test_warnings_outside_load_are_shown_as_usual(tree, registry):
    import warnings
    p, _ = _models_project(tree)
    p.load()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.warn("not ours", UserWarning)
    assert [str(w.message) for w in caught] == ["not ours"]
    assert warnings.showwarning is warnings._showwarning_orig  # type: ignore[attr-defined]


def test_a_conflicting_registration_is_a_load_error_naming_file_and_line(tree, registry):
    p, models = _models_project(tree)
    p.load()
    tree.write("PKG/models.py", "import registry_PKG\nX = 3\nregistry_PKG.register('thing', 'elsewhere')\n")
    with pytest.raises(LoadError) as info:
        p.load()
    assert str(info.value).startswith(f"{models}:3: RuntimeError: Conflicting 'thing'")


DJANGO_SETTINGS = "SECRET_KEY = 'x'\nINSTALLED_APPS = ['PKG.shop']\nUSE_TZ = True\n"
DJANGO_MODELS = ("from django.db import models\n\n\nclass Thing(models.Model):\n"
                 "    name = models.CharField(max_length=10)\n")
DJANGO_RUN = '''
import json, os, sys
from projectr import LoadError, Project
p = Project("django-PKG", root=os.getcwd())
with p.directory("PKG"):
    p.file("__init__")
    p.file("settings")
    p.file("wsgi")
    with p.directory("shop"):
        p.file("__init__")
        p.file("models")
        p.file("other")
p.load()
out = {"first": p.last_load_warnings}
with open("PKG/shop/models.py", "a") as f:
    f.write("# edited\\n")
p.load()
out["reload"] = p.last_load_warnings
with open("PKG/shop/other.py", "w") as f:
    f.write("from django.db import models\\n\\n\\nclass Thing(models.Model):\\n    class Meta:\\n        app_label = 'shop'\\n")
try:
    p.load()
except LoadError as exc:
    out["conflict"] = str(exc)
print(json.dumps(out))
'''


def test_django_model_re_registration_is_reported(tree):
    """The real thing: Django warns when a reload registers a model again, raises on a conflict."""
    import json
    pytest.importorskip("django")
    from projectr_testutil import run_python
    tree.write("PKG/__init__.py", "")
    tree.write("PKG/settings.py", DJANGO_SETTINGS)
    tree.write("PKG/wsgi.py", "import os\nos.environ.setdefault('DJANGO_SETTINGS_MODULE', 'PKG.settings')\n"
                              "import django\ndjango.setup()\n")
    tree.write("PKG/shop/__init__.py", "")
    models = tree.write("PKG/shop/models.py", DJANGO_MODELS)
    other = tree.write("PKG/shop/other.py", "")
    result = run_python(DJANGO_RUN.replace("PKG", tree.pkg), cwd=tree.root, extra_args=["-B"])
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["first"] == []
    assert len(out["reload"]) == 1 and out["reload"][0].startswith(
        f"{models}:4: RuntimeWarning: Model 'shop.thing' was already registered.")
    assert "was already registered" in result.stderr  # logged at WARNING (Python's last-resort handler)
    assert out["conflict"].startswith(f"{other}:4: RuntimeError: Conflicting 'thing' models in application 'shop'")
