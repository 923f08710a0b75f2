"""A hypothesis state machine drives one real master through HUP, TTIN, TTOU, worker kills and edits.

After every step it waits (with a deadline) until the master has converged on what was asked:
exactly N ready workers in slots 0..N-1 on ports base..base+N-1, every one of the current
generation and serving the last edit, and nothing listening on the ports of removed slots.
TTOU at one worker changes nothing. Once per example the master may be stopped in one of the
crossed ways of docs/prefork.md ("When things hang, or signals cross"): QUIT, QUIT twice, HUP or
TERM during a graceful stop, TERM during a roll, each with or without an ``on_stop`` that hangs;
the stop must end within its bound with the documented exit status and leave no process, port or
pid file behind. A new master then takes over for the rest of the run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis.errors import HypothesisException
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine, initialize, invariant, precondition, rule, run_state_machine_as_test)

from tests.reliability import scenarios
from tests.reliability.harness import ctl, port_free, session_members, wait_for

pytestmark = pytest.mark.reliability

MAX_WORKERS = 4
GRACEFUL = 2.0  # the master's graceful_timeout
TERM_TIMEOUT = 5.0  # Server.term_timeout

# how: (first signal, second signal sent once the master logged the first)
STOPS = {
    "QUIT": ("QUIT", None),
    "QUIT twice": ("QUIT", "QUIT"),
    "HUP during QUIT": ("QUIT", "HUP"),
    "TERM during QUIT": ("QUIT", "TERM"),
    "TERM during a roll": ("HUP", "TERM"),
}


class MasterMachine(RuleBasedStateMachine):
    """The model: worker count, code level (last edit) and generation (reloads so far)."""

    server = None  # set by the test: (Running, Site, pid file)
    launcher = None  # set by the test: starts the next master after a stop
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
        self.stopped = False
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

    @rule()
    def ttou(self) -> None:
        """One worker less; at one worker nothing changes (never fewer than one)."""
        running = self.server[0]
        clamped = running.log().count("TTOU: already at one worker")
        running.signal(signal.SIGTTOU)
        if self.workers == 1:  # converging proves nothing here: wait until the master said so
            running.wait_log(r"TTOU: already at one worker \(never fewer\); nothing changes",
                             count=clamped + 1, timeout=10)
        self.workers = max(1, self.workers - 1)
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
            if name == "TTIN" and self.workers >= MAX_WORKERS:
                continue
            self.workers = max(1, self.workers + {"HUP": 0, "TTIN": 1, "TTOU": -1}[name])
            hups += name == "HUP"
            before = running.log().count(f"received SIG{name}")
            running.signal(getattr(signal, f"SIG{name}"))
            running.wait_log(f"received SIG{name}", count=before + 1, timeout=10)
            sent.append(name)
        self.generation += hups
        self.converge("burst " + "+".join(sent))

    @precondition(lambda self: not self.stopped)
    @rule(how=st.sampled_from(sorted(STOPS)), hang=st.booleans())
    def stop_and_restart(self, how: str, hang: bool) -> None:
        """Stop the master one of the crossed ways; check how it ended; start a new one."""
        running, site, pid_file = self.server
        flag = self.launcher.tmp_path / "hang-on-stop"
        if hang:
            flag.write_text("")  # every worker's on_stop hangs from now on
        step = f"stop: {how}{' (on_stop hangs)' if hang else ''}"
        self.steps.append(step)
        first, second = STOPS[how]
        mark = len(running.log())  # what the master logs from here on is this stop's

        def since() -> str:
            return running.log()[mark:]

        started = time.monotonic()
        running.signal(getattr(signal, f"SIG{first}"))
        wait_for(lambda: f"received SIG{first}" in since() or running.proc.poll() is not None, 10,
                 f"the master to take SIG{first} in")
        if second is not None:
            running.signal(getattr(signal, f"SIG{second}"))  # the master may be gone already: no harm
        # TERM ends it all now (a hanging on_stop dies of it too); a graceful stop waits for on_stop.
        stop_now = second == "TERM"
        bound = (TERM_TIMEOUT if how == "TERM during a roll" else GRACEFUL) + 1
        expected = 1 if hang and not stop_now else 0
        try:
            code = running.proc.wait(bound + 10)
        except subprocess.TimeoutExpired:
            raise self.failed(f"{step}: the master did not exit; steps so far: {self.steps}\n"
                              f"{running.log()[-3000:]}") from None
        elapsed = time.monotonic() - started
        log = since()
        flag.unlink(missing_ok=True)
        problems = []
        if elapsed > bound:
            problems.append(f"exited {elapsed:.2f} s after SIG{first} (bound {bound:g} s)")
        # A second signal the master never took in came after it had finished (its handlers were
        # restored, everything cleaned up): the process may end of that signal's default action.
        late = second is not None and log.count(f"received SIG{second}") < (2 if second == first else 1)
        allowed = {expected, -getattr(signal, f"SIG{second}")} if late and second is not None else {expected}
        if code not in allowed:
            problems.append(f"exit status {code}, not {' or '.join(map(str, sorted(allowed)))}")
        if second == "HUP" and "received SIGHUP" in log and "reload ignored: the server is stopping" not in log:
            problems.append("a HUP during the stop was not ignored")
        if how == "QUIT twice" and log.count("received SIGQUIT") == 2 and "stop already in progress" not in log:
            problems.append("the second QUIT was not reported")
        try:
            wait_for(lambda: not session_members(running.proc.pid), 1.0, "every process of the session to exit")
        except AssertionError as exc:
            problems.append(str(exc))
        bound_ports = [running.port + i for i in range(MAX_WORKERS) if not port_free(running.port + i)]
        if bound_ports:
            problems.append(f"ports still bound: {bound_ports}")
        if pid_file.exists():
            problems.append("pid file left behind")
        if problems:
            raise self.failed(f"{step}: {'; '.join(problems)}; steps so far: {self.steps}\n{log[-3000:]}")
        running = site.start(self.launcher, workers=2, block=MAX_WORKERS, extra=master_flags(self.launcher))
        MasterMachine.server = (running, site, pid_file)
        self.stopped = True  # one stop per example: each costs a new master
        self.workers = 2
        self.generation = ctl(pid_file, "status")["generation"]
        self.level = site.level
        self.converge(f"restart after {how}")

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
            raise self.failed(f"{exc}: {why[0]}; steps so far: {self.steps}\n{ctl(pid_file, 'status')}\n"
                              f"{running.log()[-3000:]}") from None
        self.times.append(time.monotonic() - started)

    times: list[float] = []
    failures: list[str] = []  # what failed, kept: hypothesis may replace it with a flakiness error

    def failed(self, message: str) -> AssertionError:
        """Record ``message`` and return the AssertionError to raise (real processes do not replay
        the same way twice, so hypothesis's replay of a failure may end in FlakyStrategyDefinition)."""
        self.failures.append(message)
        return AssertionError(message)

    @invariant()
    def master_alive(self) -> None:
        assert self.server[0].proc.poll() is None, "the master exited"


def master_flags(launcher) -> list[str]:
    """serve_project.py flags of the machine's masters: a short graceful_timeout, the on_stop hang flag."""
    return ["--graceful-timeout", f"{GRACEFUL:g}", "--hang-on-stop", str(launcher.tmp_path / "hang-on-stop")]


def state_machine(launcher, examples: int = 8, steps: int = 10, derandomize: bool = True) -> scenarios.Result:
    """Run the machine against one master (a new one after each stop); the Result counts steps and
    the slowest convergence."""
    result = scenarios.Result("state machine: HUP/TTIN/TTOU/kill/edit/stop", f"{examples} examples x {steps} steps")
    site = scenarios.Site(launcher.tmp_path)
    # Room for MAX_WORKERS ports: start with 2 workers on a block of MAX_WORKERS free ports.
    running = site.start(launcher, workers=2, block=MAX_WORKERS, extra=master_flags(launcher))
    MasterMachine.server = (running, site, launcher.tmp_path / "server.pid")
    MasterMachine.launcher = launcher
    MasterMachine.steps = []
    MasterMachine.times = []
    MasterMachine.failures = []
    started = time.monotonic()
    try:
        run_state_machine_as_test(MasterMachine, settings=settings(
            max_examples=examples, stateful_step_count=steps, deadline=None, derandomize=derandomize,
            suppress_health_check=list(HealthCheck), database=None,
            # no shrinking: each replay of real processes costs seconds; the failure names its steps
            phases=[Phase.explicit, Phase.reuse, Phase.generate]))
    except (AssertionError, HypothesisException) as exc:
        first = MasterMachine.failures[0] if MasterMachine.failures else str(exc)
        result.problems.append(first[:2000])
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
