"""Reload edge cases through a small program of our own: server.watch(), a worker whose on_start
fails after a good load, a stop while a trial hangs, a callable app, reloads during a reload."""
from __future__ import annotations

import re
import signal
import textwrap
from pathlib import Path

from conftest import PYTHON, SUCCESS_LINE, http_get, process_state, save, trial_child, wait_for

PROGRAM = textwrap.dedent('''\
    import importlib, logging, signal, sys
    from projectr import Project
    from prefork.server.projectr import ProjectrServer

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    project_file, port, app, trial = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4] == "trial"


    class RefuseBoom:
        def on_start(self):
            if importlib.import_module("myproject.version").VERSION == "boom":
                raise RuntimeError("refusing to start on version boom")
            super().on_start()


    project = Project.from_file(project_file)
    project.load()
    if app == "callable":
        app = importlib.import_module("myproject.app").application
    server = ProjectrServer(project=project, app=app, workers=2, host="127.0.0.1", port=port,
                            worker_mixins=[RefuseBoom], reload_timeout=1.0, trial=trial)
    server.watch(project.watch_changes())
    server.start()
    ''')


def start(launcher, project_copy: Path, app: str = "myproject.app:application", trial: bool = True):
    script = project_copy.parent / "program.py"
    script.write_text(PROGRAM)

    def command(port: int) -> list[str]:
        return [PYTHON, str(script), str(project_copy / "project.py"), str(port), app,
                "trial" if trial else "no-trial"]

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
    save(project_copy / "myproject/version.py", 'VERSION = "fine"\n')
    server.wait_all(lambda s: s["version"] == "fine", "recovery after the on_start failure")


def test_stop_while_a_trial_hangs_exits_cleanly(launcher, project_copy):
    server = start(launcher, project_copy)
    save(project_copy / "myproject/version.py", "import time\ntime.sleep(60)\n")
    workers = {s["pid"] for s in server.statuses()}
    trial = wait_for(lambda: trial_child(server.proc.pid, workers), what="the trial child to start")
    server.signal(signal.SIGTERM)
    assert server.proc.wait(timeout=10) == 0
    assert f"reload #1 abandoned: the server is stopping (trial pid {trial} killed)" in server.log()
    wait_for(lambda: not Path(f"/proc/{trial}").exists() or "Z" in process_state(trial), what="the trial gone")


def test_hang_in_a_c_call_names_the_file_and_line(launcher, project_copy):
    server = start(launcher, project_copy)
    save(project_copy / "myproject/settings.py", 
        "import time\n\nSITE_NAME = 'x'\ntime.sleep(60)\n")
    server.wait_log(r"reload #1 failed: \S*settings\.py:4: hung: the import did not finish within 1 s")
    assert all(s["version"] == "1.0" for s in server.statuses())


def test_edits_during_a_reload_are_coalesced_into_one_more(launcher, project_copy):
    server = start(launcher, project_copy)
    path = project_copy / "myproject/version.py"
    # The first edit hangs its trial for a while; the next edits arrive meanwhile.
    workers = {s["pid"] for s in server.statuses()}
    save(path, 'import time\ntime.sleep(0.5)\nVERSION = "slow"\n')
    wait_for(lambda: trial_child(server.proc.pid, workers), what="the trial child to start")
    for n in range(5):
        save(path, f'VERSION = "after-{n}"\n')
    server.wait_all(lambda s: s["version"] == "after-4", "the last edit served")
    server.wait_log(r"reload #1: ")  # logged once the roll is complete
    log = server.log()
    assert 1 <= len(re.findall(r"reload #\d+: ", log)) <= 2, log
    assert re.search(r"reload #1: .*\([2-4] trials [\d.]+ ms", log), log  # the trial restarted
    assert "failed" not in log


def test_without_a_trial_the_master_loads_directly(launcher, project_copy):
    server = start(launcher, project_copy, trial=False)
    pids = {s["pid"] for s in server.statuses()}
    save(project_copy / "myproject/version.py", 'VERSION = "direct"\n')
    server.wait_all(lambda s: s["version"] == "direct", "the edit served")
    line = server.wait_log(r"reload #1: .*\(no trial; generation 1\)")
    assert SUCCESS_LINE.match(server.messages()[0]), line
    pids = {s["pid"] for s in server.statuses()}
    save(project_copy / "myproject/version.py", "VERSION = nope\n")  # still transactional
    server.wait_log(r"reload #2 failed: \S*version\.py:1: NameError")
    assert {s["pid"] for s in server.statuses()} == pids


def test_without_a_trial_an_endless_loop_is_interrupted_in_the_master(launcher, project_copy):
    server = start(launcher, project_copy, trial=False)
    pids = {s["pid"] for s in server.statuses()}
    save(project_copy / "myproject/version.py", 'VERSION = "2.0"\nwhile True:\n    pass\n')
    server.wait_log(r"reload #1 failed: \S*version\.py:[23]: hung: the import did not finish within 1 s "
                    r"and was interrupted")
    current = server.statuses()
    assert {s["pid"] for s in current} == pids and all(s["version"] == "1.0" for s in current)
    save(project_copy / "myproject/version.py", 'VERSION = "2.1"\n')
    server.wait_all(lambda s: s["version"] == "2.1", "recovery after the interrupted load")


def test_a_hung_trial_dies_with_a_killed_master(launcher, project_copy):
    server = start(launcher, project_copy)
    workers = {s["pid"] for s in server.statuses()}
    save(project_copy / "myproject/version.py", "while True:\n    pass\n")
    trial = wait_for(lambda: trial_child(server.proc.pid, workers), what="the trial child to start")
    server.signal(signal.SIGKILL)
    server.proc.wait(timeout=10)
    wait_for(lambda: process_state(trial) in ("gone", "Z"), what="the orphaned trial to die")
