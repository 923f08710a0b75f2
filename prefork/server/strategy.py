"""How a reload is done: respawn, partial or fresh (pure logic; the master calls it).

- *respawn*: nothing the serving generation has loaded or read changed (a template, a view module
  that the framework imports only on the first request): fresh workers forked from the same
  generation read the new files themselves. Costs a fork per worker.
- *partial*: the changed modules are loaded in the generation: a copy of it re-executes the
  affected ones and checks that the result equals a fresh import (else a fresh generation follows).
- *fresh*: a new generation from the base imports the whole project (always correct).
- *resume*: a fresh import that starts from the serving generation's checkpoint (a Django app
  set up, its URLconfs and views not imported yet): none of the files the checkpoint loaded or
  read changed, so going on from it is what a fresh import would do.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Plan:
    """What to do, and the reason the log line gives for it."""

    kind: str  # "respawn", "partial", "fresh" or "resume"
    reason: str
    # partial: the affected loaded modules; respawn: the modules to try importing first (load order)
    modules: tuple[str, ...] = field(default_factory=tuple)


def plan_reload(
    changed: Iterable[str],
    *,
    sources: set[str],
    loaded: set[str],
    opened: set[str],
    affected: Callable[[list[str]], list[str]],
    refused: set[str],
    root: str,
    definition_file: str | None = None,
    full: bool = False,
    foreign: dict[str, list[str]] | None = None,
    checkpoint: set[str] | None = None,
) -> Plan:
    """Decide how to serve ``changed`` paths (empty: a reload asked for by a signal or ``ctl``).

    ``sources``: the files that existed when the serving generation was made (a .py file that did
    not is new: autodiscovery may pick it up); ``loaded``/``opened``: what the serving generation
    imported and read; ``affected``: the project graph's dependents in load order; ``refused``:
    paths a partial reload could not be shown equivalent for before; ``foreign``: loaded project
    modules that code outside the project imported (a partial reload of them would be refused);
    ``checkpoint``: the files the serving generation's checkpoint loaded or read (None: none).
    """
    changed = sorted(set(changed))
    if full:
        return Plan("fresh", "a full reload was asked for")
    if not changed:
        return Plan("fresh", "reload requested")
    rel = {path: os.path.relpath(path, root) for path in changed}
    for path in changed:
        if path == definition_file:
            return Plan("fresh", f"{rel[path]} changed")
        if not os.path.exists(path):
            return Plan("fresh", f"{rel[path]} was removed")
        if path.endswith(".py") and path not in sources:
            return Plan("fresh", f"{rel[path]} is new")
        if path in opened:
            return Plan("fresh", f"{rel[path]} was read while the app was imported")
    modules = [path for path in changed if path.endswith(".py")]
    if not modules:
        return Plan("respawn", "only files read at request time changed")
    dependents = affected(modules)
    wanted = [path for path in dependents if path in loaded]
    if not wanted and not any(path in loaded for path in modules):
        # The workers import these on their first request: tried first (a probe), then respawn.
        return Plan(
            "respawn",
            "the changed modules are imported by the workers, not at start",
            tuple(path for path in dependents if path not in loaded),
        )
    if checkpoint is not None and not checkpoint.intersection(modules):
        return Plan("resume", f"{rel[modules[0]]} is imported after the app's setup: resumed from its checkpoint")
    seen_refused = [path for path in modules if path in refused]
    if seen_refused:
        return Plan("fresh", f"partial refused before for {rel[seen_refused[0]]}")
    held = [path for path in wanted if path in (foreign or {})]
    if held:
        module, importer = (foreign or {})[held[0]]
        return Plan("fresh", f"partial refused: {module} is imported by {importer}")
    return Plan("partial", "", tuple(wanted or [p for p in modules if p in loaded]))
