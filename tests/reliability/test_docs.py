"""docs/reliability.md: every code block is run, and its claims about the suite are checked."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

from prefork.server import Server
from tests.reliability.harness import PYTHON, REPO

pytestmark = pytest.mark.reliability

DOC = REPO / "docs" / "reliability.md"


def blocks() -> list[str]:
    return re.findall(r"```sh\n(.*?)```", DOC.read_text(), re.S)


def command(line: str) -> list[str]:
    args = shlex.split(line)
    assert args[0] == ".venv/bin/python"
    return [PYTHON, *args[1:]]


def test_the_pytest_block_selects_the_reliability_tests() -> None:
    (line,) = blocks()[0].strip().splitlines()
    result = subprocess.run([*command(line), "--collect-only", "-q", "-p", "no:cacheprovider"], cwd=REPO,
                            capture_output=True, text=True, timeout=120, start_new_session=True)
    assert result.returncode == 0, result.stdout + result.stderr
    collected = [ln for ln in result.stdout.splitlines() if "::" in ln]
    assert len(collected) >= 12 and all(ln.startswith("tests/reliability/") for ln in collected)


def test_the_soak_block_runs_and_prints_the_table(tmp_path: Path) -> None:
    long_run, short_run = blocks()[1].strip().splitlines()
    assert "--minutes 30" in long_run
    help_text = subprocess.run([*command(long_run)[:2], "--help"], cwd=REPO, capture_output=True, text=True,
                               timeout=60, start_new_session=True).stdout
    help_text = re.sub(r"-\s+", "-", " ".join(help_text.split()))  # argparse wraps at hyphens
    for name in ("chaos", "nginx", "reloads", "bad-edits", "hostile", "two-masters", "state-machine"):
        assert name in help_text
    # the second block's form, on a scenario that takes a second
    args = command(short_run.replace("--only chaos --only nginx", "--only master-sigkill"))
    result = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=120, start_new_session=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "| scenario | load | duration | requests | failures | recoveries | max recovery |" in result.stdout
    assert re.search(r"\| SIGKILL of the master \|.*\| ok \|", result.stdout)


def test_the_documented_term_time_is_the_servers() -> None:
    assert "`Server.term_timeout` (5 s)" in DOC.read_text() and Server.term_timeout == 5.0
