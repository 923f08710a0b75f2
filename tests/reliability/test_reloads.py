"""Reloads and bad edits under keep-alive load: counts of failed requests, code generations, recovery."""

from __future__ import annotations

import pytest

from tests.reliability import scenarios

pytestmark = pytest.mark.reliability


def test_reloads_under_load_fail_nothing_and_never_go_back(processes) -> None:
    result = scenarios.reloads_under_load(processes, reloads=20, workers=4, clients=8)
    print(result.row())
    result.assert_ok()
    assert result.requests > 100 and result.recoveries == 20


def test_bad_edits_under_load_keep_old_code_serving_and_master_answering(processes) -> None:
    result = scenarios.bad_edits_under_load(processes, rounds=1, workers=4, clients=8, reload_timeout=2.0)
    print(result.row())
    result.assert_ok()
    assert result.extra["failed reloads logged"] == len(scenarios.BAD_EDITS)
