"""`python -m build` makes an sdist and a wheel that install into a fresh venv and run.

The wheel is built from the sdist (so the sdist is complete), with this environment's setuptools
(`--no-isolation`: no build environment to download), and installed with `--no-deps --no-index`
into a new venv that finds the dependencies (networkx, waitress...) in this environment's
site-packages through a .pth file; this environment's editable install of the project is not
visible there, so what runs is the wheel's copy. A few seconds, no network.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tarfile
import textwrap
import time
import urllib.request
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("projectr", "prefork")


def _run(*args: str | Path, cwd: Path | None = None, timeout: float = 120) -> str:
    result = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{args}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _version() -> str:
    """The version, from the one place that holds it."""
    match = re.search(r'^version = "([^"]+)"$', (ROOT / "pyproject.toml").read_text(), re.M)
    assert match, "pyproject.toml has no [project] version"
    return match.group(1)


def _source_copy(dest: Path) -> Path:
    """What a clean checkout gives the build backend (not the caches, venvs or egg-info of this tree)."""
    dest.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE", "MANIFEST.in", "setup.cfg", "setup.py"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, dest / name)
    for package in PACKAGES:
        shutil.copytree(ROOT / package, dest / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, deadline: float) -> str:
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return str(response.read().decode())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_build_install_and_run(tmp_path: Path) -> None:
    version = _version()
    src = _source_copy(tmp_path / "src")
    dist = tmp_path / "dist"
    _run(sys.executable, "-m", "build", "--no-isolation", "--outdir", dist, src)
    [sdist] = dist.glob("*.tar.gz")
    [wheel] = dist.glob("*.whl")
    assert version in sdist.name and version in wheel.name

    with tarfile.open(sdist) as tar:
        in_sdist = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    assert {"pyproject.toml", "README.md", "projectr/py.typed", "prefork/py.typed"} <= in_sdist
    with zipfile.ZipFile(wheel) as whl:
        in_wheel = set(whl.namelist())
        entry_points = next(whl.read(n).decode() for n in in_wheel if n.endswith(".dist-info/entry_points.txt"))
    assert {"projectr/py.typed", "prefork/py.typed", "projectr/cli.py", "prefork/cli.py"} <= in_wheel
    assert "prefork = prefork.cli:main" in entry_points and "projectr = projectr.cli:main" in entry_points

    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    _run(sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--no-index", wheel)
    site = Path(_run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))").strip())
    ours = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    (site / "_test_dependencies.pth").write_text("".join(f"{p}\n" for p in sorted(ours)))

    where = _run(python, "-c", textwrap.dedent("""
        import prefork, projectr
        print(projectr.__version__)
        print(projectr.__file__)
        print(prefork.__file__)
    """), cwd=tmp_path).split()  # not from this checkout: -c puts the current directory first on sys.path
    assert where[0] == version
    for path in where[1:]:
        assert Path(path).is_relative_to(site), f"{path} is not the wheel's copy"
    for package in PACKAGES:
        assert (site / package / "py.typed").is_file()

    assert _run(venv / "bin" / "prefork", "--help", cwd=tmp_path).startswith("usage: prefork")
    assert _run(venv / "bin" / "projectr", "--help", cwd=tmp_path).startswith("usage: projectr")

    # The installed packages at work: projectr checks a project, prefork serves an app.
    app = tmp_path / "app"
    (app / "hello").mkdir(parents=True)
    (app / "hello" / "__init__.py").write_text("")
    (app / "hello" / "wsgi.py").write_text(textwrap.dedent("""
        def application(environ, start_response):
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"hello from the wheel\\n"]
    """))
    (app / "project.py").write_text(textwrap.dedent("""
        from projectr import Project
        p = Project("hello")
        with p.directory("hello"):
            p.file("__init__")
            p.file("wsgi")
    """))
    assert _run(venv / "bin" / "projectr", "check", "project.py", cwd=app).startswith("ok: 2 files loaded")
    port = _free_port()
    (app / "serve.py").write_text(textwrap.dedent(f"""
        import sys
        from prefork import Server
        from hello.wsgi import application
        Server(application, workers=1, host="127.0.0.1", port={port}, stderr=sys.stderr).start()
    """))
    server = subprocess.Popen([str(python), "serve.py"], cwd=app, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert _get(f"http://127.0.0.1:{port}/", time.monotonic() + 30) == "hello from the wheel\n"
        server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=30)
        assert server.returncode == 0, err
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
