"""The generated project layer: package `refproj` (settings -> models -> services -> views -> urls -> app),
its projectr definition (project.py) and a folder of unrelated files.

Every peer serves the same `refproj.app:application`. `/` answers `version=ROOT:LEAF pid=PID`, where ROOT
is `refproj.settings.MARK` (an edit near the root of the import tree: every module reloads) and LEAF is
`refproj.views.index.MARK` (a leaf edit: index, urls and app reload). `/hello` is tiny, `/cpu` burns
about 2 ms of CPU.
"""
from __future__ import annotations

import re
import time
from pathlib import Path

PACKAGE = "refproj"
LEAF = f"{PACKAGE}/views/index.py"
ROOT = f"{PACKAGE}/settings.py"
DEFINITION = "project.py"
APP = f"{PACKAGE}.app:application"
_FIXED = 7  # __init__, settings, models/__init__, services/__init__, views/__init__, urls, app

_SETTINGS = '''"""refproj.settings: configuration every other module reads."""
MARK = "r0"
CPU_ITERATIONS = {cpu_iterations}
DEBUG = False
# pad: #
'''

_MODEL = '''"""refproj.models.{name}: a generated model."""
from refproj import settings
from {vendor} import mod_{vmod:03d} as _vendor


class Model:
    table = "{name}"

    def __init__(self, pk):
        self.pk = pk

    def describe(self):
        return "%s#%d%s" % (self.table, self.pk, "!" if settings.DEBUG else "")


DEFAULT = Model(len(_vendor.ROWS))
'''

_SERVICE = '''"""refproj.services.{name}: a generated service over two models."""
from refproj import settings
from refproj.models import {a} as _a, {b} as _b


def run(pk):
    return "%s+%s debug=%s" % (_a.Model(pk).describe(), _b.Model(pk + 1).describe(), settings.DEBUG)
'''

_VIEW = '''"""refproj.views.{name}: a generated view."""
from refproj.services import {service} as _service

PATH = "/v/{name}"


def handle(environ):
    return _service.run(1) + "\\n"
'''

_INDEX = '''"""refproj.views.index: the page that says which code and which worker answered."""
import os

from refproj import settings
from refproj.services import {service} as _service

MARK = "l0"
PATH = "/"


def handle(environ):
    return "version=%s:%s pid=%d\\n" % (settings.MARK, MARK, os.getpid())
# pad: #
'''

_HELLO = '''"""refproj.views.hello: the smallest response."""
PATH = "/hello"


def handle(environ):
    return "hello\\n"
'''

_CPU = '''"""refproj.views.cpu: about 2 ms of CPU per request."""
from refproj import settings

PATH = "/cpu"


def handle(environ):
    acc = 0
    for i in range(settings.CPU_ITERATIONS):
        acc = (acc + i * i) % 1000003
    return "cpu %d\\n" % acc
'''

_APP = '''"""refproj.app: the WSGI entry point every server runs."""
from refproj import settings, urls


def application(environ, start_response):
    handler = urls.ROUTES.get(environ.get("PATH_INFO") or "/")
    if handler is None:
        body, status = b"not found\\n", "404 Not Found"
    else:
        body, status = handler(environ).encode(), "200 OK"
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
'''


def _burn(n: int) -> int:
    """The /cpu view's loop, run here to calibrate it."""
    acc = 0
    for i in range(n):
        acc = (acc + i * i) % 1000003
    return acc


def cpu_iterations(target_seconds: float = 0.002) -> int:
    """Return how many iterations of the /cpu loop cost target_seconds of CPU on this machine."""
    n = 200_000
    best = float("inf")
    for _ in range(5):  # shared machine: the least disturbed run is the truest
        t = time.process_time()
        _burn(n)
        best = min(best, time.process_time() - t)
    return max(1, int(n * target_seconds / best))


