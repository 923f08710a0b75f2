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
