"""The process tree behind `prefork --reload`: master, base, generations, workers.

Real servers from the command line on a small app whose modules record which process imported
them; a "third-party" package lives outside the working directory, on PYTHONPATH, as an installed
dependency would.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.integration.integration_util import PYTHON, children_by_title, http_get, process_state, save, wait_for

APP = '''\
import os
import sys
import vendorlib
from helper import greeting

with open(os.path.join(os.path.dirname(__file__), "imported-by.txt"), "a") as out:
    out.write(f"{os.getpid()}\\n")


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    body = f"{greeting()} {vendorlib.VERSION} {os.getpid()} {os.environ.get('PREFORK_GENERATION')} {'networkx' in sys.modules}"
    return [body.encode()]
'''


@pytest.fixture
def site(tmp_path: Path) -> tuple[Path, Path]:
    """(the app's folder, the folder of an installed third-party package)."""
    app_dir, vendor = tmp_path / "site", tmp_path / "vendor"
    app_dir.mkdir()
    (vendor / "vendorlib").mkdir(parents=True)
    (vendor / "vendorlib" / "__init__.py").write_text('VERSION = "v1"\n')
    (app_dir / "helper.py").write_text('def greeting():\n    return "hello"\n')
    (app_dir / "hello.py").write_text(APP)
    return app_dir, vendor


def start(launcher, site, *extra: str):
    app_dir, vendor = site
    pid_file = app_dir.parent / "server.pid"

    def command(port: int) -> list[str]:
        return [PYTHON, "-m", "prefork", "hello:app", "--reload", "-w", "2", "-p", str(port),
                "--pid", str(pid_file), "--log-level", "debug", "--port-per-worker", *extra]

    return launcher.start_http(command, workers=2, cwd=app_dir, pid_file=pid_file)


def launch_env(launcher, site):
    launcher_spawn = launcher.spawn

    def spawn(args, cwd, log_name="server.log", env=None):
        return launcher_spawn(args, cwd, log_name, {"PYTHONPATH": str(site[1]), **(env or {})})

    launcher.spawn = spawn




def bodies(server) -> list[str]:
    return [http_get(port, "/")[1].decode() for port in server.ports]


def ctl(server, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "prefork", "ctl", "--pid", str(server.pid_file), *args],
                          capture_output=True, text=True, timeout=10)


def test_the_master_never_imports_the_app_and_adopts_every_process(launcher, site):
    launch_env(launcher, site)
    server = start(launcher, site)
    master = server.proc.pid
    children = children_by_title(master)
    assert "prefork base" in children and "prefork generation 0" in children, children
    workers = [t for t in children if t.startswith("prefork worker")]
    assert len(workers) == 2, children
    importers = {int(line) for line in (site[0] / "imported-by.txt").read_text().split()}
    assert importers == {children["prefork generation 0"]}  # not the master, not the base, not a worker
    # only the master plans reloads: the graph library stays out of the processes that serve
    assert [b.split()[4] for b in bodies(server)] == ["False", "False"], bodies(server)
    # imported-by.txt is watched (a .txt file under the root) but written by the app itself: that
    # is not an edit, or every generation would start the next. Two real edits make two reloads.
    for number, word in enumerate(["hi", "hey"], start=1):
        save(site[0] / "helper.py", f'def greeting():\n    return "{word}"\n')
        wait_for(lambda word=word: all(b.startswith(word + " ") for b in bodies(server)), what=f"{word} served")
        server.wait_log(rf"reload #{number}: ")
    assert not re.search(r"reload #3", server.log()), server.log()


def test_a_full_reload_picks_up_an_upgraded_dependency_that_a_reload_cannot(launcher, site):
    launch_env(launcher, site)
    server = start(launcher, site)
    base = children_by_title(server.proc.pid)["prefork base"]
    server.wait_log(r"base: \d+ of \d+ third-party modules preloaded")
    (site[1] / "vendorlib" / "__init__.py").write_text('VERSION = "v2"\n')  # outside the project
    assert ctl(server, "reload").returncode == 0
    server.wait_log(r"reload #1: fresh generation \(reload requested\)")
    wait_for(lambda: all(b.split()[3] == "1" for b in bodies(server)), what="generation 1 serving")
    assert all(b.split()[1] == "v1" for b in bodies(server))  # the base imported it once: documented
    result = ctl(server, "reload", "--full")
    assert result.returncode == 0, result.stderr
    server.wait_log(r"reload #2: fresh generation \(a full reload was asked for\)")
    wait_for(lambda: all(b.split()[1] == "v2" for b in bodies(server)), what="the upgraded dependency served")
    wait_for(lambda: process_state(base) in ("gone", "Z"), what="the old base gone")
    assert children_by_title(server.proc.pid)["prefork base"] != base
    server.signal(signal.SIGUSR2)  # the signal does the same
    server.wait_log(r"reload #3: fresh generation \(a full reload was asked for\)")


