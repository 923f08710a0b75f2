"""A partial reload is kept only when it is provably what a fresh import gives (prefork.generation).

Each case imports a small project in a fresh interpreter (a subprocess: the checks touch
sys.modules and the heap), edits one file, runs the partial reload with its checks, and reports
whether it was refused and why. The accepted case must serve the new code.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

RUNNER = textwrap.dedent('''\
    import json, os, sys
    root = sys.argv[1]
    sys.path.insert(0, root)
    from prefork.apps import resolve_app
    from prefork.generation import Recorder, Refused, _checked_reload, _reload_set
    from projectr.loader import Unit, execute

    recorder = Recorder(root)
    sys.addaudithook(recorder.audit)
    with recorder.recording():
        import framework            # "third-party": installed outside the project root
        resolve_app("app:app")      # as a generation imports the app
    for name, text in json.loads(sys.argv[2]).items():
        with open(os.path.join(root, name + ".py"), "w") as f:
            f.write(text)
    units = [[name, os.path.join(root, name + ".py"), False] for name in json.loads(sys.argv[3])]
    names = _reload_set(units, recorder)
    loaded = [Unit(p, n, pkg, open(p, "rb").read()) for n, p, pkg in names]
    try:
        served = _checked_reload(loaded, "app:app", recorder, execute)()
        print(json.dumps({"refused": None, "served": served, "modules": [n for n, _, _ in names]}))
    except Refused as exc:
        print(json.dumps({"refused": str(exc)}))
''')

BASE = {
    "registry": "PLUGINS = []\nSETTINGS = {'debug': False}\nFLAG = 'off'\n",
    "plugin": "import registry\nregistry.PLUGINS.append('tax')\n",
    "helper": "def word():\n    return 'one'\n",
    "app": "import registry, plugin\nfrom helper import word\n\ndef app():\n"
           "    return f'{word()} {len(registry.PLUGINS)} {registry.FLAG}'\n",
}


def run(tmp_path: Path, edits: dict[str, str], reload: list[str], extra: dict[str, str] | None = None,
        framework: str = "") -> dict:
    root = tmp_path / "proj"
    root.mkdir()
    for name, text in {**BASE, **(extra or {})}.items():
        (root / f"{name}.py").write_text(text)
    # The "framework" lives outside the project root, as an installed package would.
    outside = tmp_path / "site"
    outside.mkdir()
    (outside / "framework.py").write_text(framework or "HELD = []\n")
    script = tmp_path / "runner.py"
    script.write_text(RUNNER)
    env_path = f"{outside}:{Path(__file__).resolve().parents[2]}"
    result = subprocess.run([sys.executable, str(script), str(root), json.dumps(edits), json.dumps(reload)],
                            capture_output=True, text=True, timeout=60, env={"PYTHONPATH": env_path})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_an_edit_whose_dependents_are_all_reloaded_is_kept_and_served(tmp_path):
    report = run(tmp_path, {"helper": "def word():\n    return 'two'\n"}, ["helper", "app"])
    assert report["refused"] is None
    assert report["served"] == "two 1 off" and report["modules"] == ["helper", "app"]


def test_a_plugin_that_registers_itself_again_is_refused(tmp_path):
    report = run(tmp_path, {"plugin": "import registry\nregistry.PLUGINS.append('vat')\n"}, ["plugin", "app"])
    assert report["refused"] == "registry.PLUGINS changed size while the reloaded modules ran"


def test_a_setting_left_behind_by_a_removed_line_is_refused(tmp_path):
    extra = {"plugin": "import registry\nregistry.FLAG = 'on'\n"}
    report = run(tmp_path, {"plugin": "import registry\nregistry.FLAG = 'still on'\n"}, ["plugin", "app"], extra)
    assert report["refused"] == "registry.FLAG was rebound while the reloaded modules ran"


def test_old_code_kept_by_an_object_outside_the_set_is_refused(tmp_path):
    framework = "class Hook:\n    fn = None\n\nHOOK = Hook()\n"
    extra = {"helper": "import framework\n\ndef word():\n    return 'one'\n\nframework.HOOK.fn = word\n"}
    # The edit drops the line that set the hook: a fresh start would have no hook; the old
    # function stays reachable from the framework's object, and the check says so.
    report = run(tmp_path, {"helper": "def word():\n    return 'two'\n"}, ["helper", "app"], extra, framework)
    assert report["refused"].startswith("helper.word is still referenced by objects outside"), report


def test_a_module_imported_by_third_party_code_is_refused(tmp_path):
    framework = "import importlib\nSETTINGS = importlib.import_module('helper')\n"
    report = run(tmp_path, {"helper": "def word():\n    return 'two'\n"}, ["helper", "app"], framework=framework)
    assert report["refused"] == "helper is imported by framework"


def test_a_warning_during_the_reload_is_refused(tmp_path):
    edit = "import warnings\nwarnings.warn('registered twice', RuntimeWarning)\ndef word():\n    return 'two'\n"
    report = run(tmp_path, {"helper": edit}, ["helper", "app"])
    assert report["refused"] == "helper.py:2: RuntimeWarning: registered twice"


@pytest.mark.parametrize("edit", ["def word(:\n", "def word():\n    return undefined_name\nword()\n"])
def test_an_error_during_the_reload_raises(tmp_path, edit):
    root = tmp_path / "proj"
    with pytest.raises(AssertionError, match="LoadError"):
        run(tmp_path, {"helper": edit}, ["helper", "app"])
    assert root.exists()
