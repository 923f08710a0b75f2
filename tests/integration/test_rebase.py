"""Generation 0 replaced by a generation from the warm base (prefork.server.projectr, REBASE_MIN_MB).

Generation 0 imports the third-party modules itself, before the base has preloaded them; once the
base holds them, the master rolls onto a generation forked from the base so that the workers share
its pages. Real servers from the command line, on test_generations' app and "installed" package.
"""
from __future__ import annotations

import os
from pathlib import Path

from tests.integration.integration_util import children_by_title, process_state, wait_for
from test_generations import bodies, launch_env, save, site, start  # site: a fixture, used here too

HEAVY = 'VERSION = "v1"\nTABLE = [str(i) for i in range(400_000)]  # some 25 MB, as a framework would hold\n'


def test_generation_0_is_replaced_by_one_from_the_base_once_it_holds_the_third_party_modules(launcher, site):
    (site[1] / "vendorlib" / "__init__.py").write_text(HEAVY)
    launch_env(launcher, site)
    server = start(launcher, site)
    server.wait_log(r"generation 1, forked from the warm base, replaced generation 0 in \d+ ms \(2 workers\)")
    wait_for(lambda: all(b.split()[3] == "1" for b in bodies(server)), what="generation 1 serving")
    children = children_by_title(server.proc.pid)
    wait_for(lambda: "prefork generation 0" not in children_by_title(server.proc.pid), what="generation 0 gone")
    assert "prefork generation 1" in children and "prefork base" in children, children
    importers = [int(line) for line in (site[0] / "imported-by.txt").read_text().split()]
    assert len(importers) == 2 and importers[1] == children["prefork generation 1"], (importers, children)
    # Not a reload: the first save is reload #1, and it is served.
    save(site[0] / "helper.py", 'def greeting():\n    return "hi"\n')
    wait_for(lambda: all(b.startswith("hi ") for b in bodies(server)), what="the edit served")
    server.wait_log(r"reload #1: ")
    assert "reload #2" not in server.log()


def test_a_small_preload_keeps_generation_0(launcher, site):
    launch_env(launcher, site)
    server = start(launcher, site)
    server.wait_log(r"base: \d+ of \d+ third-party modules preloaded")
    assert "replacing generation 0" not in server.log()  # decided in the same turn as the line above
    assert all(b.split()[3] == "0" for b in bodies(server))


def test_the_base_copy_of_the_third_party_modules_is_shared_once_generation_0_is_replaced(launcher, site):
    """Before, the base's copy of the table was its own (generation 0's tree had another one)."""
    (site[1] / "vendorlib" / "__init__.py").write_text(HEAVY)
    launch_env(launcher, site)
    server = start(launcher, site)
    server.wait_log(r"replaced generation 0 in \d+ ms")
    wait_for(lambda: "prefork generation 0" not in children_by_title(server.proc.pid), what="generation 0 gone")
    base = children_by_title(server.proc.pid)["prefork base"]
    assert _private_mb(base) < 12, f"base: {_private_mb(base):.1f} MB private"  # the table is ~25 MB


def _private_mb(pid: int) -> float:
    """Private (unshared) memory of a process, MB, from /proc/PID/smaps_rollup."""
    total = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith(("Private_Clean:", "Private_Dirty:")):
            total += int(line.split()[1])
    return total / 1024


GATED = '''\
import os
import sys

if "hello" not in sys.modules:  # the base's preload, not generation 0's import: wait for the test
    with open(os.path.join(os.path.dirname(__file__), "gate")) as gate:
        gate.read()
VERSION = "v1"
'''


def test_a_save_during_the_base_preload_is_served_and_the_preload_goes_on_afterwards(launcher, site):
    """The base is stopped while a reload that does not need it is built, and let go on after it."""
    gate = site[1] / "vendorlib" / "gate"
    os.mkfifo(gate)
    (site[1] / "vendorlib" / "__init__.py").write_text(GATED)
    launch_env(launcher, site)
    server = start(launcher, site)
    base = children_by_title(server.proc.pid)["prefork base"]
    save(site[0] / "helper.py", 'def greeting():\n    return "hi"\n')
    wait_for(lambda: all(b.startswith("hi ") for b in bodies(server)), what="the edit served")
    server.wait_log(r"reload #1: 2 modules \(")  # partial: the base holds nothing warm yet
    assert "base: preload paused" in server.log()
    server.wait_log(r"base: preload resumed")
    wait_for(lambda: process_state(base) not in ("T", "t", "gone"), what="the base running again")
    # ENXIO (an OSError: wait_for tries again) until the base has the gate open for reading
    writer = wait_for(lambda: os.open(gate, os.O_WRONLY | os.O_NONBLOCK), what="the base waiting at the gate")
    os.write(writer, b"go")
    os.close(writer)
    server.wait_log(r"base: 1 of 1 third-party modules preloaded")
    save(site[0] / "helper.py", 'def greeting():\n    return "hey"\n')
    wait_for(lambda: all(b.startswith("hey ") for b in bodies(server)), what="the second edit served")
    server.wait_log(r"reload #2: fresh generation")

