"""Turn the raw results (bench/out/results.json) into bench/RESULTS.md and bench/results.png.

`python -m bench.report [RESULTS_JSON]` regenerates both without re-running anything.
"""
from __future__ import annotations

import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

from bench.reload import PHASES, STRATEGIES
from bench.stats import median_or_none, summarize

HERE = Path(__file__).resolve().parent
PHASE_TEXT = {
    "watcher_wake": "write -> the watcher fd wakes the master (README program only)",
    "changed_files": "changed_files() (debounce, filtering)",
    "planned": "-> the reload is planned (CLI: from the write, wake-up and debounce included)",
    "generation_ready": "-> the new generation reported ready (fork, its partial reload or fresh import; "
                        "a respawn's probe)",
    "rolling": "-> the roll starts",
    "workers_ready": "-> the last successor, forked by the generation, reports ready",
    "reload_logged": "-> the reload line",
    "old_retired": "-> the last old worker drained and exited",
}
OURS_REFAPP = "ours"            # the README's program on the generated reference app
OURS_CLI = "ours-cli"           # prefork APP --project project.py --reload (the same app)
OURS_REAL = "ours-cli-zero"     # prefork APP --reload from the real app's folder
GUNICORN = "gunicorn"           # gunicorn --reload -w 2 (inotify engine)
REAL_EDITS = ("view", "model")


def _ms(v: float | None) -> str:
    return "never" if v is None else f"{v * 1000:.0f}" if v >= 0.1 else f"{v * 1000:.1f}"


def _labels(results: dict) -> dict[str, str]:
    return results.get("labels", {})


def latency_rows(samples: list[dict], with_app: bool = False) -> list[dict]:
    """One row per (app, server, edit): latency summary, failures, longest stall, stale count."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for s in samples:
        groups[(s.get("app", "") if with_app else "", s["runner"], s["edit"])].append(s)
    rows = []
    for (app, runner, edit), group in groups.items():
        lat = [s["latency"] for s in group if s["latency"] is not None]
        rows.append(dict(app=app, runner=runner, edit=edit, n=len(group), summary=summarize(lat),
                         never=len(group) - len(lat), failed=sum(s["failed"] for s in group),
                         requests=sum(s["requests"] for s in group),
                         stall=max((s["stall"] for s in group), default=0.0),
                         restarted=all(s["workers_restarted"] for s in group)))
    return rows


def reload_rows(results: dict) -> list[dict]:
    return latency_rows(results.get("reload", []))


def _median(results: dict, section: str, runner: str, edit: str, app: str = "") -> float | None:
    row = next((r for r in latency_rows(results.get(section, []), with_app=bool(app))
                if r["runner"] == runner and r["edit"] == edit and r["app"] == app), None)
    return row["summary"].median if row and row["summary"] else None


def _latency_table(rows: list[dict], labels: dict[str, str], with_app: bool = False) -> list[str]:
    out = [("| app " if with_app else "") + "| server | edit | median ms | p95 ms | min ms | max ms | n | "
           "failed / requests | longest wait ms |",
           ("|---" if with_app else "") + "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        s = r["summary"]
        cells = [_ms(s.median), _ms(s.p95), _ms(s.min), _ms(s.max)] if s else ["never"] * 4
        never = f" ({r['never']} never)" if r["never"] and s else ""
        if r["never"] == r["n"] and r["restarted"]:
            cells[0] = "never (stale code)"
        out.append((f"| {r['app']} " if with_app else "") + f"| {labels.get(r['runner'], r['runner'])} | {r['edit']} | "
                   f"{cells[0]}{never} | {cells[1]} | {cells[2]} | {cells[3]} | {r['n']} | {r['failed']} / "
                   f"{r['requests']} | {r['stall'] * 1000:.0f} |")
    return out


def fastest_peer(results: dict, edit: str) -> tuple[str, float] | None:
    """(runner, median) of the fastest peer for an edit, ours excluded."""
    best = None
    for r in reload_rows(results):
        if r["edit"] == edit and not r["runner"].startswith("ours") and r["summary"]:
            if best is None or r["summary"].median < best[1]:
                best = (r["runner"], r["summary"].median)
    return best


def _ours_row(results: dict, edit: str, runner: str = OURS_REFAPP) -> dict | None:
    return next((r for r in reload_rows(results) if r["runner"] == runner and r["edit"] == edit), None)


# ------------------------------------------------------------------------------------------ strategies

def _strategy_table(samples: list[dict], labels: dict[str, str], with_app: bool = False) -> list[str]:
    """Per (app, server, edit) and strategy: how often, and its timings apart."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for s in samples:
        if s["runner"].startswith("ours"):
            strategy = s["phases"].get("strategy") or ("failed" if s["phases"].get("failed") else "no reload line")
            groups[(s.get("app", ""), s["runner"], s["edit"], strategy)].append(s)
    if not groups:
        return ["(no reload lines in our servers' logs)"]
    out = [("| app " if with_app else "") + "| server | edit | strategy | used | median ms: write -> every worker "
           "| min-max | median ms: server's reload line | median ms: the generation's own work | "
           "reloads per save | reason (most common) |",
           ("|---" if with_app else "") + "|---|---|---|---:|---:|---|---:|---:|---:|---|"]
    totals: Counter = Counter()
    for key in groups:
        totals[key[:3]] += len(groups[key])
    order = {name: i for i, name in enumerate(STRATEGIES)}
    for key in sorted(groups, key=lambda k: (k[0], k[1], k[2], order.get(k[3], 9))):
        app, runner, edit, strategy = key
        group = groups[key]
        lat = [s["latency"] * 1000 for s in group if s["latency"] is not None]
        server = median_or_none([s["phases"]["server_ms"] for s in group if "server_ms" in s["phases"]])
        own = median_or_none([s["phases"]["generation_own_ms"] for s in group if "generation_own_ms" in s["phases"]])
        reloads = median_or_none([s["phases"].get("reloads", 0) for s in group])
        reason = Counter(_short_reason(s["phases"].get("reason", "")) for s in group).most_common(1)[0][0]
        med = median_or_none(lat)
        out.append((f"| {app} " if with_app else "") + f"| {labels.get(runner, runner)} | {edit} | {strategy} | "
                   f"{len(group)} of {totals[key[:3]]} | {'-' if med is None else f'{med:.0f}'} | "
                   f"{f'{min(lat):.0f}-{max(lat):.0f}' if lat else '-'} | {'-' if server is None else f'{server:.0f}'} | "
                   f"{'-' if own is None else f'{own:.1f}'} | {'-' if reloads is None else f'{reloads:.0f}'} | "
                   f"{reason or '-'} |")
    return out


