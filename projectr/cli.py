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
from collections.abc import Callable, Sequence

from .errors import LoadError, ProjectError
from .graph import DependencyGraph
from .project import Project


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `projectr` console script and `python -m projectr`."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(name)s: %(message)s")
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
    graph.add_argument(
        "--format",
        choices=["text", "dot", "mermaid"],
        help="what to print (default text); with -o, taken from the file's suffix",
    )
    graph.add_argument(
        "--output",
        "-o",
        metavar="FILE",
        help="write to FILE, the format from its suffix: .svg, .png, .pdf (rendered with "
        "Graphviz's dot), .dot or .gv, .mmd, .txt",
    )
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
    """Print the graph as text, Graphviz dot or Mermaid, or write it to a file (rendered by suffix)."""
    fmt, render = args.format or "text", None
    if args.output:
        try:
            fmt, render = _output_format(args.output, args.format)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    graph = project.graph
    nodes = [_rel(project, n) for n in project.load_order]
    edges = [(_rel(project, u), _rel(project, v), d["kind"]) for u, v, d in graph.edges(data=True)]
    edges.sort(key=lambda e: (nodes.index(e[0]), nodes.index(e[1])))
    text = _FORMATS[fmt](project.name, nodes, edges)
    if not args.output:
        print(text, end="")
        return 0
    if render is not None:
        return _render(text, args.output, render)
    try:
        with open(args.output, "w") as f:
            f.write(text)
    except OSError as exc:
        print(f"error: cannot write {args.output}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.output}")
    return 0


# The suffixes `-o FILE` understands: written as text in a format, or rendered by Graphviz from dot.
_TEXT_SUFFIXES = {".dot": "dot", ".gv": "dot", ".mmd": "mermaid", ".mermaid": "mermaid", ".txt": "text"}
_RENDERED_SUFFIXES = (".svg", ".png", ".pdf")


def _output_format(output: str, asked: str | None) -> tuple[str, str | None]:
    """(the text format, the Graphviz output format or None) for `-o output`; ValueError if unclear."""
    suffix = os.path.splitext(output)[1].lower()
    if suffix in _RENDERED_SUFFIXES:
        if asked not in (None, "dot"):
            raise ValueError(
                f"{output} is rendered by Graphviz from dot, not --format {asked}: "
                f"drop --format, or write a {_suffix_of(asked)} file"
            )
        return "dot", suffix[1:]
    if suffix in _TEXT_SUFFIXES:
        fmt = _TEXT_SUFFIXES[suffix]
        if asked not in (None, fmt):
            raise ValueError(
                f"{output} is a {fmt} file, not --format {asked}: drop --format, or write a {_suffix_of(asked)} file"
            )
        return fmt, None
    known = ", ".join([*_RENDERED_SUFFIXES, *_TEXT_SUFFIXES])
    raise ValueError(f"cannot tell the format of {output} from its suffix: use one of {known}")


def _suffix_of(fmt: str | None) -> str:
    return next(s for s, f in _TEXT_SUFFIXES.items() if f == fmt)


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


_FORMATS: dict[str, Callable[[str, list[str], list[tuple[str, str, str]]], str]] = {
    "text": _as_text,
    "dot": _as_dot,
    "mermaid": _as_mermaid,
}


def _render(dot_source: str, output: str, fmt: str) -> int:
    dot = shutil.which("dot")
    if dot is None:
        print(
            f"error: rendering {output} needs Graphviz's dot, which is not on PATH: install Graphviz "
            f"(apt-get install graphviz, brew install graphviz), or write a .dot or .mmd file instead",
            file=sys.stderr,
        )
        return 1
    try:
        done = subprocess.run([dot, f"-T{fmt}", "-o", output], input=dot_source, text=True, capture_output=True)
    except OSError as exc:
        print(f"error: cannot run {dot}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    if done.returncode != 0:
        detail = " ".join(done.stderr.split()) or f"exit status {done.returncode}"
        print(f"error: Graphviz could not write {output}: {detail}", file=sys.stderr)
        return 1
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
        quiet = _DropRecords()  # load() also logs its failure and warnings: print each once, here
        logging.getLogger("projectr").addFilter(quiet)
        loaded: list[str] = []
        failure: LoadError | None = None
        try:
            loaded = project.load()
        except LoadError as exc:
            failure = exc
        finally:
            logging.getLogger("projectr").removeFilter(quiet)
        for warning in project.last_load_warnings:
            print(f"warning: {warning}")
        if failure is not None:
            print(f"error: {failure}")
            problems += 1
        elif not problems:  # files as `graph` counts them: the source files (resources are only watched)
            sources = set(project.source_files)
            print(f"ok: {sum(p in sources for p in loaded)} files loaded, {graph.graph.number_of_edges()} edges")
    return 1 if problems else 0


class _DropRecords(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return False


def _unlisted(project: Project) -> list[str]:
    declared = set(project.source_files) | {project.definition_file}
    folders = sorted({os.path.dirname(p) for p in project.source_files})
    return [p for d in folders for p in sorted(glob.glob(os.path.join(d, "*.py"))) if p not in declared]


# ---- affected -------------------------------------------------------------------------------------

_LISTED = 40  # the files an `affected` error lists at most


def cmd_affected(project: Project, args: argparse.Namespace) -> int:
    """Print what an edit of the files would reload, with the edge that pulled each file in.

    A FILE is relative to the current directory, or failing that to the project's root. One that
    is not in the project is an error (exit status 2) that lists the files the project has.
    """
    sources = project.source_files
    resources = project.resource_files
    known = set(sources) | set(resources)
    paths: list[str] = []
    unknown: list[str] = []
    for name in args.files:
        candidates = [os.path.abspath(name), os.path.normpath(os.path.join(project.root, name))]
        found = next((c for c in candidates if c in known), None)
        if found is None:
            unknown.append(name)
        elif found not in paths:
            paths.append(found)
    if unknown:
        files = [_rel(project, p) for p in [*sources, *resources]]
        listed = "".join(f"\n  {f}" for f in files[:_LISTED])
        if len(files) > _LISTED:
            listed += f"\n  ... and {len(files) - _LISTED} more (projectr graph lists them all)"
        print(
            f"error: not in project {project.name}: {', '.join(unknown)}\n"
            f"its files, relative to {project.root}:{listed}",
            file=sys.stderr,
        )
        return 2
    for path in paths:
        if path not in set(sources):
            print(f"{_rel(project, path)}  (resource: reloads no module)")
    _print_affected(project, [p for p in paths if p in set(sources)])
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
    project.rescan(sources)
    _print_affected(project, sources)
    sys.stdout.flush()
