"""A hypothesis state machine drives one real master through HUP, TTIN, TTOU, worker kills and edits.

After every step it waits (with a deadline) until the master has converged on what was asked:
exactly N ready workers in slots 0..N-1 on ports base..base+N-1, every one of the current
generation and serving the last edit, and nothing listening on the ports of removed slots.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine, initialize, invariant, precondition, rule, run_state_machine_as_test)

from tests.reliability import scenarios
from tests.reliability.harness import ctl, port_free, wait_for

pytestmark = pytest.mark.reliability

MAX_WORKERS = 4


class MasterMachine(RuleBasedStateMachine):
    """The model: worker count, code level (last edit) and generation (reloads so far)."""

    server = None  # set by the test: (Running, Site, pid file)
    steps: list[str] = []

    @initialize()
    def observe(self) -> None:
        running, site, pid_file = self.server
        # Every example starts from 2 workers, so that what hypothesis draws (the preconditions)
        # never depends on where the previous example left the master.
        ctl(pid_file, "workers", 2)
        self.workers = 2
        self.generation = ctl(pid_file, "status")["generation"]
        self.level = site.level
        self.converge("start")

    # -- what the master is asked to do ---------------------------------------------------------

    @rule()
    def hup(self) -> None:
        self.server[0].signal(signal.SIGHUP)
        self.generation += 1
        self.converge("HUP")

    @precondition(lambda self: self.workers < MAX_WORKERS)
    @rule()
    def ttin(self) -> None:
        self.server[0].signal(signal.SIGTTIN)
        self.workers += 1
        self.converge("TTIN")

    @precondition(lambda self: self.workers > 1)
    @rule()
    def ttou(self) -> None:
        self.server[0].signal(signal.SIGTTOU)
        self.workers -= 1
        self.converge("TTOU")

    @rule(which=st.integers(min_value=0, max_value=MAX_WORKERS - 1))
    def kill_worker(self, which: int) -> None:
        rows = ctl(self.server[2], "status")["workers"]
        victim = rows[which % len(rows)]["pid"]
        os.kill(victim, signal.SIGKILL)
        self.converge(f"SIGKILL {victim}", gone=victim)

    @rule()
    def edit(self) -> None:
        site = self.server[1]
        site.edit(site.level + 1)
        self.level = site.level
        self.generation += 1
        self.converge(f"edit {self.level}")

    @rule(names=st.lists(st.sampled_from(["TTIN", "TTOU"]), min_size=1, max_size=3),
          hup_at=st.integers(min_value=0, max_value=3))
    def burst(self, names: list[str], hup_at: int) -> None:
        """Several signals in a row, each sent once the master has taken the previous one in
        (not after it converged), so a roll overlaps the resizes.

        At most one HUP: several would be coalesced into an unknowable number of reloads (one
        more after the running one), and the model must know the generation to converge on.
        """
        names = names[:hup_at] + ["HUP"] + names[hup_at:] if hup_at < len(names) + 1 else names
        running = self.server[0]
        hups = 0
        sent = []
        for name in names:
            if name == "TTIN" and self.workers >= MAX_WORKERS or name == "TTOU" and self.workers <= 1:
                continue
            self.workers += {"HUP": 0, "TTIN": 1, "TTOU": -1}[name]
            hups += name == "HUP"
            before = running.log().count(f"received SIG{name}")
            running.signal(getattr(signal, f"SIG{name}"))
            running.wait_log(f"received SIG{name}", count=before + 1, timeout=10)
            sent.append(name)
        self.generation += hups
        self.converge("burst " + "+".join(sent))

    # -- convergence ----------------------------------------------------------------------------

    def converge(self, step: str, gone: int | None = None) -> None:
        running, site, pid_file = self.server
        self.steps.append(step)
        base = running.port
        wanted_ports = [base + i for i in range(self.workers)]

        why: list[str] = [""]

        def not_yet(reason: str) -> bool:
            why[0] = reason
            return False

        def converged() -> bool:
            status = ctl(pid_file, "status")
            rows = status["workers"]
            generation = self.generation
            if status["generation"] != generation or len(rows) != self.workers:
                return not_yet(f"generation {status['generation']} (want {generation}), {len(rows)} workers")
            if sorted(r["slot"] for r in rows) != list(range(self.workers)) or not all(r["ready"] for r in rows):
                return not_yet(f"slots/ready: {[(r['slot'], r['ready']) for r in rows]}")
            if sorted(r["port"] for r in rows) != wanted_ports or gone in {r["pid"] for r in rows}:
                return not_yet(f"ports {sorted(r['port'] for r in rows)} or the killed pid still listed")
            if {r["generation"] for r in rows} != {generation}:
                return not_yet(f"worker generations {[r['generation'] for r in rows]}")
            for port in wanted_ports:
                body = scenarios.status_of(port)
                if body is None or scenarios.Site.level_of(body) != self.level or body["generation"] != generation:
                    return not_yet(f"port {port} answers {body} (want level {self.level}, generation {generation})")
            busy = [base + i for i in range(self.workers, MAX_WORKERS) if not port_free(base + i)]
            return not busy or not_yet(f"removed ports still bound: {busy}")

        started = time.monotonic()
        try:
            wait_for(converged, 20, f"convergence after {step}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {why[0]}; steps so far: {self.steps}\n{ctl(pid_file, 'status')}\n"
                                 f"{running.log()[-3000:]}") from None
        self.times.append(time.monotonic() - started)

    times: list[float] = []

    @invariant()
    def master_alive(self) -> None:
        assert self.server[0].proc.poll() is None, "the master exited"


def state_machine(launcher, examples: int = 8, steps: int = 10, derandomize: bool = True) -> scenarios.Result:
    """Run the machine against one master; the Result counts steps and the slowest convergence."""
    result = scenarios.Result("state machine: HUP/TTIN/TTOU/kill/edit", f"{examples} examples x {steps} steps")
    site = scenarios.Site(launcher.tmp_path)
    # Room for MAX_WORKERS ports: start with 2 workers on a block of MAX_WORKERS free ports.
    running = site.start(launcher, workers=2, block=MAX_WORKERS)
    MasterMachine.server = (running, site, launcher.tmp_path / "server.pid")
    MasterMachine.steps = []
    MasterMachine.times = []
    started = time.monotonic()
    try:
        run_state_machine_as_test(MasterMachine, settings=settings(
            max_examples=examples, stateful_step_count=steps, deadline=None, derandomize=derandomize,
            suppress_health_check=list(HealthCheck), database=None,
            # no shrinking: each replay of real processes costs seconds; the failure names its steps
            phases=[Phase.explicit, Phase.reuse, Phase.generate]))
    except AssertionError as exc:
        result.problems.append(str(exc)[:2000])
    result.duration = time.monotonic() - started
    result.requests = len(MasterMachine.steps)
    for seconds in MasterMachine.times:
        result.recovered(seconds)
    kinds: dict[str, int] = {}
    for step in MasterMachine.steps:
        kind = step.split()[0]
        kinds[kind] = kinds.get(kind, 0) + 1
    result.extra.update(kinds)
    # Convergence is a matter of milliseconds; seconds mean a worker lingered (a lost TERM was 5 s).
    result.check(result.max_recovery is None or result.max_recovery < 2.0,
                 f"a step took {result.max_recovery:.2f} s to converge")
    return result


def test_random_signal_kill_and_edit_sequences_converge(processes) -> None:
    result = state_machine(processes, examples=8, steps=10)
    print(result.row())
    result.assert_ok()
    assert result.requests >= 30