def _short_reason(reason: str) -> str:
    return reason if len(reason) <= 90 else reason[:87] + "..."


def strategy_counts(samples: list[dict], runner: str, edit: str, app: str = "") -> Counter:
    return Counter(s["phases"].get("strategy", "?") for s in samples
                   if s["runner"] == runner and s["edit"] == edit and s.get("app", "") == app)


# ------------------------------------------------------------------------------------------ targets

def _target_row(out: list[str], text: str, value: str, ok: bool | None) -> None:
    out.append(f"| {text} | {value} | {'yes' if ok else 'no' if ok is not None else 'n/a'} |")


def _targets(results: dict) -> list[str]:
    """This issue's targets (the process tree of generations), each with the measured value."""
    out = ["| target | measured | met |", "|---|---|---|"]
    labels = _labels(results)
    gun = _median(results, "reload", GUNICORN, "leaf")
    for runner in (OURS_REFAPP, OURS_CLI):
        ours = _median(results, "reload", runner, "leaf")
        if gun and ours:
            ratio = gun / ours
            counts = strategy_counts(results.get("reload", []), runner, "leaf")
            _target_row(out, f"refapp leaf edit, {labels.get(runner, runner)}: median <= 1/20 of gunicorn --reload -w 2",
                        f"1/{ratio:.1f} (gunicorn {_ms(gun)} ms vs ours {_ms(ours)} ms; "
                        + ", ".join(f"{k} {v}" for k, v in counts.most_common()) + ")", ratio >= 20)
    for app in ("django", "flask"):
        for edit in REAL_EDITS:
            g, o = (_median(results, "realapps", r, edit, app) for r in (GUNICORN, OURS_REAL))
            if g and o:
                counts = strategy_counts(results.get("realapps", []), OURS_REAL, edit, app)
                _target_row(out, f"{app}, {edit} edit: median <= 1/3 of gunicorn --reload -w 2",
                            f"1/{g / o:.1f} (gunicorn {_ms(g)} ms vs ours {_ms(o)} ms; "
                            + ", ".join(f"{k} {v}" for k, v in counts.most_common()) + ")", g / o >= 3)
    ours_samples = [s for s in results.get("reload", []) + results.get("realapps", []) if s["runner"].startswith("ours")]
    if ours_samples:
        failed = sum(s["failed"] for s in ours_samples)
        _target_row(out, "no failed background request during our reloads (refapp and real apps)",
                    f"{failed} of {sum(s['requests'] for s in ours_samples)}", failed == 0)
    mem = _memory_medians(results)
    fresh = _memory_medians(results, _FRESH)
    ours_mem = next((k for k in mem if k.startswith("ours")), None)
    if ours_mem:
        text = f"{mem[ours_mem]:.0f} MB at start"
        if fresh.get(ours_mem):
            text += f", {fresh[ours_mem]:.0f} MB once a fresh generation (from the warm base) serves"
        if mem.get(GUNICORN):
            text += f"; gunicorn without preload {mem[GUNICORN]:.0f} MB"
        if mem.get("gunicorn-preload"):
            text += f", with --preload {mem['gunicorn-preload']:.0f} MB"
        _target_row(out, "PSS of 4 workers + master, base and generation <= 75 MB", text, mem[ours_mem] <= 75)
    growth = _memory_growth(results)
    if growth:
        _target_row(out, f"PSS growth over {growth['reloads']} reloads < 5% (no leak across generations)",
                    f"{growth['pct']:+.1f}% ({growth['start']:.1f} -> {growth['end']:.1f} MB); after the first "
                    f"{growth['first']} reloads {growth['pct_later']:+.1f}%; processes {growth['procs_start']} -> "
                    f"{growth['procs_end']}", growth["pct"] < 5 and growth["procs_end"] == growth["procs_start"])
    return out


