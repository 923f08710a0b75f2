"""Turn the raw results (bench/out/results.json) into bench/RESULTS.md and bench/results.png.

`python -m bench.report [RESULTS_JSON]` regenerates both without re-running anything.
"""
from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

from bench.reload import PHASES
from bench.stats import median_or_none, summarize

HERE = Path(__file__).resolve().parent
PHASE_TEXT = {
    "watcher_wake": "write -> watcher fd wakes the master",
    "changed_files": "changed_files() (debounce, filtering)",
    "load_in_master": "trial load in a child + load in the master",
    "fork": "fork of the successors",
    "workers_ready": "successors start waitress, report ready",
    "reload_logged": "bookkeeping until the reload line",
    "old_retired": "old workers drained and exited",
}


def _ms(v: float | None) -> str:
    return "never" if v is None else f"{v * 1000:.0f}" if v >= 0.1 else f"{v * 1000:.1f}"


def _labels(results: dict) -> dict[str, str]:
    return results.get("labels", {})


def reload_rows(results: dict) -> list[dict]:
    """One row per (server, edit): latency summary, failures, longest stall, stale count."""
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for s in results.get("reload", []):
        groups[(s["runner"], s["edit"])].append(s)
    rows = []
    for (runner, edit), samples in groups.items():
        lat = [s["latency"] for s in samples if s["latency"] is not None]
        rows.append(dict(runner=runner, edit=edit, n=len(samples), summary=summarize(lat),
                         never=len(samples) - len(lat), failed=sum(s["failed"] for s in samples),
                         requests=sum(s["requests"] for s in samples),
                         stall=max((s["stall"] for s in samples), default=0.0),
                         restarted=all(s["workers_restarted"] for s in samples)))
    return rows


