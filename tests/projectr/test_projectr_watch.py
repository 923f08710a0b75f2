"""Watchers: every editor save style on every backend, filtering, coalescing, git lock, definition file."""
from __future__ import annotations

import os
import select
import time

import pytest

from projectr import Project
from projectr.watch import BACKENDS, choose_backend, gitlock
from projectr_testutil import (bump_mtime, collect_changes, next_batch, tree,  # noqa: F401  (tree is a fixture)
                               wait_readable)

OPTIONS = {"inotify": {}, "watchdog": {}, "polling": {"interval": 0.02}}


def _project(tree, count: int = 3):
    tree.write("PKG/__init__.py", "")
    for i in range(count):
        tree.write(f"PKG/m{i}.py", f"X = {i}\n")
    p = tree.project()
    with p.directory(tree.pkg):
        p.file("__init__")
        for i in range(count):
            p.file(f"m{i}")
    return p


def _write_in_place(path: str) -> None:
    with open(path, "r+b") as f:  # no truncate, same size
        data = f.read()
        f.seek(0)
        f.write(data.replace(b"X", b"Y"))


def _truncate_and_write(path: str) -> None:
    with open(path, "w") as f:
        f.write("X = 'truncated and written'\n")


def _touch(path: str) -> None:
    bump_mtime(path)


def _atomic_rename_over(path: str) -> None:
    tmp = path + ".tmp~"  # an editor's temp file: not a project file
    with open(tmp, "w") as f:
        f.write("X = 'renamed over'\n")
    os.replace(tmp, path)


def _delete_and_recreate(path: str) -> None:
    os.unlink(path)
    with open(path, "w") as f:
        f.write("X = 'recreated'\n")


SAVES = [_write_in_place, _truncate_and_write, _touch, _atomic_rename_over, _delete_and_recreate]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("save", SAVES, ids=lambda f: f.__name__.strip("_"))
def test_every_save_style_is_seen(tree, backend, save):
    p = _project(tree)
    target = str(tree.path("PKG/m1.py"))
    with p.watch_changes(backend=backend, **OPTIONS[backend]) as w:
        save(target)
        assert collect_changes(w, {target}) == {target}
        while wait_readable(w, 0.2):  # a threaded backend may deliver the rest of the save later
            assert set(w.changed_files()) <= {target}
        assert w.changed_files() == []
        assert not wait_readable(w, 0.05)  # nothing left to wake us


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_project_files_are_ignored_and_drained(tree, backend):
    p = _project(tree)
    target = str(tree.path("PKG/m0.py"))
    with p.watch_changes(backend=backend, **OPTIONS[backend]) as w:
        tree.write("PKG/.m0.py.swp", "swap")
        tree.write("PKG/m0.py~", "backup")
        tree.write("PKG/unrelated.py", "X = 1\n")
        tree.write("PKG/__pycache__/m0.cpython-311.pyc", "x")
        os.mkdir(tree.path("PKG/newdir"))
        if wait_readable(w, 0.3):  # inotify wakes for them; the others filter in their thread
            assert w.changed_files() == []
        assert not wait_readable(w, 0.05)  # drained: the fd does not stay readable
        _truncate_and_write(target)  # a real change after the noise is still seen
        assert collect_changes(w, {target}) == {target}


@pytest.mark.parametrize("backend", BACKENDS)
def test_burst_is_reported_once_per_file(tree, backend):
    p = _project(tree, count=30)
    targets = {str(tree.path(f"PKG/m{i}.py")) for i in range(30)}
    with p.watch_changes(backend=backend, **OPTIONS[backend]) as w:
        for _ in range(3):  # an editor writing three times per save, over 30 files
            for path in sorted(targets):
                _truncate_and_write(path)
        batches = []
        seen: set[str] = set()
        while seen != targets and wait_readable(w, 5):
            batch = w.changed_files()
            assert len(batch) == len(set(batch))  # each file once per batch
            batches.append(batch)
            seen.update(batch)
        assert seen == targets
        if backend == "inotify":
            assert len([b for b in batches if b]) == 1  # events already queued: one batch
        assert batches[0] == sorted(batches[0], key=p.source_files.index)  # project order


def test_debounce_collects_a_burst_that_is_still_arriving(tree):
    """While a file is still being written, the window stays open: saves landing in it join the batch."""
    import threading
    p = _project(tree, count=5)
    paths = [str(tree.path(f"PKG/m{i}.py")) for i in range(5)]
    with p.watch_changes(backend="inotify", debounce=0.2, debounce_limit=1.0) as w, open(paths[0], "w") as slow:
        slow.write("X = 'half'\n")
        slow.flush()
        assert wait_readable(w)
        assert w.changed_files() == []  # the window is open: nothing yet, and no waiting

        def the_rest() -> None:
            for path in paths[1:]:
                _truncate_and_write(path)
            slow.close()

        rest = threading.Timer(0.02, the_rest)
        rest.start()
        try:
            assert next_batch(w) == paths
        finally:
            rest.join()


