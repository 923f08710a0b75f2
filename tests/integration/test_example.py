"""The user's path, end to end: examples/server.py on a copy of examples/myproject, edited live.

Each test starts the real example server (its own session, killed by process group at teardown)
on free ports, edits real files, and polls every worker over HTTP with a deadline until each one
serves the new code.
"""
from __future__ import annotations

import json
import re
import signal
import subprocess
import threading

from tests.integration.integration_util import (FAILURE_HEAD, PYTHON, STILL_SERVING, SUCCESS_LINE, http_get, new_generation, rewrite,
                      save, status, wait_for)

VERSION_FILE = "myproject/version.py"


def test_home_page_names_worker_port_version_generation(launcher, project_copy):
    server = launcher.example(project_copy)
    for port in server.ports:
        code, body = http_get(port, "/")
        page = body.decode()
        assert code == 200
        assert f"<b>{port}</b>" in page
        assert '<b id="version">1.0</b>' in page
        assert '<b id="generation">0</b>' in page
        pid = int(re.search(r"worker pid <b>(\d+)</b>", page).group(1))
        assert pid == status(port)["pid"]
    server.wait_log(r"http://127\.0\.0\.1:%d/" % server.port)  # the URLs are printed when all are ready


def test_edit_leaf_module_is_served_by_every_worker(launcher, project_copy):
    server = launcher.example(project_copy, extra=["--partial", "always"])  # the graph decides what reloads
    before = {s["pid"] for s in server.statuses()}
    rewrite(project_copy / VERSION_FILE, '"1.0"', '"2.0"')
    after = server.wait_all(lambda s: s["version"] == "2.0", "every worker on version 2.0")
    assert all(s["generation"] == 1 for s in after)
    assert before.isdisjoint(s["pid"] for s in after)
    server.wait_log(r"reload #1: \d+ modules \(myproject\.version, [^)]*\) in \d+ ms; "
                    r"2 workers replaced \(generation 1\)")
    assert SUCCESS_LINE.match(server.messages()[0]), server.messages()


def test_edit_middle_module_reloads_it_and_its_dependents_only(launcher, project_copy):
    server = launcher.example(project_copy, extra=["--partial", "always"])  # the graph decides what reloads
    rewrite(project_copy / "myproject/services/catalog.py", 'LABEL = "catalogue"', 'LABEL = "shop"')
    server.wait_all(lambda s: s["label"] == "shop", "every worker with the new label")
    server.wait_log(r"reload #1: ")
    line = re.search(r"reload #1: (\d+) modules \(([^)]*)\)", server.log())
    modules = line.group(2).split(", ")
    assert modules[0] == "myproject.services.catalog"
    assert "myproject.version" not in modules and "myproject.models.item" not in modules
    assert "myproject.app" in modules


def test_an_import_added_by_an_edit_joins_the_graph_for_the_next_reload(launcher, project_copy):
    """The master rescans the files of each reload: once an edit makes item import version, a version
    edit reloads item with it (version alone would be refused: item would keep the old value)."""
    server = launcher.example(project_copy, extra=["--partial", "always"])  # the graph decides what reloads
    rewrite(project_copy / "myproject/services/catalog.py", 'LABEL = "catalogue"', 'LABEL = "shop"')
    server.wait_all(lambda s: s["label"] == "shop", "every worker with the new label")
    server.wait_log(r"reload #1: ")  # the master has read every file's imports by now
    item = project_copy / "myproject/models/item.py"
    save(item, item.read_text() + "\nfrom myproject.version import VERSION as MADE_IN  # noqa: E402\n")
    server.wait_log(r"reload #2: ")
    rewrite(project_copy / VERSION_FILE, '"1.0"', '"3.0"')
    server.wait_all(lambda s: s["version"] == "3.0", "every worker on version 3.0")
    line = server.wait_log(r"reload #3: .*")
    found = re.search(r"reload #3: \d+ modules \(([^)]*)\)", server.log())
    assert found, line
    modules = found.group(1).split(", ")
    # Listed in load order, before catalog that imports it: the master's plan had it. (With a stale
    # graph the generation finds item among version's importers itself and lists it last.)
    assert modules.index("myproject.models.item") < modules.index("myproject.services.catalog"), modules