def _reload_table(results: dict) -> list[str]:
    labels = _labels(results)
    out = ["| server | edit | median ms | p95 ms | min ms | max ms | n | failed / requests | longest wait ms |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in reload_rows(results):
        s = r["summary"]
        cells = [_ms(s.median), _ms(s.p95), _ms(s.min), _ms(s.max)] if s else ["never"] * 4
        never = f" ({r['never']} never)" if r["never"] and s else ""
        if r["never"] == r["n"] and r["restarted"]:
            cells[0] = "never (stale code)"
        out.append(f"| {labels.get(r['runner'], r['runner'])} | {r['edit']} | {cells[0]}{never} | {cells[1]} | "
                   f"{cells[2]} | {cells[3]} | {r['n']} | {r['failed']} / {r['requests']} | {r['stall'] * 1000:.0f} |")
    return out


def fastest_peer(results: dict, edit: str) -> tuple[str, float] | None:
    """(runner, median) of the fastest peer for an edit, ours excluded."""
    best = None
    for r in reload_rows(results):
        if r["edit"] == edit and not r["runner"].startswith("ours") and r["summary"]:
            if best is None or r["summary"].median < best[1]:
                best = (r["runner"], r["summary"].median)
    return best


def _ours_row(results: dict, edit: str, runner: str = "ours") -> dict | None:
    return next((r for r in reload_rows(results) if r["runner"] == runner and r["edit"] == edit), None)


def _targets(results: dict) -> list[str]:
    """The issue's targets, each with the measured value and whether it is met."""
    out = ["| target | measured | met |", "|---|---|---|"]

    def row(text: str, value: str, ok: bool | None) -> None:
        out.append(f"| {text} | {value} | {'yes' if ok else 'no' if ok is not None else 'n/a'} |")

    leaf, peer = _ours_row(results, "leaf"), fastest_peer(results, "leaf")
    if leaf and leaf["summary"] and peer:
        ratio = peer[1] / leaf["summary"].median
        row("leaf edit: median <= 1/20 of the fastest peer", f"1/{ratio:.0f} ({_labels(results).get(peer[0], peer[0])}"
            f" {_ms(peer[1])} ms vs ours {_ms(leaf['summary'].median)} ms)", ratio >= 20)
        row("leaf edit: median < 50 ms (2 workers)", f"{_ms(leaf['summary'].median)} ms", leaf["summary"].median < 0.05)
        row("leaf edit: p95 < 100 ms", f"{_ms(leaf['summary'].p95)} ms", leaf["summary"].p95 < 0.1)
    root, rpeer = _ours_row(results, "root"), fastest_peer(results, "root")
    if root and root["summary"] and rpeer:
        ratio = rpeer[1] / root["summary"].median
        row("root edit (every module): 1/40 of the fastest peer (aim)", f"1/{ratio:.0f} (ours {_ms(root['summary'].median)} ms)",
            ratio >= 40)
    ours_rows = [r for r in reload_rows(results) if r["runner"].startswith("ours")]
    if ours_rows:
        failed = sum(r["failed"] for r in ours_rows)
        row("zero failed requests during our reloads", f"{failed} of {sum(r['requests'] for r in ours_rows)}", failed == 0)
    for line in _throughput_ratios(results):
        row(*line)
    mem = _memory_medians(results)
    if "ours" in mem and "gunicorn" in mem:
        row("PSS (4 workers) <= 1/2 of gunicorn without preload",
            f"{mem['ours']:.0f} MB vs {mem['gunicorn']:.0f} MB ({mem['ours'] / mem['gunicorn']:.2f}x)",
            mem["ours"] <= mem["gunicorn"] / 2)
    idle = _idle_medians(results)
    for name in ("ours-inotify", "ours"):
        if name in idle:
            row("idle CPU with inotify < 0.1% of a core", f"{idle[name]:.3f}%", idle[name] < 0.1)
            break
    small, big = _ours_row(results, "leaf"), _ours_row(results, "leaf", "ours-1000")
    if small and big and small["summary"] and big["summary"]:
        ratio = big["summary"].median / small["summary"].median
        row("leaf edit at 1,000 modules <= 1.5x the 20-module figure", f"{ratio:.2f}x "
            f"({_ms(big['summary'].median)} vs {_ms(small['summary'].median)} ms)", ratio <= 1.5)
    return out


def _phase_table(results: dict) -> list[str]:
    """Median of each of our reload phases, per edit."""
    by_edit: dict[str, list[dict]] = defaultdict(list)
    for s in results.get("reload", []):
        if s["runner"].startswith("ours") and s["phases"]:
            by_edit[f"{s['runner']} {s['edit']}"].append(s)
    if not by_edit:
        return ["(no reload phases in the server log)"]
    keys = list(by_edit)
    out = ["| phase (ms, median) | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
    for phase in PHASES:
        vals = [median_or_none([s["phases"][f"t_{phase}"] for s in by_edit[k] if f"t_{phase}" in s["phases"]])
                for k in keys]
        out.append(f"| {phase}: {PHASE_TEXT[phase]} | " + " | ".join("-" if v is None else f"{v:.1f}" for v in vals) + " |")
    for name, text in (("modules", "modules reloaded"), ("trial", "server log: trial"),
                       ("load", "server log: load"), ("replace", "server log: workers replaced")):
        vals = [median_or_none([s["phases"][name] for s in by_edit[k] if name in s["phases"]]) for k in keys]
        out.append(f"| {text} | " + " | ".join("-" if v is None else f"{v:.1f}" for v in vals) + " |")
    lat = [median_or_none([s["latency"] * 1000 for s in by_edit[k] if s["latency"] is not None]) for k in keys]
    out.append("| **write -> every worker serves it (bench)** | " + " | ".join("-" if v is None else f"**{v:.1f}**" for v in lat) + " |")
    example = next((s["phases"].get("line") for k in keys for s in by_edit[k] if s["phases"].get("line")), None)
    if example:
        out += ["", f"A reload line from the server log: `{example}`"]
    return out


def _cold_table(results: dict) -> list[str]:
    labels = _labels(results)
    groups: dict[str, list[float]] = defaultdict(list)
    for c in results.get("cold_start", []):
        groups[c["runner"]].append(c["seconds"])
    out = ["| server | median ms | p95 ms | min ms | max ms | n |", "|---|---:|---:|---:|---:|---:|"]
    for runner, vals in groups.items():
        s = summarize(vals)
        out.append(f"| {labels.get(runner, runner)} | {_ms(s.median)} | {_ms(s.p95)} | {_ms(s.min)} | {_ms(s.max)} | {s.n} |")
    return out


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


def _memory_medians(results: dict, when: str = "started") -> dict[str, float]:
    groups: dict[str, list[float]] = defaultdict(list)
    for m in results.get("memory", []):
        if m["when"] == when:
            groups[m["runner"]].append(m["pss_mb"])
    return {k: median_or_none(v) for k, v in groups.items()}


def _memory_table(results: dict) -> list[str]:
    labels = _labels(results)
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for m in results.get("memory", []):
        groups[(m["runner"], m["when"])].append(m)
    out = ["| server (4 workers) | when | processes | total PSS MB (median) | min | max |", "|---|---|---:|---:|---:|---:|"]
    for (runner, when), ms in groups.items():
        s = summarize([m["pss_mb"] for m in ms])
        out.append(f"| {ms[0].get('label', labels.get(runner, runner))} | {when} | {ms[0]['processes']} | {s.median:.1f} | {s.min:.1f} | {s.max:.1f} |")
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


def markdown(results: dict) -> str:
    """The whole RESULTS.md."""
    m = results["machine"]
    lines = ["# Benchmark results", "",
             f"Generated by `python -m bench.all{' --quick' if results['settings'].get('quick') else ''}` on "
             f"{results['date']} (commit `{m.get('commit', '?')}`). Raw data: bench/out/results.json (not committed).", "",
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
             "/cpu burns about 2 ms.", ""]
    if results.get("notes"):
        lines += ["Notes:", ""] + [f"- {n}" for n in results["notes"]] + [""]
    lines += ["![results](results.png)", "", "## Targets (issue 5)", ""] + _targets(results)
    lines += ["", "## Reload latency", "",
              "From the write of a file to the first of 2 x workers consecutive responses, each on a fresh "
              "connection, that all carry the new code (for one-process servers: 2 responses). `failed / "
              "requests`: a background client sending a request every 5 ms, counted inside each window. "
              "`longest wait`: the slowest of those requests (connections queued while a server restarts "
              "do not fail but wait). Leaf edit: `refproj/views/index.py` (3 modules reload for us); root edit: "
              "`refproj/settings.py` (every module that imports it); definition: a comment added to project.py; "
              "first-leaf (ours only): the same leaf edit as the first reload after start, when projectr also "
              "checks every project file once (its watcher cannot vouch for changes made before it existed; the "
              "freshly generated files are also \"racily clean\" and get hashed). The peers restart on every edit, "
              "so every edit is a first one for them.", ""]
    lines += _reload_table(results)
    lines += ["", "## Our reload, phase by phase", "",
              "From the server log (each line carries its time) and the bench's write time; each phase ends at "
              "the named event (medians, so the columns need not add up exactly).", ""] + _phase_table(results)
    lines += ["", "## Cold start (spawn -> first 200 on /hello)", ""] + _cold_table(results)
    lines += ["", "## Throughput", "",
              f"{results['settings'].get('load_tool', 'wrk')}, 16 connections, "
              f"{results['settings'].get('duration', '?')} s per cell, median over rounds. `close`: a fresh "
              "connection per request. waitress runs one process with as many threads as the others have workers. "
              "CPU ms per request: CPU time of all the server's processes divided by the requests completed; on "
              "a machine shared with other jobs it is steadier than requests/s (which depends on the CPU the "
              "others leave us).",
              ""] + _throughput_table(results)
    lines += ["", "## Memory (total PSS of master + 4 workers, heavy vendor layer)", ""] + _memory_table(results)
    lines += ["", f"## Idle CPU (nothing changes; {results['app']['unrelated']} unrelated files in the tree)", "",
              "CPU of every process of the server's session (utime + stime from /proc, 10 ms resolution: 0.03 % "
              "of a core over 30 s), after a 3 s settle.", ""]
    lines += _idle_table(results)
    profile = HERE / "PROFILE.md"
    if profile.exists():
        lines += ["", profile.read_text().strip()]
    if results.get("projectr_scale"):
        lines += ["", "## projectr at scale (bench/projectr_scale.py)", "", "```", results["projectr_scale"].strip(), "```"]
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    """Four panels: reload latency, throughput ratio, PSS, idle CPU."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = _labels(results)
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
    ax.set_title("Reload latency: write -> every worker serves it")
    ax.set_xticks(range(len(names)), names, fontsize=7, rotation=30, ha="right")
    ax.legend(fontsize=8)

    ax = axes[0][1]
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

    ax = axes[1][0]
    groups: dict[str, list[float]] = defaultdict(list)
    for m in results.get("memory", []):
        groups[f"{m['runner']}\n{m['when']}"].append(m["pss_mb"])
    keys = list(groups)
    ax.bar(range(len(keys)), [median_or_none(groups[k]) for k in keys], color="tab:green")
    ax.set_xticks(range(len(keys)), keys, fontsize=6)
    ax.set_ylabel("MB")
    ax.set_title("Total PSS, master + 4 workers")

    ax = axes[1][1]
    idle = _idle_medians(results)
    keys = list(idle)
    ax.bar(range(len(keys)), [max(idle[k], 1e-3) for k in keys], color="tab:red")
    ax.set_xticks(range(len(keys)), keys, fontsize=7, rotation=30, ha="right")
    ax.set_yscale("log")
    ax.set_ylabel("% of one core (log)")
    ax.set_title("Idle CPU with 5,000 unrelated files (0 drawn at 0.001)")
    fig.suptitle(f"projectr + prefork vs peers — {results['date']} — {results['machine']['cores']} shared cores (noisy)")
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