def _targets_earlier(results: dict) -> list[str]:
    """The earlier benchmark issue's targets, measured again on the process tree."""
    out = ["| target | measured | met |", "|---|---|---|"]
    leaf, peer = _ours_row(results, "leaf"), fastest_peer(results, "leaf")
    if leaf and leaf["summary"] and peer:
        ratio = peer[1] / leaf["summary"].median
        _target_row(out, "leaf edit: median <= 1/20 of the fastest peer", f"1/{ratio:.1f} "
                    f"({_labels(results).get(peer[0], peer[0])} {_ms(peer[1])} ms vs ours {_ms(leaf['summary'].median)} ms)",
                    ratio >= 20)
        _target_row(out, "leaf edit: median < 50 ms (2 workers)", f"{_ms(leaf['summary'].median)} ms",
                    leaf["summary"].median < 0.05)
        _target_row(out, "leaf edit: p95 < 100 ms", f"{_ms(leaf['summary'].p95)} ms", leaf["summary"].p95 < 0.1)
    root, rpeer = _ours_row(results, "root"), fastest_peer(results, "root")
    if root and root["summary"] and rpeer:
        ratio = rpeer[1] / root["summary"].median
        _target_row(out, "root edit (every module): 1/40 of the fastest peer (aim)",
                    f"1/{ratio:.1f} (ours {_ms(root['summary'].median)} ms)", ratio >= 40)
    for line in _throughput_ratios(results):
        _target_row(out, *line)
    mem = _memory_medians(results)
    ours_mem = next((k for k in mem if k.startswith("ours")), None)
    if ours_mem and mem.get(GUNICORN):
        _target_row(out, "PSS (4 workers) <= 1/2 of gunicorn without preload",
                    f"{mem[ours_mem]:.0f} MB vs {mem[GUNICORN]:.0f} MB ({mem[ours_mem] / mem[GUNICORN]:.2f}x)",
                    mem[ours_mem] <= mem[GUNICORN] / 2)
    idle = _idle_medians(results)
    for name in ("ours-inotify", "ours"):
        if name in idle:
            _target_row(out, "idle CPU with inotify < 0.1% of a core", f"{idle[name]:.3f}%", idle[name] < 0.1)
            break
    small, big = _ours_row(results, "leaf"), _ours_row(results, "leaf", "ours-1000")
    if small and big and small["summary"] and big["summary"]:
        ratio = big["summary"].median / small["summary"].median
        _target_row(out, "leaf edit at 1,000 modules <= 1.5x the 20-module figure", f"{ratio:.2f}x "
                    f"({_ms(big['summary'].median)} vs {_ms(small['summary'].median)} ms)", ratio <= 1.5)
    return out


# ------------------------------------------------------------------------------------------ phases

