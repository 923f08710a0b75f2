"""The definition of myproject: its source files, their folders, and what needs what.

`needs=` edges are declared by hand where an import cannot show the dependency
(settings read by services through a registry, the page template); every other
edge (views -> services -> models) is discovered by projectr from the imports.
Edit this file while the server runs: the next reload re-reads it first.
"""
from pathlib import Path

from projectr import Project

HERE = Path(__file__).resolve().parent

project = Project("myproject", root=HERE)
with project.directory("myproject"):
    project.file("__init__")
    project.file("version")
    project.file("settings", needs=["version"])
    with project.directory("models"):
        project.file("__init__")
        project.file("item")
    with project.directory("services"):
        project.file("__init__")
        # catalog reads settings through a lookup, not an import: declare the edge.
        project.file("catalog", needs=["../settings"])
    with project.directory("views"):
        project.file("__init__")
        project.file("pages")
        project.file("api")
    project.file("app")
    # Templates are read once per worker: a change re-forks the workers, no module reloads.
    project.resource("templates/*.html")
