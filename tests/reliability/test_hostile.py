"""Hostile input on the worker control channel and the ctl socket; another uid is refused."""

from __future__ import annotations

import pytest

from tests.reliability import scenarios

pytestmark = pytest.mark.reliability


def test_hostile_input_gets_an_error_each_and_nothing_breaks(processes) -> None:
    result = scenarios.hostile_input(processes, burst=10_000)
    print(result.row())
    result.assert_ok()