def _phase_table(results: dict) -> list[str]:
    """Median of each of our reload phases, per server and edit (and per strategy where both occur)."""
    by_key: dict[str, list[dict]] = defaultdict(list)
    for s in results.get("reload", []):
        if s["runner"].startswith("ours") and s["phases"].get("strategy"):
            by_key[f"{s['runner']} {s['edit']} ({s['phases']['strategy']})"].append(s)
    for s in results.get("realapps", []):
        if s["runner"].startswith("ours") and s["phases"].get("strategy"):
            by_key[f"{s['app']} {s['edit']} ({s['phases']['strategy']})"].append(s)
    if not by_key:
        return ["(no reload phases in the server log)"]
    keys = list(by_key)
    out = ["| phase (ms, median) | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]

    def line(text: str, values: list[float | None], bold: bool = False) -> None:
        cells = ["-" if v is None else (f"**{v:.0f}**" if bold else f"{v:.1f}" if v < 100 else f"{v:.0f}")
                 for v in values]
        out.append(f"| {text} | " + " | ".join(cells) + " |")

    def med(k: str, name: str) -> float | None:
        return median_or_none([s["phases"][name] for s in by_key[k] if name in s["phases"]])

    out.append("| samples | " + " | ".join(str(len(by_key[k])) for k in keys) + " |")
    for phase in PHASES:
        line(f"{phase}: {PHASE_TEXT[phase]}", [med(k, f"t_{phase}") for k in keys])
    line("generation: master's fork request -> its report (log)", [med(k, "generation_after_ms") for k in keys])
    line("generation: its own work (log)", [med(k, "generation_own_ms") for k in keys])
    line("refused partial: request -> refusal (log)", [med(k, "refused_after_ms") for k in keys])
    line("server's reload line: ms", [med(k, "server_ms") for k in keys])
    line("**write -> every worker serves it (bench)**",
         [median_or_none([s["latency"] * 1000 for s in by_key[k] if s["latency"] is not None]) for k in keys], bold=True)
    example = next((s["phases"].get("line") for k in keys for s in by_key[k] if s["phases"].get("line")), None)
    if example:
        out += ["", f"A reload line from the server log: `{example}`"]
    return out


# ------------------------------------------------------------------------------------------ real apps

def _realapps_ratio_table(results: dict) -> list[str]:
    labels = _labels(results)
    out = ["| app | edit | gunicorn --reload -w 2: median ms | ours: median ms | gunicorn / ours | ours: strategies |",
           "|---|---|---:|---:|---:|---|"]
    for app in ("django", "flask"):
        for edit in REAL_EDITS:
            g, o = (_median(results, "realapps", r, edit, app) for r in (GUNICORN, OURS_REAL))
            counts = strategy_counts(results.get("realapps", []), OURS_REAL, edit, app)
            if g is None and o is None:
                continue
            out.append(f"| {app} | {edit} | {_ms(g)} | {_ms(o)} | {f'{g / o:.1f}x' if g and o else '-'} | "
                       + ", ".join(f"{k} {v}" for k, v in counts.most_common()) + " |")
    del labels
    return out


def _page_mismatches(results: dict) -> int:
    return sum(1 for s in results.get("realapps", []) if s.get("page_matches") is False)


# ------------------------------------------------------------------------------------------ cold start

def _cold_table(results: dict, section: str = "cold_start", with_app: bool = False) -> list[str]:
    labels = _labels(results)
    groups: dict[tuple, list[float]] = defaultdict(list)
    for c in results.get(section, []):
        groups[(c.get("app", ""), c["runner"])].append(c["seconds"])
    out = [("| app " if with_app else "") + "| server | median ms | p95 ms | min ms | max ms | n |",
           ("|---" if with_app else "") + "|---|---:|---:|---:|---:|---:|"]
    for (app, runner), vals in groups.items():
        s = summarize(vals)
        out.append((f"| {app} " if with_app else "") + f"| {labels.get(runner, runner)} | {_ms(s.median)} | "
                   f"{_ms(s.p95)} | {_ms(s.min)} | {_ms(s.max)} | {s.n} |")
    return out


# ------------------------------------------------------------------------------------------ memory

_FRESH = "after a fresh generation (project.py saved)"


def _memory_medians(results: dict, when: str = "started") -> dict[str, float]:
    groups: dict[str, list[float]] = defaultdict(list)
    for m in results.get("memory", []):
        if m["when"] == when:
            groups[m["runner"]].append(m["pss_mb"])
    return {k: median_or_none(v) for k, v in groups.items()}


def _memory_growth(results: dict) -> dict | None:
    """Ours: PSS after the most reloads vs at start (median over rounds), and after the first quarter."""
    rounds: dict[int, list[dict]] = defaultdict(list)
    for m in results.get("memory", []):
        if m["runner"].startswith("ours") and m["when"] != _FRESH:
            rounds[m["round"]].append(m)
    pct, later, starts, ends, first, most, procs = [], [], [], [], 0, 0, (0, 0)
    for samples in rounds.values():
        samples.sort(key=lambda m: m.get("reloads", 0))
        if len(samples) < 2:
            continue
        start, end = samples[0], samples[-1]
        pct.append(100 * (end["pss_mb"] - start["pss_mb"]) / start["pss_mb"])
        starts.append(start["pss_mb"])
        ends.append(end["pss_mb"])
        if len(samples) > 2:
            first = samples[1].get("reloads", 0)
            later.append(100 * (end["pss_mb"] - samples[1]["pss_mb"]) / samples[1]["pss_mb"])
        most = end.get("reloads", 0)
        procs = (start["processes"], end["processes"])
    if not pct:
        return None
    return dict(pct=median_or_none(pct), pct_later=median_or_none(later) or 0.0, start=median_or_none(starts),
                end=median_or_none(ends), first=first, reloads=most, procs_start=procs[0], procs_end=procs[1])


def _memory_table(results: dict) -> list[str]:
    labels = _labels(results)
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for m in results.get("memory", []):
        groups[(m["runner"], m["when"])].append(m)
    out = ["| server (4 workers) | when | processes | total PSS MB (median) | min | max | private MB | "
           "PSS by role: count x MB each (private MB each) |",
           "|---|---|---:|---:|---:|---:|---:|---|"]
    for (runner, when), ms in groups.items():
        s = summarize([m["pss_mb"] for m in ms])
        private = median_or_none([m.get("uss_mb", 0.0) for m in ms])
        roles = ms[len(ms) // 2].get("roles", {})
        order = ("master", "base", "generation", "worker", "other")
        text = "; ".join(f"{r} {roles[r]['n']} x {roles[r]['pss_mb'] / roles[r]['n']:.1f} "
                         f"({roles[r]['uss_mb'] / roles[r]['n']:.1f})" for r in order if r in roles)
        out.append(f"| {ms[0].get('label', labels.get(runner, runner))} | {when} | {ms[0]['processes']} | "
                   f"{s.median:.1f} | {s.min:.1f} | {s.max:.1f} | {private:.1f} | {text} |")
    return out


def _memory_titles(results: dict) -> list[str]:
    """The process titles of one of our samples: the tree, as ps shows it."""
    sample = next((m for m in results.get("memory", []) if m["runner"].startswith("ours") and m.get("titles")), None)
    return sample["titles"] if sample else []


def _throughput_medians(results: dict, field: str = "rps") -> dict[tuple, float]:
    groups: dict[tuple, list[float]] = defaultdict(list)
    for t in results.get("throughput", []):
        if field in t:
            groups[(t["workers"], t["path"], t["mode"], t["runner"])].append(t[field])
    return {k: median_or_none(v) for k, v in groups.items()}


def _throughput_ratios(results: dict) -> list[tuple[str, str, bool]]:
    med, cpu = _throughput_medians(results), _throughput_medians(results, "cpu_ms")
    out = []
    for (workers, path, mode, runner), rps in sorted(med.items()):
        peer = (workers, path, mode, "gunicorn-sync")
        if runner == "ours" and peer in med:
            ratio = rps / med[peer]
            text = f"{ratio:.2f}x ({rps:.0f} vs {med[peer]:.0f} req/s)"
            ours_cpu, peer_cpu = cpu.get((workers, path, mode, runner)), cpu.get(peer)
            if ours_cpu and peer_cpu:
                text += f"; CPU per request {ours_cpu:.2f} vs {peer_cpu:.2f} ms"
            out.append((f"throughput >= gunicorn sync: {workers} workers, {path}, {mode}", text, ratio >= 1.0))
    return out


def _throughput_table(results: dict) -> list[str]:
    med, cpu = _throughput_medians(results), _throughput_medians(results, "cpu_ms")
    errors: dict[tuple, int] = defaultdict(int)
    for t in results.get("throughput", []):
        errors[(t["workers"], t["path"], t["mode"], t["runner"])] += t["errors"]
    configs = sorted({k[:3] for k in med})
    names = ("ours", "gunicorn-sync", "waitress")
    out = ["| workers | path | connections | ours req/s | gunicorn sync req/s | waitress (1 process) req/s "
           "| ours / gunicorn | CPU ms per request: ours / gunicorn / waitress |",
           "|---:|---|---|---:|---:|---:|---:|---:|"]
    for cfg in configs:
        vals = [med.get(cfg + (r,)) for r in names]
        cells = ["-" if v is None else f"{v:.0f}" + (f" ({errors[cfg + (r,)]} err)" if errors[cfg + (r,)] else "")
                 for v, r in zip(vals, names)]
        ratio = f"{vals[0] / vals[1]:.2f}" if vals[0] and vals[1] else "-"
        cpus = " / ".join("-" if cpu.get(cfg + (r,)) is None else f"{cpu[cfg + (r,)]:.2f}" for r in names)
        out.append(f"| {cfg[0]} | {cfg[1]} | {cfg[2]} | " + " | ".join(cells) + f" | {ratio} | {cpus} |")
    return out




def _idle_medians(results: dict) -> dict[str, float]:
    groups: dict[str, list[float]] = defaultdict(list)
    for i in results.get("idle", []):
        groups[i["runner"]].append(i["percent"])
    return {k: median_or_none(v) for k, v in groups.items()}


def _idle_table(results: dict) -> list[str]:
    labels = _labels(results)
    groups: dict[str, list[dict]] = defaultdict(list)
    for i in results.get("idle", []):
        groups[i["runner"]].append(i)
    out = ["| server | window s | CPU s (median) | % of one core | processes |", "|---|---:|---:|---:|---:|"]
    for runner, samples in groups.items():
        cpu = median_or_none([i["cpu"] for i in samples])
        pct = median_or_none([i["percent"] for i in samples])
        out.append(f"| {labels.get(runner, runner)} | {samples[0]['seconds']:.0f} | {cpu:.2f} | {pct:.3f} | {samples[0]['processes']} |")
    return out




# ------------------------------------------------------------------------------------------ the report

def markdown(results: dict) -> str:
    """The whole RESULTS.md."""
    m = results["machine"]
    labels = _labels(results)
    lines = ["# Benchmark results", "",
             f"Generated by `python -m bench.all{' --quick' if results['settings'].get('quick') else ''}` on "
             f"{results['date']} (commit `{m.get('commit', '?')}`) in {results.get('elapsed_s', 0) / 60:.0f} minutes. "
             "Raw data: bench/out/results.json (not committed).", "",
             *([f"- Uncommitted changes in the working tree the servers ran from (other engineers' work in "
                f"progress): {', '.join(m['dirty'])}."] if m.get("dirty") else []),
             f"- Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']:.0f} GB RAM, Linux {m['kernel']}, Python {m['python']}.",
             f"- Load average at start / end: {m['load_start']} / {m.get('load_end', '?')}. **The machine is shared**: other "
             "engineers run test suites on the same 2 cores during the run, so every number is noisy; medians over "
             "alternating rounds are the figures to read, and ratios within one run are more meaningful than absolutes.",
             "- Load average (1, 5, 15 min) when each section started: " + "; ".join(
                 f"{k} {v}" for k, v in results.get("load_by_section", {}).items()) + ".",
             "- Versions: " + ", ".join(f"{k} {v}" for k, v in sorted(results["versions"].items())) + ".",
             f"- Settings: {json.dumps(results['settings'])}.",
             f"- Reference app: vendor layer {results['app']['vendor_seconds']:.2f} s CPU to import "
             f"({results['app']['vendor_mb']:.0f} MB of tables), project layer of {results['app']['modules']} modules "
             f"(and {results['app'].get('modules_big', '-')} for scaling), {results['app']['unrelated']} unrelated files in the tree; "
             "/cpu burns about 2 ms. Real apps: the test suite's Django tutorial project and Flask app factory "
             "(tests/realapps/apps.py).", ""]
    if results.get("notes"):
        lines += ["Notes:", ""] + [f"- {n}" for n in results["notes"]] + [""]
    lines += ["![results](results.png)", "", "## Targets: the process tree (master -> base -> generations -> workers)", "",
              "Not asserted anywhere (tests never assert on time); measured against the peers in the same run.", ""]
    lines += _targets(results)
    lines += ["", "## Targets of the first benchmark issue, measured again", ""] + _targets_earlier(results)
    lines += ["", "## Real apps: save -> every worker serves the new page", "",
              "The test suite's apps (tests/realapps/apps.py), each server on its own copy, started from the "
              "app's folder: ours `prefork APP --reload -w 2` (zero configuration; plus `--bind 127.0.0.1:PORT "
              "--shared-port --log-level debug`), gunicorn `--reload --reload-engine auto -w 2` (inotify). VIEW: "
              "the index view's ordering (Django `polls/views.py`, Flask `shop/views.py`); MODEL: a model property "
              "the index page shows (Django `Question.short_text`, Flask `Product.label`). Every save toggles its "
              "edit (applied, then reverted). Latency: write -> the first of 4 consecutive fresh-connection answers "
              "of the index page (`/polls/`, `/products`) that differ from the page before the save; background "
              "client on `/polls/about/` and `/about`. The servers alternate, round after round."
              + (f" **{_page_mismatches(results)} served pages differed from the other server's page for the same "
                 "files.**" if _page_mismatches(results) else " Every new page equalled the other server's page "
                 "for the same files."), ""]
    lines += _realapps_ratio_table(results)
    lines += [""] + _latency_table(latency_rows(results.get("realapps", []), with_app=True), labels, with_app=True)
    lines += ["", "How our server did each save (strategy from its reload line; a refused partial is followed by a "
              "fresh generation, which is what the line names):", ""]
    lines += _strategy_table(results.get("realapps", []), labels, with_app=True)
    lines += ["", "## Reload latency on the reference app", "",
              "From the write of a file to the first of 2 x workers consecutive responses, each on a fresh "
              "connection, that all carry the new code (for one-process servers: 2 responses). `failed / "
              "requests`: a background client sending a request every 5 ms, counted inside each window. "
              "`longest wait`: the slowest of those requests (connections queued while a server restarts "
              "do not fail but wait). Leaf edit: `refproj/views/index.py` (3 modules for a partial reload); root edit: "
              "`refproj/settings.py` (every module that imports it); definition: a comment added to project.py "
              "(always a fresh generation); first-leaf (ours only): the same leaf edit as the first reload after "
              "start. The peers restart on every edit, so every edit is a first one for them.", ""]
    lines += _latency_table(reload_rows(results), labels)
    lines += ["", "How our server did each edit (strategy, how often, and each strategy's timings apart):", ""]
    lines += _strategy_table(results.get("reload", []), labels)
    lines += ["", "## Our reload, phase by phase", "",
              "From the server log (each line carries its time; the CLI's to the millisecond) and the bench's write "
              "time; each phase ends at the named event (medians, so the columns need not add up exactly). "
              "Columns: server or app, edit, strategy.", ""] + _phase_table(results)
    lines += ["", "## Cold start (spawn -> first 200)", ""] + _cold_table(results)
    if results.get("realapps_cold"):
        lines += ["", "Real apps:", ""] + _cold_table(results, "realapps_cold", with_app=True)
    lines += ["", "## Throughput", "",
              f"{results['settings'].get('load_tool', 'wrk')}, 16 connections, "
              f"{results['settings'].get('duration', '?')} s per cell, median over rounds. `close`: a fresh "
              "connection per request. waitress runs one process with as many threads as the others have workers. "
              "CPU ms per request: CPU time of all the server's processes divided by the requests completed; on "
              "a machine shared with other jobs it is steadier than requests/s (which depends on the CPU the "
              "others leave us).",
              ""] + _throughput_table(results)
    titles = _memory_titles(results)
    lines += ["", "## Memory (total PSS of every process of the server, 4 workers, heavy vendor layer)", "",
              "PSS and private memory from /proc/PID/smaps_rollup, every process of the server's session; roles from "
              "the process titles" + (f" (ours: {', '.join(f'`{t}`' for t in titles)})" if titles else "") +
              f". Ours is reloaded {results['settings'].get('memory_reloads', 100)} times (leaf and root edits "
              "alternating) and measured every quarter of the way, then once more after a save of project.py (a "
              "fresh generation forked from the warm base).", ""]
    lines += _memory_table(results)
    lines += ["", f"## Idle CPU (nothing changes; {results['app']['unrelated']} unrelated files in the tree)", "",
              "CPU of every process of the server's session (utime + stime from /proc, 10 ms resolution: 0.03 % "
              "of a core over 30 s), after a 3 s settle.", ""]
    lines += _idle_table(results)
    # Hand-written: the profile, and the benches that bench.all does not run (each section keeps the
    # run it describes, so a new run of bench.all does not drop them).
    for name in ("PROFILE.md", "SPREAD.md", "ASGI.md"):
        if (HERE / name).exists():
            lines += ["", (HERE / name).read_text().strip()]
    if results.get("projectr_scale"):
        lines += ["", "## projectr at scale (bench/projectr_scale.py)", "", "```", results["projectr_scale"].strip(), "```"]
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    """Four panels: reload latency (reference app), real apps, memory, throughput."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    ax = axes[0][0]
    rows = [r for r in reload_rows(results) if r["edit"] in ("leaf", "root")]
    names = list(dict.fromkeys(r["runner"] for r in rows))
    for offset, edit in ((-0.2, "leaf"), (0.2, "root")):
        vals = []
        for n in names:
            r = next((r for r in rows if r["runner"] == n and r["edit"] == edit), None)
            vals.append(r["summary"].median * 1000 if r and r["summary"] else 0)
        bars = ax.bar([i + offset for i in range(len(names))], vals, 0.4, label=f"{edit} edit")
        for bar, v in zip(bars, vals):
            if v == 0:
                ax.text(bar.get_x() + bar.get_width() / 2, 0.02, "never", rotation=90, ha="center", va="bottom",
                        fontsize=7, transform=ax.get_xaxis_transform())
    ax.set_yscale("log")
    ax.set_ylabel("ms (median, log)")
    ax.set_title("Reference app: write -> every worker serves it")
    ax.set_xticks(range(len(names)), names, fontsize=7, rotation=30, ha="right")
    ax.legend(fontsize=8)

    ax = axes[0][1]
    cells = [(app, edit) for app in ("django", "flask") for edit in REAL_EDITS]
    for j, (runner, label) in enumerate(((GUNICORN, "gunicorn --reload -w 2"), (OURS_REAL, "ours: prefork APP --reload -w 2"))):
        vals = [(_median(results, "realapps", runner, edit, app) or 0) * 1000 for app, edit in cells]
        bars = ax.bar([i + (j - 0.5) * 0.4 for i in range(len(cells))], vals, 0.4, label=label)
        for bar, v in zip(bars, vals):
            if v:
                ax.text(bar.get_x() + bar.get_width() / 2, v, f"{v:.0f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(cells)), [f"{a}\n{e} edit" for a, e in cells], fontsize=8)
    ax.set_ylabel("ms (median)")
    ax.set_title("Real apps: save -> every worker serves the new page")
    ax.legend(fontsize=8)

    ax = axes[1][0]
    groups: dict[str, list[dict]] = defaultdict(list)
    for m in results.get("memory", []):
        groups[f"{m['runner']}\n{m['when'].replace('after a fresh generation (project.py saved)', 'after a fresh gen.')}"].append(m)
    keys = list(groups)
    bottoms = [0.0] * len(keys)
    for role, color in (("master", "tab:gray"), ("base", "tab:orange"), ("generation", "tab:purple"),
                        ("worker", "tab:green"), ("other", "tab:brown")):
        vals = []
        for k in keys:
            ms = groups[k]
            vals.append(median_or_none([m.get("roles", {}).get(role, {}).get("pss_mb", 0.0) for m in ms]) or 0.0)
        if any(vals):
            ax.bar(range(len(keys)), vals, bottom=bottoms, color=color, label=role)
            bottoms = [b + v for b, v in zip(bottoms, vals)]
    ax.axhline(75, color="red", linestyle="--", linewidth=1, label="75 MB target")
    ax.set_xticks(range(len(keys)), keys, fontsize=6, rotation=30, ha="right")
    ax.set_ylabel("MB (median)")
    ax.set_title("Total PSS with 4 workers, by role")
    ax.legend(fontsize=7)

    ax = axes[1][1]
    med = _throughput_medians(results)
    configs = sorted({k[:3] for k in med})
    for j, runner in enumerate(("ours", "gunicorn-sync", "waitress")):
        ax.bar([i + (j - 1) * 0.27 for i in range(len(configs))], [med.get(c + (runner,), 0) or 0 for c in configs],
               0.27, label=runner)
    ax.set_xticks(range(len(configs)), [f"w{c[0]} {c[1]}\n{c[2]}" for c in configs], fontsize=6)
    ax.set_yscale("log")
    ax.set_ylabel("requests/s (log)")
    ax.set_title("Throughput (16 connections)")
    ax.legend(fontsize=8)
    fig.suptitle(f"prefork + projectr vs peers — {results['date']} — {results['machine']['cores']} shared cores (noisy)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(results: dict, out_dir: Path = HERE) -> None:
    """Rewrite RESULTS.md and results.png in out_dir."""
    (out_dir / "RESULTS.md").write_text(markdown(results))
    plot(results, out_dir / "results.png")


if __name__ == "__main__":
    src = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "out" / "results.json"
    write(json.loads(src.read_text()))