def test_a_killed_generation_or_base_is_replaced_and_the_workers_serve_on(launcher, site):
    launch_env(launcher, site)
    server = start(launcher, site)
    children = children_by_title(server.proc.pid)
    before = bodies(server)
    server_pids = {b.split()[2] for b in before}
    os.kill(children["prefork generation 0"], signal.SIGKILL)
    server.wait_log(r"generation 0 \(pid \d+\) exited; starting a fresh one")
    wait_for(lambda: "prefork generation 1" in children_by_title(server.proc.pid), what="a new generation")
    wait_for(lambda: {b.split()[2] for b in bodies(server)}.isdisjoint(server_pids), what="its workers")
    os.kill(children_by_title(server.proc.pid)["prefork base"], signal.SIGKILL)
    server.wait_log(r"base process \d+ exited with status -9")
    save(site[0] / "helper.py", 'def greeting():\n    return "hi again"\n')
    wait_for(lambda: all(b.startswith("hi again") for b in bodies(server)), what="a reload after the base died")


def test_a_killed_worker_is_replaced_by_its_generation(launcher, site):
    launch_env(launcher, site)
    server = start(launcher, site)
    victim = int(bodies(server)[0].split()[2])
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: int(http_get(server.ports[0], "/")[1].decode().split()[2]) != victim,
             what="a replacement worker")
    server.wait_log(rf"worker 0 \(pid {victim}, port \d+\) died with status -9; replacing it")
    assert re.search(r"asked generation 0 for worker 0", server.log())


def test_a_new_module_that_autodiscovery_finds_is_served_like_a_fresh_start(launcher, site):
    """A new file is imported afresh: a framework may find it at start (Django's autodiscover)."""
    app_dir = site[0]
    (app_dir / "plugins").mkdir()
    (app_dir / "plugins" / "__init__.py").write_text("")
    (app_dir / "plugins" / "a.py").write_text('NAME = "a"\n')
    save(app_dir / "helper.py", textwrap.dedent('''\
        import importlib, pathlib

        FOUND = [importlib.import_module(f"plugins.{p.stem}").NAME
                 for p in sorted((pathlib.Path(__file__).parent / "plugins").glob("[a-z]*.py"))]

        def greeting():
            return "+".join(FOUND)
        '''))
    launch_env(launcher, site)
    server = start(launcher, site)
    assert all(b.startswith("a ") for b in bodies(server))
    save(app_dir / "plugins" / "b.py", 'NAME = "b"\n')
    wait_for(lambda: all(b.startswith("a+b ") for b in bodies(server)), what="the discovered plugin")
    server.wait_log(r"reload #1: fresh generation \(plugins/b\.py is new\)")


def test_a_dependency_that_imports_a_project_module_is_not_kept_warm_with_it(launcher, site):
    """A third-party module that imports a project module at import time (as one that reads the
    app's settings does) would hold the old module in the base, and every fresh generation with
    it: the base leaves such a module to the generations."""
    app_dir, vendor = site
    (vendor / "vendorplug.py").write_text("import helper\n\nGREETING = helper.greeting\n")
    save(app_dir / "hello.py", APP.replace("import vendorlib\n", "import vendorlib\nimport vendorplug\n"))
    launch_env(launcher, site)
    server = start(launcher, site)
    server.wait_log(r"base: \d+ of \d+ third-party modules preloaded")
    save(app_dir / "helper.py", 'def greeting():\n    return "changed"\n')
    wait_for(lambda: all(b.startswith("changed ") for b in bodies(server)), what="the edit served")
    server.wait_log(r"reload #1: fresh generation")
    ctl(server, "reload")  # a fresh generation from the base, whatever the plan of the save was
    server.wait_log(r"reload #2: fresh generation")
    wait_for(lambda: all(b.split()[3] == "2" for b in bodies(server)), what="generation 2 serving")
    assert all(b.startswith("changed ") for b in bodies(server)), bodies(server)


def test_a_sigterm_to_the_whole_process_group_is_one_clean_stop(launcher, site):
    """systemd (KillMode=control-group) and `kill -TERM -PGID` signal every process at once: the
    workers' and the generation's exits are part of the stop, not deaths to repair."""
    launch_env(launcher, site)
    server = start(launcher, site)
    server.wait_log(r"base: \d+ of \d+ third-party modules preloaded")
    save(site[0] / "helper.py", 'def greeting():\n    return "hi"\n')  # a generation from the base serves
    wait_for(lambda: all(b.startswith("hi ") for b in bodies(server)), what="the edit served")
    os.killpg(server.proc.pid, signal.SIGTERM)
    assert server.proc.wait(15) == 0, server.log()
    log = server.log()
    tail = log[log.index("received SIGTERM") - 2000 if "received SIGTERM" in log else 0:]
    for lie in ("replacing it", "starting a fresh one", "reload #2", "Traceback", "ERROR"):
        assert lie not in tail, tail