def layer_sizes(modules: int) -> tuple[int, int, int]:
    """Split `modules` project modules into (models, services, extra views)."""
    if modules < 20:
        raise ValueError("the project layer needs at least 20 modules")
    rest = modules - _FIXED
    models = services = rest // 3
    return models, services, rest - models - services - 3  # index, hello, cpu are the 3 fixed views


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def write_layer(out: Path, modules: int, vendor: str, vendor_modules: int, cpu_iters: int) -> list[str]:
    """Write package refproj under out and return its module paths (relative, in load order)."""
    n_models, n_services, n_views = layer_sizes(modules)
    pkg = out / PACKAGE
    models = [f"model_{i:03d}" for i in range(n_models)]
    services = [f"service_{i:03d}" for i in range(n_services)]
    views = [f"view_{i:03d}" for i in range(n_views)]
    files = {f"{PACKAGE}/__init__.py": '"""refproj: the generated reference project."""\n',
             ROOT: _SETTINGS.format(cpu_iterations=cpu_iters),
             f"{PACKAGE}/models/__init__.py": '"""refproj.models"""\n'}
    for i, name in enumerate(models):
        files[f"{PACKAGE}/models/{name}.py"] = _MODEL.format(name=name, vendor=vendor,
                                                             vmod=i % vendor_modules)
    files[f"{PACKAGE}/services/__init__.py"] = '"""refproj.services"""\n'
    for i, name in enumerate(services):
        files[f"{PACKAGE}/services/{name}.py"] = _SERVICE.format(
            name=name, a=models[i % n_models], b=models[(i * 7 + 1) % n_models])
    files[f"{PACKAGE}/views/__init__.py"] = '"""refproj.views"""\n'
    files[LEAF] = _INDEX.format(service=services[0])
    files[f"{PACKAGE}/views/hello.py"] = _HELLO
    files[f"{PACKAGE}/views/cpu.py"] = _CPU
    for i, name in enumerate(views):
        files[f"{PACKAGE}/views/{name}.py"] = _VIEW.format(name=name, service=services[i % n_services])
    all_views = ["index", "hello", "cpu"] + views
    files[f"{PACKAGE}/urls.py"] = (
        '"""refproj.urls: the route table."""\n'
        f"from refproj.views import ({', '.join(all_views)})\n\n"
        f"ROUTES = {{view.PATH: view.handle for view in ({', '.join(all_views)},)}}\n")
    files[f"{PACKAGE}/app.py"] = _APP
    for rel, text in files.items():
        _write(out / rel, text)
    return list(files)


def write_definition(out: Path, module_paths: list[str]) -> Path:
    """Write out/project.py declaring every module of the layer (imports add the other edges)."""
    lines = ['"""projectr definition of the generated reference project."""',
             "from projectr import Project", "", 'p = Project("refproj")']
    current: tuple[str, ...] = ()
    for rel in module_paths:
        parts = tuple(rel[:-3].split("/"))
        folder, name = parts[:-1], parts[-1]
        common = 0
        while common < min(len(folder), len(current)) and folder[common] == current[common]:
            common += 1
        for depth in range(common, len(folder)):
            lines.append("    " * depth + f"with p.directory({folder[depth]!r}):")
        current = folder
        needs = ', needs=["../settings"]' if folder[-1:] == ("models",) and name != "__init__" else ""
        lines.append("    " * len(folder) + f"p.file({name!r}{needs})")
    path = out / DEFINITION
    path.write_text("\n".join(lines) + "\n")
    return path


def write_unrelated(out: Path, count: int, per_dir: int = 100) -> None:
    """Write `count` small files that no server should care about, inside the project's package."""
    kinds = ("txt", "html", "css", "js", "json")
    for i in range(count):
        folder = out / PACKAGE / "static" / f"d{i // per_dir:03d}"
        if i % per_dir == 0:
            folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{i:05d}.{kinds[i % len(kinds)]}").write_text(f"unrelated file {i}\n")


_MARK_LINE = re.compile(r'^MARK = "[^"]*"$', re.M)
_PAD_LINE = re.compile(r"^# pad: #*$", re.M)


def set_mark(path: Path, mark: str, serial: int) -> None:
    """Rewrite the MARK line of an edit target in place, as an editor would.

    The padding changes the file size on every edit, so a peer's bytecode cache (keyed on mtime
    seconds and size) never serves stale code and every peer is timed on the same footing.
    """
    text = _MARK_LINE.sub(f'MARK = "{mark}"', path.read_text(), count=1)
    text = _PAD_LINE.sub("# pad: " + "#" * (serial % 3 + 1), text, count=1)
    with open(path, "w") as f:
        f.write(text)


def touch_definition(path: Path, serial: int) -> None:
    """Edit project.py without changing what it declares (a comment line), in place."""
    text = path.read_text().split("\n# edit ", 1)[0].rstrip("\n")
    with open(path, "w") as f:
        f.write(text + f"\n# edit {serial}{'#' * (serial % 3)}\n")