def test_edit_declared_dependency_reloads_through_needs_edge(launcher, project_copy):
    server = launcher.example(project_copy, extra=["--partial", "always"])  # the graph decides what reloads
    rewrite(project_copy / "myproject/settings.py", '"EUR"', '"CHF"')
    server.wait_all(lambda s: s["currency"] == "CHF", "every worker with the new currency")
    server.wait_log(r"reload #1: ")
    modules = re.search(r"reload #1: \d+ modules \(([^)]*)\)", server.log()).group(1).split(", ")
    assert "myproject.services.catalog" in modules  # only the needs= edge reaches it


def test_definition_file_edit_adds_a_module(launcher, project_copy):
    server = launcher.example(project_copy, extra=["--partial", "always"])  # the graph decides what reloads
    save(project_copy / "myproject/banner.py", 'TEXT = "welcome"\n')
    # The new module is used (imported plainly) before the project declares it...
    rewrite(project_copy / "myproject/views/api.py", "from myproject.version import VERSION",
            "from myproject.version import VERSION\nfrom myproject import banner")
    rewrite(project_copy / "myproject/views/api.py", "info.update(version=VERSION,",
            "info.update(banner=banner.TEXT, version=VERSION,")
    server.wait_all(lambda s: s.get("banner") == "welcome", "every worker with the banner")
    # ...then declared in project.py: from now on an edit of it reloads and is served.
    rewrite(project_copy / "project.py", '    project.file("version")',
            '    project.file("version")\n    project.file("banner")')
    server.wait_log(r"reload #2: ")
    rewrite(project_copy / "myproject/banner.py", '"welcome"', '"bienvenue"')
    server.wait_all(lambda s: s.get("banner") == "bienvenue", "every worker with the edited banner")
    server.wait_log(r"reload #3: \d+ modules? \(myproject\.banner")


BAD_EDITS = {
    "syntax_error": ('VERSION = "2.0"\nif True\n', r"version\.py:2: SyntaxError"),
    "name_error": ('VERSION = "2.0"\nVERSION = VERSIN\n', r"version\.py:2: NameError: name 'VERSIN'"),
    "missing_import": ('import no_such_module_anywhere\nVERSION = "2.0"\n',
                       r"version\.py:1: ModuleNotFoundError: No module named 'no_such_module_anywhere'"),
}


def test_bad_edits_keep_old_code_serving_and_recover(launcher, project_copy):
    server = launcher.example(project_copy)
    pids = {s["pid"] for s in server.statuses()}
    for number, (name, (source, pattern)) in enumerate(BAD_EDITS.items(), start=1):
        save(project_copy / VERSION_FILE, source)
        server.wait_log(rf"reload #{number * 2 - 1} failed: \S*{pattern}")
        assert re.search(r"still serving generation %d" % (number - 1), server.log()), name
        current = server.statuses()
        assert {s["pid"] for s in current} == pids, name  # no worker was touched
        assert all(s["version"] == ("1.0" if number == 1 else f"fixed-{number - 1}") for s in current)
        save(project_copy / VERSION_FILE, f'VERSION = "fixed-{number}"\n')
        fixed = server.wait_all(lambda s, n=number: s["version"] == f"fixed-{n}", f"recovery from {name}")
        pids = {s["pid"] for s in fixed}
    blocks = [m.splitlines() for m in server.messages() if " failed: " in m]
    assert len(blocks) == 3 and all(FAILURE_HEAD.match(b[0]) and b[-1] == STILL_SERVING.format(n)
                                    for n, b in enumerate(blocks)), blocks
    failure = re.search(r"reload #3 failed: .*\n((?:  .*\n)+)", server.log()).group(0)
    assert failure.splitlines()[-3:] == [  # one readable block: the import chain ends at the user's line
        f'    File "{project_copy / VERSION_FILE}", line 2, in <module>',
        "      VERSION = VERSIN",
        "  still serving generation 1; the changes stay pending: save a fix to retry them all",
    ]
    assert "/prefork/" not in failure and "/projectr/" not in failure and "importlib" not in failure


