"""Reload edge cases through a small program of our own: server.watch(), a worker whose on_start
fails after a good load, a stop while a new generation hangs, a callable app, reloads during a reload."""
from __future__ import annotations

import os
import re
import signal
import textwrap
from pathlib import Path

from tests.integration.integration_util import PYTHON, SUCCESS_LINE, http_get, new_generation, process_state, save, wait_for

PROGRAM = textwrap.dedent('''\
    import importlib, logging, signal, sys
    from projectr import Project
    from prefork.server.projectr import ProjectrServer

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    project_file, port, app, partial = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4] == "partial"


    class RefuseBoom:
        def on_start(self):
            if importlib.import_module("myproject.version").VERSION == "boom":
                raise RuntimeError("refusing to start on version boom")
            super().on_start()


    project = Project.from_file(project_file)
    if app == "callable":  # imported in the master by the user's script: served all the same
        sys.path.insert(0, project.root)
        app = importlib.import_module("myproject.app").application
    server = ProjectrServer(project=project, app=app, workers=2, host="127.0.0.1", port=port,
                            worker_mixins=[RefuseBoom], reload_timeout=1.0, partial=partial)
    server.watch(project.watch_changes())
    server.start()
    ''')


def start(launcher, project_copy: Path, app: str = "myproject.app:application", partial: bool = True):
    script = project_copy.parent / "program.py"
    script.write_text(PROGRAM)

    def command(port: int) -> list[str]:
        return [PYTHON, str(script), str(project_copy / "project.py"), str(port), app,
                "partial" if partial else "no-partial"]

    return launcher.start(command, workers=2)


def test_watch_helper_and_callable_app_serve_reloaded_code(launcher, project_copy):
    server = start(launcher, project_copy, app="callable")
    save(project_copy / "myproject/version.py", 'VERSION = "2.0"\n')
    server.wait_all(lambda s: s["version"] == "2.0" and s["generation"] == 1, "the edit served")
    # A change of app.py itself: the callable is looked up again in the reloaded module.
    app_py = project_copy / "myproject/app.py"
    save(app_py, app_py.read_text().replace(
        '    view = ROUTES.get(', '    environ["PATH_INFO"] = {"/v": "/status.json"}.get(environ.get("PATH_INFO"), '
        'environ.get("PATH_INFO"))\n    view = ROUTES.get('))
    wait_for(lambda: all(http_get(p, "/v")[0] == 200 for p in server.ports), what="the new app code")


def test_worker_on_start_failure_after_a_good_load_keeps_the_old_generation(launcher, project_copy):
    server = start(launcher, project_copy)
    pids = {s["pid"] for s in server.statuses()}
    save(project_copy / "myproject/version.py", 'VERSION = "boom"\n')
    server.wait_log(r"reload #1 failed: \?: the new workers did not start: .*\n"
                    r"  still serving generation 0")
    current = server.statuses()
    assert {s["pid"] for s in current} == pids and all(s["version"] == "1.0" for s in current)
    # Nothing was committed: a worker that dies now is replaced from the generation that serves,
    # never from the new code that could not start (the old design's "commit before proof").
    victim = current[0]["pid"]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: victim not in {s["pid"] for s in server.statuses()}, what="the replacement")
    assert all(s["version"] == "1.0" and s["generation"] == 0 for s in server.statuses())
    save(project_copy / "myproject/version.py", 'VERSION = "fine"\n')
    server.wait_all(lambda s: s["version"] == "fine", "recovery after the on_start failure")


def test_stop_while_a_generation_hangs_exits_cleanly(launcher, project_copy):
    server = start(launcher, project_copy)
    save(project_copy / "myproject/version.py", "import time\ntime.sleep(60)\n")
    hung = wait_for(lambda: new_generation(server.proc.pid), what="the new generation to start")
    server.signal(signal.SIGTERM)
    assert server.proc.wait(timeout=10) == 0
    assert f"reload #1 abandoned: the server is stopping (generation pid {hung} killed)" in server.log()
    wait_for(lambda: process_state(hung) in ("gone", "Z"), what="the hung generation gone")


def test_hang_in_a_c_call_names_the_file_and_line(launcher, project_copy):
    server = start(launcher, project_copy)
    save(project_copy / "myproject/settings.py", 
        "import time\n\nSITE_NAME = 'x'\ntime.sleep(60)\n")
    server.wait_log(r"reload #1 failed: \S*settings\.py:4: hung: the import did not finish within 1 s")
    assert all(s["version"] == "1.0" for s in server.statuses())


def test_edits_during_a_reload_are_coalesced_into_one_more(launcher, project_copy):
    server = start(launcher, project_copy)
    path = project_copy / "myproject/version.py"
    # The first edit hangs its generation for a while; the next edits arrive meanwhile.
    save(path, 'import time\ntime.sleep(0.5)\nVERSION = "slow"\n')
    wait_for(lambda: new_generation(server.proc.pid), what="the new generation to start")
    for n in range(5):
        save(path, f'VERSION = "after-{n}"\n')
    server.wait_all(lambda s: s["version"] == "after-4", "the last edit served")
    server.wait_log(r"reload #1: ")  # logged once the roll is complete
    log = server.log()
    assert 1 <= len(re.findall(r"reload #\d+: ", log)) <= 2, log
    assert "failed" not in log and "slow" not in {s["version"] for s in server.statuses()}


def test_with_partial_reloads_off_every_change_imports_afresh(launcher, project_copy):
    server = start(launcher, project_copy, partial=False)
    save(project_copy / "myproject/version.py", 'VERSION = "direct"\n')
    server.wait_all(lambda s: s["version"] == "direct", "the edit served")
    line = server.wait_log(r"reload #1: fresh generation \(partial reloads are off\) in \d+ ms")
    assert SUCCESS_LINE.match(server.messages()[-1]), line
    pids = {s["pid"] for s in server.statuses()}
    save(project_copy / "myproject/version.py", "VERSION = nope\n")
    server.wait_log(r"reload #2 failed: \S*version\.py:1: NameError")
    assert {s["pid"] for s in server.statuses()} == pids


def test_a_hung_generation_and_the_base_die_with_a_killed_master(launcher, project_copy):
    server = start(launcher, project_copy)
    save(project_copy / "myproject/version.py", "while True:\n    pass\n")
    hung = wait_for(lambda: new_generation(server.proc.pid), what="the new generation to start")
    helpers = [int(p) for p in Path(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children").read_text().split()]
    server.signal(signal.SIGKILL)
    server.proc.wait(timeout=10)
    for pid in [hung, *helpers]:  # base, generations and workers: none outlives the master
        wait_for(lambda pid=pid: process_state(pid) in ("gone", "Z"), what=f"orphan {pid} to die")