def test_a_finished_save_ends_the_burst_without_waiting_out_the_window(tree):
    """inotify sees a save end (the file closed after writing, or renamed into place): the batch is
    ready at once, with a window of seconds."""
    p = _project(tree)
    target = str(tree.path("PKG/m1.py"))
    with p.watch_changes(backend="inotify", debounce=5.0, debounce_limit=10.0) as w:
        _truncate_and_write(target)
        assert wait_readable(w, 2.0)
        assert w.changed_files() == [target]
        temporary = tree.path("PKG/.m1.py.tmp")
        temporary.write_text("X = 'renamed over'\n")
        os.replace(temporary, target)
        assert wait_readable(w, 2.0)
        assert w.changed_files() == [target]


def test_a_save_by_rename_waits_while_the_file_is_gone(tree):
    """An editor that keeps a backup renames the file away, then writes it anew: the batch must not
    end in between (a reload would find the file missing)."""
    p = _project(tree)
    target = str(tree.path("PKG/m1.py"))
    with p.watch_changes(backend="inotify", debounce=5.0, debounce_limit=10.0) as w:
        os.rename(target, target + "~")
        assert wait_readable(w, 2.0)
        assert w.changed_files() == []  # gone for now: the window stays open
        _truncate_and_write(target)
        os.chmod(target, 0o644)
        os.unlink(target + "~")
        assert wait_readable(w, 2.0)
        assert w.changed_files() == [target]
        assert not wait_readable(w, 0.05) or w.changed_files() in ([], [target])


@pytest.mark.parametrize("backend", BACKENDS)
def test_changed_files_never_waits_and_the_fd_wakes_when_the_window_ends(tree, backend):
    """A server calls changed_files() from its event loop: it must return at once, and select() on
    the fd must be enough to get the batch when the debounce window closes (the file is still open
    for writing, so inotify cannot tell that the save is over either)."""
    p = _project(tree)
    target = str(tree.path("PKG/m1.py"))
    window = 0.3
    with p.watch_changes(backend=backend, debounce=window, debounce_limit=1.0, **OPTIONS[backend]) as w, \
            open(target, "w") as writing:
        writing.write("X = 'still being written'\n")
        writing.flush()
        batch: list[str] = []
        first_read = None
        deadline = time.monotonic() + 5
        while not batch and time.monotonic() < deadline:
            assert wait_readable(w, deadline - time.monotonic())
            started = time.monotonic()
            batch = w.changed_files()
            assert time.monotonic() - started < window / 3  # never the window's wait
            first_read = first_read or started
        assert batch == [target]
        assert time.monotonic() - first_read >= window * 0.9  # the window was honoured all the same


@pytest.mark.parametrize("backend", BACKENDS)
def test_git_index_lock_holds_the_batch_until_released(tree, backend):
    p = _project(tree)
    git = tree.root / ".git"
    git.mkdir()
    lock = git / "index.lock"
    lock.write_text("")
    target = str(tree.path("PKG/m2.py"))
    with p.watch_changes(backend=backend, **OPTIONS[backend]) as w:
        _truncate_and_write(target)
        for _ in range(3):  # past the debounce window too
            if not wait_readable(w, 0.3):
                break
            assert w.changed_files() == []  # held while git works
        lock.unlink()
        assert collect_changes(w, {target}) == {target}


@pytest.mark.parametrize("backend", BACKENDS)
def test_changes_held_for_a_lock_that_goes_stale_are_released_without_another_event(tree, backend):
    """A crashed git leaves index.lock behind: once it is stale the fd wakes by itself."""
    p = _project(tree)
    git = tree.root / ".git"
    git.mkdir()
    lock = git / "index.lock"
    lock.write_text("")
    almost_stale = time.time() - gitlock.STALE_LOCK_SECONDS + 0.4
    os.utime(lock, (almost_stale, almost_stale))
    target = str(tree.path("PKG/m2.py"))
    with p.watch_changes(backend=backend, **OPTIONS[backend]) as w:
        _truncate_and_write(target)
        assert next_batch(w, timeout=5) == [target]  # nothing else happens: no write, no git
        assert lock.exists()


@pytest.mark.parametrize("backend", BACKENDS)
def test_definition_file_and_resources_are_watched(tree, backend):
    tree.write("PKG/__init__.py", "")
    tree.write("PKG/templates/a.html", "a")
    definition = tree.write("project.py", """
        from projectr import Project
        p = Project("watch-def-PKG")
        with p.directory("PKG"):
            p.file("__init__")
            p.resource("templates/*.html")
    """)
    p = Project.from_file(definition)
    with p.watch_changes(backend=backend, **OPTIONS[backend]) as w:
        with open(definition, "a") as f:
            f.write("# edited\n")
        assert collect_changes(w, {definition}) == {definition}
        new = tree.write("PKG/templates/new.html", "n")
        tree.write("PKG/templates/.new.html.swp", "n")
        assert collect_changes(w, {new}) == {new}