def test_failed_reload_keeps_changes_pending_until_fixed(launcher, project_copy):
    server = launcher.example(project_copy)
    rewrite(project_copy / "myproject/services/catalog.py", 'LABEL = "catalogue"', 'LABEL = "shop"')
    server.wait_all(lambda s: s["label"] == "shop", "the label edit served")
    # A good edit of catalog and a bad edit of version in one batch: nothing is applied...
    rewrite(project_copy / "myproject/services/catalog.py", 'LABEL = "shop"', 'LABEL = "store"')
    save(project_copy / VERSION_FILE, "VERSION = undefined_name\n")
    server.wait_log(r"failed: \S*version\.py:1: NameError")
    assert all(s["label"] == "shop" for s in server.statuses())
    # ...until the fix, which reloads the whole pending set.
    save(project_copy / VERSION_FILE, 'VERSION = "3.0"\n')
    server.wait_all(lambda s: s["label"] == "store" and s["version"] == "3.0", "both edits served")


def test_endless_loop_at_import_is_abandoned_and_master_answers(launcher, project_copy):
    server = launcher.example(project_copy, reload_timeout=2.0)
    pids = {s["pid"] for s in server.statuses()}
    save(project_copy / VERSION_FILE, 'VERSION = "2.0"\nwhile True:\n    pass\n')
    wait_for(lambda: new_generation(server.proc.pid), what="the new generation to start")
    # While the import spins, the master still answers prefork ctl and signals, the old workers serve.
    result = subprocess.run([PYTHON, "-m", "prefork", "ctl", "--pid", str(server.pid_file), "status"],
                            capture_output=True, text=True, timeout=10)
    assert result.returncode == 0, result.stderr
    server.signal(signal.SIGUSR1)
    server.wait_log(r"reopened log files")
    assert all(s["version"] == "1.0" for s in server.statuses())
    server.wait_log(r"reload #1 failed: \S*version\.py:[23]: hung: the import did not finish within 2 s "
                    r"and was killed")
    log = server.log()
    assert log.index("reopened log files") < log.index("reload #1 failed")  # answered during the hang
    hang = server.messages()[0].splitlines()
    assert FAILURE_HEAD.match(hang[0]) and hang[-1] == STILL_SERVING.format(0), hang
    assert {s["pid"] for s in server.statuses()} == pids
    save(project_copy / VERSION_FILE, 'VERSION = "2.1"\n')
    server.wait_all(lambda s: s["version"] == "2.1", "recovery after the hang")


def test_sighup_replaces_every_worker_without_changes(launcher, project_copy):
    server = launcher.example(project_copy)
    before = {s["pid"] for s in server.statuses()}
    server.signal(signal.SIGHUP)
    after = server.wait_all(lambda s: s["generation"] == 1, "generation 1 after SIGHUP")
    assert before.isdisjoint(s["pid"] for s in after)
    server.wait_log(r"reload #1: fresh generation \(reload requested\) in \d+ ms; 2 workers replaced")


def test_rapid_same_size_edits_end_on_the_last(launcher, project_copy):
    server = launcher.example(project_copy)
    path = project_copy / VERSION_FILE
    for digit in range(1, 10):
        path.write_text(f'VERSION = "1.{digit}"\n')  # in place: same size, same mtime tick
    server.wait_all(lambda s: s["version"] == "1.9", "every worker on the last edit")
    server.wait_log(r"reload #\d+: ")
    # Coalesced: a burst within the watcher's window is one batch, then at most one reload runs and
    # one more follows it (each edit is one write: at most the first edit races the window).
    reloads = len(re.findall(r"reload #\d+: ", server.log()))
    assert 1 <= reloads <= 3, server.log()
    assert all(s["version"] == "1.9" for s in server.statuses())


def test_resource_change_reforks_workers_without_reloading_modules(launcher, project_copy):
    server = launcher.example(project_copy)
    before = {s["pid"] for s in server.statuses()}
    for port in server.ports:  # each worker reads the template once, on its first page
        assert "Served by worker" in http_get(port, "/")[1].decode()
    rewrite(project_copy / "myproject/templates/page.html", "Served by worker", "Answered by worker")
    wait_for(lambda: all("Answered by worker" in http_get(p, "/")[1].decode() for p in server.ports),
             what="the new template on every worker")
    assert before.isdisjoint(s["pid"] for s in server.statuses())
    server.wait_log(r"reload #1: workers respawned \(myproject/templates/page\.html: only files read at "
                    r"request time changed\) in \d+ ms")


