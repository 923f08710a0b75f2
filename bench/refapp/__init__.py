"""The reference application every server is benchmarked with: a heavy vendor layer plus a project layer.

`generate(out, ...)` writes both into `out` (a temporary folder at bench time; never committed).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.refapp.layer import (APP, DEFINITION, LEAF, ROOT, cpu_iterations, set_mark,
                                touch_definition, write_definition, write_layer, write_unrelated)
from bench.refapp.vendor import PACKAGE as VENDOR, generate_vendor

__all__ = ["APP", "DEFINITION", "LEAF", "ROOT", "RefApp", "generate", "generate_tree", "set_mark",
           "touch_definition"]


@dataclass
class RefApp:
    """Where a generated reference application lives and what it cost."""

    tree: str              # folder holding refproj/ and project.py (the servers' working directory)
    vendor_path: str       # folder holding heavyvendor/ (goes on PYTHONPATH)
    modules: int           # project-layer modules
    vendor_seconds: float  # measured CPU seconds to import the vendor layer
    cpu_iterations: int    # /cpu loop length (about 2 ms)

    @property
    def spec(self) -> str:
        """The WSGI application every server serves ("module:attr")."""
        return APP

    @property
    def ready_path(self) -> str:
        """A cheap page that answers 200 once the server serves."""
        return "/hello"

    @property
    def pythonpath(self) -> str:
        """PYTHONPATH every server runs with."""
        return f"{self.tree}:{self.vendor_path}"


def generate_tree(tree: Path, modules: int, vendor_path: str, vendor_seconds: float,
                  cpu_iters: int, unrelated: int = 5000, vendor_modules: int = 40) -> RefApp:
    """Write a project layer (and its definition and unrelated files) into `tree`, sharing a vendor."""
    tree.mkdir(parents=True, exist_ok=True)
    paths = write_layer(tree, modules, VENDOR, vendor_modules, cpu_iters)
    write_definition(tree, paths)
    write_unrelated(tree, unrelated)
    age_tree(tree)
    app = RefApp(str(tree), vendor_path, modules, vendor_seconds, cpu_iters)
    (tree / "refapp.json").write_text(json.dumps(asdict(app), indent=1))
    return app


def age_tree(tree: Path, seconds: float = 3600.0) -> None:
    """Date every file in tree `seconds` back, as in a project at rest.

    Files written in the last moments are "racily clean" for projectr (a second write in the same
    timestamp tick could leave mtime and size alike), so it hashes them: a cost of the generator,
    not of editing.
    """
    then = time.time() - seconds
    for folder, _, files in os.walk(tree):
        for name in files:
            os.utime(os.path.join(folder, name), (then, then))


def generate(out: Path, vendor_cost: float = 1.0, vendor_mb: float = 24.0, modules: int = 20,
             unrelated: int = 5000) -> RefApp:
    """Generate the vendor layer in out/vendor and one project tree in out/tree."""
    vendor_root, seconds = generate_vendor(out, vendor_cost, vendor_mb)
    return generate_tree(out / "tree", modules, str(vendor_root), seconds, cpu_iterations(),
                         unrelated)
