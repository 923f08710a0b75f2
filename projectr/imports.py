"""Find which project modules a source file imports, by parsing it (no code is run)."""

from __future__ import annotations

import ast
from collections.abc import Iterator

# Code in these nodes does not run when the module is imported, so its imports are not load-time edges.
_DEFERRED = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)


def imported_names(source: bytes | str, module: str, is_package: bool) -> set[str]:
    """Return every absolute module name that importing `module` (with this source) would import.

    Relative imports are resolved against `module`; for `from x import y` both `x` and `x.y`
    are returned (y may be a submodule); for `import a.b.c`, `a`, `a.b` and `a.b.c`.
    A file that does not parse has no edges (the load will report the SyntaxError).
    """
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return set()
    package = module if is_package else module.rpartition(".")[0]
    names: set[str] = set()
    for node in _load_time_nodes(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                names.update(with_parents(alias.name))
        elif isinstance(node, ast.ImportFrom):
            base = _resolve_from(node, package)
            if base is None:
                continue
            if base:
                # `from a.b import c` binds only c: a change to `a` alone does not concern us
                names.add(base)
            for alias in node.names:
                if alias.name != "*":
                    names.add(f"{base}.{alias.name}" if base else alias.name)
    return names


def _load_time_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Walk the tree, skipping what does not run at import time: function bodies (they run later,
    if ever) and the body of `if TYPE_CHECKING:` (it runs only under a type checker)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            children: list[ast.AST] = [node.test, *node.orelse]  # the else branch does run
        else:
            children = list(ast.iter_child_nodes(node))
        stack.extend(child for child in children if not isinstance(child, _DEFERRED))


def _is_type_checking(test: ast.expr) -> bool:
    """True for `TYPE_CHECKING` and `typing.TYPE_CHECKING` (any `x.TYPE_CHECKING`): False at run time."""
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def _resolve_from(node: ast.ImportFrom, package: str) -> str | None:
    """Return the absolute module a `from ... import` names, or None if it climbs above the top."""
    if not node.level:
        return node.module or ""
    parts = package.split(".") if package else []
    if node.level - 1 > len(parts):
        return None
    base_parts = parts[: len(parts) - (node.level - 1)]
    if node.module:
        base_parts.append(node.module)
    return ".".join(base_parts)


def with_parents(name: str) -> list[str]:
    """`a.b.c` -> [`a`, `a.b`, `a.b.c`]: importing a submodule imports its packages first."""
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]
