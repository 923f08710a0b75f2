"""The worker command registry, on plain objects (no processes)."""

from __future__ import annotations

import pytest

from prefork.commands import BUILTINS, BadArguments, UnknownCommand, known_commands, run_command
from prefork.worker import Worker


class Recorder(Worker):
    def __init__(self) -> None:  # no server: only the command methods are exercised
        self.calls: list[tuple[str, tuple]] = []

    def on_foo(self, *args):
        self.calls.append(("on_foo", args))

    def child_foo(self, *args):
        """Do foo."""
        self.calls.append(("child_foo", args))
        return len(args)

    def on_stop(self):
        self.calls.append(("on_stop", ()))

    def child_stop(self):
        self.calls.append(("child_stop", ()))


def test_on_foo_runs_before_child_foo_and_the_result_is_returned():
    worker = Recorder()
    assert run_command(worker, "foo", [1, "two"]) == 2
    assert worker.calls == [("on_foo", (1, "two")), ("child_foo", (1, "two"))]


def test_stop_does_not_run_on_stop_first():
    worker = Recorder()
    run_command(worker, "stop", [])
    assert worker.calls == [("child_stop", ())]  # on_stop runs after the drain, in the worker runtime


def test_unknown_commands_list_the_known_ones():
    with pytest.raises(UnknownCommand, match=r"unknown command 'bar'; known commands: foo, help, ping, reopen_logs, stats, stop"):
        run_command(Recorder(), "bar", [])


@pytest.mark.parametrize("name", ["__init__", "_private", "../x", "", "foo bar", "on_foo"])
def test_names_that_are_not_commands_are_refused(name):
    with pytest.raises(UnknownCommand):
        run_command(Recorder(), name, [])


def test_help_has_one_line_per_command():
    commands = known_commands(Recorder())
    assert commands["foo"] == "Do foo."
    for name, text in BUILTINS.items():
        assert commands[name] == text and "\n" not in text


def test_arguments_that_do_not_fit_are_refused_before_anything_runs():
    worker = Recorder()
    with pytest.raises(BadArguments, match=r"stop: too many positional arguments"):
        run_command(worker, "stop", [1])
    assert worker.calls == []
