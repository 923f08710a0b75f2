"""The quick start commands of docs/integration.md are the commands this suite runs.

Each sh block of "## Quick start" must be ``prefork APP --reload -w 2`` for the generated app of
its kind (what every scenario here serves with ``python -m prefork``); the plain app's command is
also run literally through the ``prefork`` console script and must serve like a fresh start.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

import harness

DOC = Path(__file__).resolve().parents[2] / "docs" / "integration.md"
KINDS = ["django", "flask", "plain"]  # the order of the blocks in the section


def quickstart_commands() -> list[str]:
    text = DOC.read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```sh\n(.*?)```", section, re.S)]


def test_each_quickstart_command_is_the_command_the_suite_serves(app_templates):
    commands = quickstart_commands()
    assert len(commands) == len(KINDS)
    for kind, command in zip(KINDS, commands):
        spec = app_templates(kind).spec
        server = harness.ServerProcess(app_templates(kind).dir, spec.app, run_dir=app_templates(kind).dir.parent)
        served = server.command()  # [python, -m, prefork, APP, --reload, -w, 2, -p, PORT, --pid, FILE]
        assert command.split() == ["prefork", *served[3:served.index("-p")]], (kind, command)


class ConsoleScriptServer(harness.ServerProcess):
    """The quick start line as typed (the ``prefork`` script of this interpreter), on a free port."""

    line: list[str] = []

    def command(self) -> list[str]:
        script = str(Path(sys.executable).with_name("prefork"))
        return [script, *self.line[1:], "-p", str(self.port), "--port-per-worker", "--pid", str(self.pid_file)]


def test_the_plain_quickstart_line_serves_and_reloads_like_a_fresh_start(plain_app):
    ConsoleScriptServer.line = quickstart_commands()[KINDS.index("plain")].split()
    server = ConsoleScriptServer(plain_app.dir, plain_app.spec.app, run_dir=plain_app.run_dir, name="quick")
    plain_app.servers.append(server)
    server.start()
    paths = plain_app.paths()
    before = plain_app.assert_pristine(server, paths)
    hello = plain_app.dir / "hello.py"
    text = hello.read_text()
    match = re.search(r'"([^"\n]*[A-Za-z][^"\n]*)"', text)
    if match is None:
        pytest.fail("no string literal to edit in hello.py")
    harness.edit(hello, match.group(0), match.group(0)[:-1] + ' (edited)"')
    plain_app.assert_like_fresh(server, paths, changed_from=before)