def test_files_added_by_a_definition_re_read_are_watched(tree):
    tree.write("PKG/__init__.py", "")
    tree.write("PKG/b.py", "B = 1\n")
    text = 'from projectr import Project\np = Project("readd-PKG")\nwith p.directory("PKG"):\n    p.file("__init__")\n'
    definition = tree.write("project.py", text)
    p = Project.from_file(definition)
    p.load()
    with p.watch_changes() as w:
        tree.write("project.py", text + '    p.file("b")\n')
        assert collect_changes(w, {definition}) == {definition}
        assert p.load() == [str(tree.path("PKG/b.py"))]
        target = tree.write("PKG/b.py", "B = 2\n")
        assert collect_changes(w, {target}) == {target}


def test_auto_backend_and_unknown_backend(tree):
    assert choose_backend("auto") == "inotify"  # Linux, inotify_simple installed
    assert choose_backend("polling") == "polling"
    with pytest.raises(ValueError):
        choose_backend("nope")


def test_fd_works_with_selectors_and_close_releases_it(tree):
    import selectors
    p = _project(tree)
    w = p.watch_changes()
    sel = selectors.DefaultSelector()
    sel.register(w, selectors.EVENT_READ)
    _touch(str(tree.path("PKG/m0.py")))
    assert sel.select(timeout=5)
    sel.close()
    fd = w.fileno()
    w.close()
    with pytest.raises(OSError):
        os.fstat(fd) if fd not in (0, 1, 2) else select.select([fd], [], [], 0)


@pytest.mark.parametrize("backend", ["inotify", "watchdog"])
def test_idle_watcher_uses_no_measurable_cpu(tree, backend):
    import time
    p = _project(tree, count=2000)
    with p.watch_changes(backend=backend) as w:
        cpu = time.process_time()  # all threads of this process, watchdog's observer included
        assert not wait_readable(w, 0.5)
        assert time.process_time() - cpu < 0.05


def test_a_forked_child_does_not_touch_the_parents_watches(tree):
    """A trial load in a fork must leave the parent's inotify watches alone."""
    p = _project(tree)
    target = str(tree.path("PKG/m0.py"))
    with p.watch_changes(backend="inotify") as w:
        p.load()
        pid = os.fork()
        if pid == 0:
            try:
                p._files, p._by_path = {}, {}  # as a re-read that drops the files would
                p._version += 1
                w.load_hints_begin()
                p.load()
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        _truncate_and_write(target)
        assert collect_changes(w, {target}) == {target}


@pytest.mark.parametrize("backend", ["watchdog", "polling"])
def test_closing_a_threaded_watcher_in_a_forked_child_leaves_the_parents_alone(tree, backend):
    """Workers close the master's watcher after fork; the master's thread must neither stop nor spin."""
    import time

    p = _project(tree)
    target = str(tree.path("PKG/m0.py"))
    with p.watch_changes(backend=backend, **OPTIONS[backend]) as w:
        pid = os.fork()
        if pid == 0:
            try:
                w.close()
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        cpu = time.process_time()  # every thread of this process, the watcher's included
        assert not wait_readable(w, 0.3)
        assert time.process_time() - cpu < 0.1
        _truncate_and_write(target)
        assert collect_changes(w, {target}) == {target}


def _git(root, *args: str) -> None:
    import subprocess
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.invalid",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.invalid", GIT_CONFIG_GLOBAL=os.devnull)
    subprocess.run(["git", *args], cwd=root, env=env, check=True, capture_output=True, timeout=60,
                   start_new_session=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_real_git_checkout_is_one_batch(tree, backend):
    """git holds .git/index.lock while it rewrites the tree: the switch is reported as one batch."""
    count = 60
    p = _project(tree, count=count)
    _git(tree.root, "init", "-q", "-b", "main")
    _git(tree.root, "add", "-A")
    _git(tree.root, "commit", "-q", "-m", "one")
    _git(tree.root, "checkout", "-q", "-b", "other")
    for i in range(count):
        tree.write(f"PKG/m{i}.py", f"X = 'other {i}'\n")
    _git(tree.root, "commit", "-q", "-am", "two")
    targets = {str(tree.path(f"PKG/m{i}.py")) for i in range(count)}
    with p.watch_changes(backend=backend, **OPTIONS[backend]) as w:
        _git(tree.root, "checkout", "-q", "main")
        batches = []
        seen: set[str] = set()
        while seen != targets and wait_readable(w, 5):
            batch = w.changed_files()
            if batch:
                batches.append(batch)
                seen.update(batch)
        assert seen == targets
        if backend == "inotify":
            assert len(batches) == 1
