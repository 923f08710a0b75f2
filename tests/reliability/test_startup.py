"""Two masters racing for one pid file; resource faults at start: clear errors, nothing left behind."""

from __future__ import annotations

import pytest

from tests.reliability import scenarios

pytestmark = pytest.mark.reliability


def test_two_masters_at_once_exactly_one_serves(processes) -> None:
    result = scenarios.two_masters(processes, rounds=4)
    print(result.row())
    result.assert_ok()


def test_resource_faults_give_a_clear_error_and_no_partial_state(processes) -> None:
    result = scenarios.resource_faults(processes)
    print(result.row())
    result.assert_ok()


def test_pid_file_race_has_exactly_one_winner(processes) -> None:
    result = scenarios.pid_file_race(processes, rounds=100)
    print(result.row())
    result.assert_ok()