def test_worker_command_and_ctl_status(launcher, project_copy):
    server = launcher.example(project_copy)
    pids = {s["pid"] for s in server.statuses()}
    for port in server.ports:
        http_get(port, "/items.json")
    ctl = [PYTHON, "-m", "prefork", "ctl", "--pid", str(server.pid_file)]
    shown = subprocess.run(ctl + ["status"], capture_output=True, text=True, timeout=10)
    assert shown.returncode == 0, shown.stderr
    for pid in pids:
        assert re.search(rf"^\s*\d+\s+{pid}\s+\d+", shown.stdout, re.M), shown.stdout
    reply = subprocess.run(ctl + ["command", "reset_lookups"], capture_output=True, text=True, timeout=10)
    assert reply.returncode == 0, reply.stderr
    results = json.loads(reply.stdout)
    assert {r["result"]["pid"] for r in results.values()} == pids
    assert all(r["result"]["lookups"] == 1 for r in results.values())
    server.wait_log(r"resetting the catalogue lookup counter", count=2)
    reload = subprocess.run(ctl + ["reload"], capture_output=True, text=True, timeout=10)
    assert reload.returncode == 0, reload.stderr
    after = server.wait_all(lambda s: s["generation"] == 1, "generation 1 after prefork ctl reload")
    assert pids.isdisjoint(s["pid"] for s in after)


def test_twenty_reloads_under_load_fail_no_request(launcher, project_copy):
    server = launcher.example(project_copy)
    stop = threading.Event()
    failures: list[str] = []
    counts = [0] * 4

    def client(n: int) -> None:
        port = server.ports[n % len(server.ports)]
        while not stop.is_set():
            try:
                code, _ = http_get(port, "/status.json", timeout=10)
                if code != 200:
                    failures.append(f"HTTP {code}")
            except OSError as exc:
                failures.append(repr(exc))
            counts[n] += 1

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(4)]
    for thread in threads:
        thread.start()
    try:
        path = project_copy / VERSION_FILE
        for number in range(1, 21):
            if number % 2:
                save(path, f'VERSION = "load-{number:02d}"\n')
            else:
                server.signal(signal.SIGHUP)
            server.wait_log(rf"reload #{number}: ", timeout=20)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=15)
    assert not failures, failures[:5]
    assert sum(counts) > 40
    final = server.wait_all(lambda s: s["version"] == "load-19", "the last version")
    assert all(s["generation"] == 20 for s in final)


def test_broken_definition_file_keeps_serving_and_recovers(launcher, project_copy):
    server = launcher.example(project_copy)
    definition = project_copy / "project.py"
    good = definition.read_text()
    save(definition, good.replace('project.file("version")', 'project.file("version"'))
    server.wait_log(r"reload #1 failed: \S*project\.py:\d+: SyntaxError")
    assert all(s["version"] == "1.0" and s["generation"] == 0 for s in server.statuses())
    save(definition, good)
    save(project_copy / VERSION_FILE, 'VERSION = "after-definition-fix"\n')
    server.wait_all(lambda s: s["version"] == "after-definition-fix", "recovery after the definition fix")


def test_example_project_is_clean_with_declared_and_discovered_edges(project_copy):
    definition = str(project_copy / "project.py")
    check = subprocess.run([PYTHON, "-m", "projectr", "check", definition], capture_output=True,
                           text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    graph = subprocess.run([PYTHON, "-m", "projectr", "graph", definition], capture_output=True,
                           text=True, timeout=30).stdout
    assert "myproject/settings.py -> myproject/services/catalog.py [needs]" in graph
    assert "myproject/views/pages.py -> myproject/app.py [import]" in graph


def test_saving_a_fix_during_a_hang_applies_it_at_once(launcher, project_copy):
    # reload_timeout 60 s: the fix must not wait for the hung trial to be killed at the timeout.
    server = launcher.example(project_copy, reload_timeout=60.0)
    pids = {s["pid"] for s in server.statuses()}
    save(project_copy / VERSION_FILE, 'VERSION = "2.0"\nwhile True:\n    pass\n')
    wait_for(lambda: new_generation(server.proc.pid), what="the new generation to start")
    save(project_copy / VERSION_FILE, 'VERSION = "fixed"\n')
    server.wait_all(lambda s: s["version"] == "fixed", "the fix served while the timeout is far off")
    server.wait_log(r"reload #1: .* in \d+ ms; 2 workers replaced \(generation 1\)")
    assert "failed" not in server.log()
