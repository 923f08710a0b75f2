"""`projectr graph|check|affected|watch PROJECT_FILE ...`: inspect a project from the shell."""
from __future__ import annotations

import argparse
import glob
import logging
import os
import select
import shutil
import subprocess
import sys
from collections.abc import Sequence

from .errors import LoadError, ProjectError
from .graph import DependencyGraph
from .project import Project


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `projectr` console script and `python -m projectr`."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(name)s: %(message)s")
    try:
        project = Project.from_file(args.project_file)
    except (ProjectError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return int(args.handler(project, args) or 0)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="projectr", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    graph = sub.add_parser("graph", help="print the dependency graph (edges marked needs or import)")
    graph.add_argument("project_file")
    graph.add_argument("--format", choices=["text", "dot", "mermaid"], default="text")
    graph.add_argument("--output", "-o", help="with --format dot: render to this file with Graphviz "
                                              "(format from the extension, e.g. graph.svg)")
    graph.set_defaults(handler=cmd_graph)
    check = sub.add_parser("check", help="load every file; report errors, cycles, unlisted and missing files")
    check.add_argument("project_file")
    check.set_defaults(handler=cmd_check)
    affected = sub.add_parser("affected", help="what an edit of FILEs would reload, in order, and why")
    affected.add_argument("project_file")
    affected.add_argument("files", nargs="+")
    affected.set_defaults(handler=cmd_affected)
    watch = sub.add_parser("watch", help="print each change and what it would reload (loads nothing)")
    watch.add_argument("project_file")
    watch.add_argument("--backend", default="auto", choices=["auto", "inotify", "watchdog", "polling"])
    watch.set_defaults(handler=cmd_watch)
    return parser


def _rel(project: Project, path: str) -> str:
    return os.path.relpath(path, project.root)


# ---- graph ----------------------------------------------------------------------------------------

def cmd_graph(project: Project, args: argparse.Namespace) -> int:
    """Print the graph as text, Graphviz dot (optionally rendered) or Mermaid."""
    graph = project.graph
    nodes = [_rel(project, n) for n in project.load_order]
    edges = [(_rel(project, u), _rel(project, v), d["kind"]) for u, v, d in graph.edges(data=True)]
    edges.sort(key=lambda e: (nodes.index(e[0]), nodes.index(e[1])))
    text = {"text": _as_text, "dot": _as_dot, "mermaid": _as_mermaid}[args.format](project.name, nodes, edges)
    if args.output:
        if args.format != "dot":
            print("error: --output renders dot only", file=sys.stderr)
            return 2
        return _render(text, args.output)
    print(text, end="")
    return 0


def _as_text(name: str, nodes: list[str], edges: list[tuple[str, str, str]]) -> str:
    lines = [f"# project {name}: {len(nodes)} files in load order; 'a -> b' means b needs or imports a"]
    lines += [f"{n}" for n in nodes]
    lines += [f"{u} -> {v} [{kind}]" for u, v, kind in edges]
    return "\n".join(lines) + "\n"


def _as_dot(name: str, nodes: list[str], edges: list[tuple[str, str, str]]) -> str:
    lines = [f'digraph "{name}" {{', "  rankdir=LR;", "  node [shape=box];"]
    lines += [f'  "{n}";' for n in nodes]
    for u, v, kind in edges:
        style = "solid" if kind == "needs" else "dashed"
        lines.append(f'  "{u}" -> "{v}" [label="{kind}", style={style}];')
    return "\n".join(lines + ["}"]) + "\n"


def _as_mermaid(name: str, nodes: list[str], edges: list[tuple[str, str, str]]) -> str:
    ids = {n: f"n{i}" for i, n in enumerate(nodes)}
    lines = ["graph LR"] + [f'  {ids[n]}["{n}"]' for n in nodes]
    for u, v, kind in edges:
        arrow = "-->" if kind == "needs" else "-.->"
        lines.append(f"  {ids[u]} {arrow}|{kind}| {ids[v]}")
    return "\n".join(lines) + "\n"


def _render(dot_source: str, output: str) -> int:
    dot = shutil.which("dot")
    if dot is None:
        print("error: Graphviz 'dot' is not installed; use --format dot without --output", file=sys.stderr)
        return 1
    fmt = os.path.splitext(output)[1].lstrip(".") or "svg"
    subprocess.run([dot, f"-T{fmt}", "-o", output], input=dot_source, text=True, check=True)
    print(f"wrote {output}")
    return 0


# ---- check ----------------------------------------------------------------------------------------

def cmd_check(project: Project, args: argparse.Namespace) -> int:
    """Report missing and unlisted files, import cycles, and load errors; 0 only when clean."""
    problems = 0
    missing = [p for p in project.source_files if not os.path.isfile(p)]
    for path in missing:
        print(f"missing: {_rel(project, path)} is declared but not on disk")
    problems += len(missing)
    for path in _unlisted(project):
        print(f"unlisted: {_rel(project, path)} is in a declared folder but not in the project")
        problems += 1
    graph: DependencyGraph = project._tracker.graph(project)
    for unit in graph.units():
        print("cycle: " + " <-> ".join(_rel(project, p) for p in unit) + " (imports; they reload as one unit)")
    if not missing:
        try:
            loaded = project.load()
        except LoadError as exc:
            print(f"error: {exc}")
            problems += 1
        else:
            if not problems:
                print(f"ok: {len(loaded)} files loaded, {graph.graph.number_of_edges()} edges")
    return 1 if problems else 0


def _unlisted(project: Project) -> list[str]:
    declared = set(project.source_files) | {project.definition_file}
    folders = sorted({os.path.dirname(p) for p in project.source_files})
    return [p for d in folders for p in sorted(glob.glob(os.path.join(d, "*.py"))) if p not in declared]


# ---- affected -------------------------------------------------------------------------------------

def cmd_affected(project: Project, args: argparse.Namespace) -> int:
    """Print what an edit of the files would reload, with the edge that pulled each file in."""
    paths = [os.path.abspath(f) for f in args.files]
    known = set(project.source_files)
    for path in paths:
        if path not in known:
            print(f"warning: {path} is not a source file of {project.name}", file=sys.stderr)
    _print_affected(project, [p for p in paths if p in known])
    return 0


def _print_affected(project: Project, paths: list[str]) -> None:
    graph = project._tracker.graph(project)
    reasons = graph.why(paths)
    for path in graph.affected(paths):
        reason = reasons[path]
        why = "changed" if reason is None else f"{reason[1]} {_rel(project, reason[0])}"
        print(f"{_rel(project, path)}  ({why})")


# ---- watch ----------------------------------------------------------------------------------------

def cmd_watch(project: Project, args: argparse.Namespace) -> int:
    """Print each batch of changes and what it would reload, until interrupted."""
    try:
        with project.watch_changes(backend=args.backend) as watcher:
            print(f"watching {project.name}: {len(project.source_files)} files (Ctrl-C to stop)", flush=True)
            while True:
                select.select([watcher], [], [])
                _report(project, watcher.changed_files())
    except KeyboardInterrupt:
        return 0


def _report(project: Project, changed: list[str]) -> None:
    if not changed:
        return
    print("changed: " + " ".join(_rel(project, p) for p in changed))
    if project.definition_file in changed:
        try:
            project._reread_definition_if_changed()
            print(f"re-read {_rel(project, project.definition_file)}: {len(project.source_files)} files")
        except ProjectError as exc:
            print(f"error: {exc}")
    sources = [p for p in changed if p in set(project.source_files)]
    project._tracker.rescan(project, sources)
    _print_affected(project, sources)
    sys.stdout.flush()
