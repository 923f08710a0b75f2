"""Chaos, crash loops, orphans and shutdowns: real SIGKILLs, counted forks and failures."""

from __future__ import annotations

import pytest

from tests.reliability import scenarios

pytestmark = pytest.mark.reliability


def test_chaos_every_slot_serves_again_within_a_second_without_a_fork_storm(processes) -> None:
    result = scenarios.chaos(processes, seconds=5.0, interval=0.1, workers=4, clients=8)
    print(result.row())
    result.assert_ok()


def test_crash_loop_backs_off_with_bounded_cpu_and_resumes_after_the_fix(processes) -> None:
    result = scenarios.crash_loop(processes, crash_seconds=4.0)
    print(result.row())
    result.assert_ok()


def test_sigkill_of_the_master_leaves_no_worker_and_no_port(processes) -> None:
    result = scenarios.master_sigkill(processes)
    print(result.row())
    result.assert_ok()


@pytest.mark.parametrize("how", ["QUIT", "TERM"])
def test_shutdown_with_20_slow_requests_in_flight(processes, how: str) -> None:
    result = scenarios.graceful_shutdown(processes, how=how, slow=1.0 if how == "QUIT" else 20.0)
    print(result.row())
    result.assert_ok()


def test_a_term_sent_right_after_fork_is_never_lost() -> None:
    """The master's fork path: a TERM that reaches a child before it reset its handlers still kills it.

    (A worker retired before it was ready, TTIN then TTOU, used to swallow its TERM and serve old
    code until the SIGKILL term_timeout later.)
    """
    import os
    import signal
    import time

    from prefork import signals

    pipe = signals.WakeupPipe()
    router = signals.SignalRouter(pipe)
    router.install(list(signals.SIGNAL_EVENTS), wake_on=[signal.SIGCHLD])  # the master's handlers
    statuses = []
    try:
        for _ in range(30):
            with signals.blocked_for_fork():
                pid = os.fork()
            if pid == 0:  # a worker: reset, then live for 10 s unless the TERM acts
                try:
                    os.setsid()
                    signals.reset_in_child()
                    time.sleep(10)
                finally:
                    os._exit(7)
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 2
            done, raw = os.waitpid(pid, os.WNOHANG)
            while not done and time.monotonic() < deadline:
                time.sleep(0.005)  # polling the child's exit with a deadline
                done, raw = os.waitpid(pid, os.WNOHANG)
            if not done:  # the TERM was lost: kill its session, record the failure
                os.killpg(pid, signal.SIGKILL)
                _, raw = os.waitpid(pid, 0)
            statuses.append((os.waitstatus_to_exitcode(raw), bool(done)))
    finally:
        router.restore()
        pipe.close()
    assert statuses == [(-signal.SIGTERM, True)] * 30
