"""Turning samples into numbers: percentiles, trace breakdowns, the table, JSON and plot."""

import json
import os
import platform
import shutil
import subprocess
import time

SPAWNED = "(spawned)"  # framing marks the benchmark adds around a traced run
REAPED = "(reaped)"
# Who made a mark, from its pid: the benchmark, the sandbox's PID 1, its first child.
ROLES = {0: "bench", 1: "pid1", 2: "command"}


def percentile(samples, pct: float) -> float:
    """Linear interpolation between closest ranks, like numpy's default."""
    ordered = sorted(samples)
    if not ordered:
        return float("nan")
    pos = (len(ordered) - 1) * pct / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), cpu)
    except OSError:
        pass
    bwrap = shutil.which("bwrap")
    bwrap_version = ""
    if bwrap:
        r = subprocess.run([bwrap, "--version"], capture_output=True, text=True)
        bwrap_version = r.stdout.strip()
    return {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "kernel": os.uname().release,
            "cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "bwrap": bwrap_version, "uid": os.getuid()}


# --- trace breakdown -------------------------------------------------------------------

def split_runs(records) -> list:
    """A library helper's records cut into runs, each from its "call" to its "returned" mark."""
    runs, current = [], None
    for record in records:
        if record[2] == "call":
            current = [(record[0], 0, SPAWNED)]
        elif record[2] == "returned" and current is not None:
            # Marks from other processes may be copied in late: order by time.
            runs.append(sorted(current) + [(record[0], 0, REAPED)])
            current = None
        elif current is not None:
            current.append(record)
    return runs


def breakdown(runs) -> dict:
    """Median time from each mark to the next one (in any process), over the runs."""
    order, per_label, totals = [], {}, []
    for run in runs:
        seen = {}
        for (t, pid, stage), (t_next, _, _) in zip(run, run[1:]):
            label = f"{ROLES.get(pid, 'caller')}: {stage}"
            seen[label] = seen.get(label, 0) + t_next - t
            if label not in order:
                order.append(label)
        for label in order:
            per_label.setdefault(label, []).append(seen.get(label, 0))
        totals.append(run[-1][0] - run[0][0])
    return {"runs": len(runs), "total_ns": percentile(totals, 50),
            "stages": [[label, percentile(per_label[label], 50)] for label in order]}


def parse_importtime(stderr: str) -> dict:
    """Top-level imports (nesting 0) from `python -X importtime`, heaviest first."""
    top = []
    for line in stderr.splitlines():
        if not line.startswith("import time:"):
            continue
        fields = line[len("import time:"):].split("|")
        if len(fields) != 3 or not fields[1].strip().isdigit():
            continue
        name = fields[2]
        if len(name) - len(name.lstrip()) <= 1:
            top.append((name.strip(), int(fields[1])))
    top.sort(key=lambda item: -item[1])
    return {"total_us": sum(us for _, us in top), "top_level": top}


# --- output ----------------------------------------------------------------------------

def _ms(ns) -> str:
    return f"{ns / 1e6:.1f}" if ns == ns else "n/a"


def markdown(results: dict) -> str:
    m = results["machine"]
    lines = ["## nsbox start-up latency", "",
             f"{m['date']} · Linux {m['kernel']} · {m['cpu']} · {m['cores']} cores · "
             f"Python {m['python']} · {m['bwrap'] or 'no bubblewrap'} · "
             f"{'root' if m['uid'] == 0 else 'unprivileged user'} · "
             f"{results['runs']} runs per case after {results['warmup']} warm-up, "
             f"interleaved round-robin", "",
             "`true` in a sandbox: new user, mount, PID, IPC, UTS, net namespaces, read-only /, "
             "minimal /dev, fresh /proc, private /tmp and /run, writable workspace.", "",
             "| case | p50 ms | p90 ms | p99 ms | × bwrap p50 | target |",
             "|---|---:|---:|---:|---:|---|"]
    base = next((c for c in results["cases"] if c["name"] == results["baseline"]), None)
    base_p50 = percentile(base["samples_ns"], 50) if base else None
    for case in results["cases"]:
        p50, p90, p99 = (percentile(case["samples_ns"], p) for p in (50, 90, 99))
        ratio = p50 / base_p50 if base_p50 else None
        target = results["targets"].get(case["name"])
        verdict = ""
        if target is not None:
            verdict = f"≤ {target}×" + ("" if ratio is None else
                                         (" met" if ratio <= target else " **missed**"))
        name = case["name"] + (f" ({case['note']})" if case["note"] else "")
        lines.append(f"| {name} | {_ms(p50)} | {_ms(p90)} | {_ms(p99)} | "
                     f"{'' if ratio is None else f'{ratio:.2f}×'} | {verdict} |")

    for path, bd in results.get("breakdown", {}).items():
        lines += ["", f"Where the time goes, `{path}` (NSBOX_TRACE=1, median of {bd['runs']} "
                  f"runs; each stage lasts until the next mark in any process; "
                  f"total {_ms(bd['total_ns'])} ms):", "", "| stage | ms |", "|---|---:|"]
        lines += [f"| {label} | {ns / 1e6:.2f} |" for label, ns in bd["stages"]]
    imports = results.get("import_time")
    if imports:
        heavy = ", ".join(f"{name} {us / 1000:.1f}" for name, us in imports["top_level"][:8])
        lines += ["", f"CLI imports (`python -X importtime`, `nsbox exec -- true`): "
                  f"{imports['total_us'] / 1000:.1f} ms in all; heaviest top-level (ms): {heavy}"]

    binds = results.get("binds")
    if binds:
        tools = sorted({t for row in binds.values() for t in row})
        lines += ["", "Latency against extra writable bind mounts (p50 ms):", "",
                  "| extra binds | " + " | ".join(tools) + " |",
                  "|---:|" + "---:|" * len(tools)]
        for n in sorted(binds, key=int):
            lines.append(f"| {n} | " + " | ".join(_ms(binds[n].get(t, float('nan')))
                                                   for t in tools) + " |")
    conc = results.get("concurrency")
    if conc:
        tools = sorted({t for row in conc.values() for t in row})
        lines += ["", "Throughput against sandboxes at once (sandboxes/s):", "",
                  "| at once | " + " | ".join(tools) + " |", "|---:|" + "---:|" * len(tools)]
        for width in sorted(conc, key=int):
            lines.append(f"| {width} | " + " | ".join(f"{conc[width].get(t, 0):.0f}"
                                                      for t in tools) + " |")
    memory = results.get("session_memory_kb")
    if memory is not None:
        lines += ["", f"Memory per idle session: {memory / 1024:.1f} MiB PSS"]
    if results.get("notes"):
        lines += ["", "Notes:"] + [f"- {note}" for note in results["notes"]]
    return "\n".join(lines) + "\n"


def write(results: dict, text: str, directory: str) -> list:
    """latest.md, latest.json, a dated JSON copy and latest.png (when matplotlib is there)."""
    os.makedirs(directory, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    written = []
    for name in ("latest.json", f"bench-{stamp}.json"):
        path = os.path.join(directory, name)
        with open(path, "w") as f:
            json.dump(results, f, indent=1)
        written.append(path)
    png = os.path.join(directory, "latest.png")
    why = plot(results, png)
    if why:
        text += f"\n(no plot: {why})\n"
    else:
        written.append(png)
    path = os.path.join(directory, "latest.md")
    with open(path, "w") as f:
        f.write(text)
    written.append(path)
    return written


def plot(results: dict, path: str) -> str:
    """Latency distributions per case, plus the two scaling curves; '' or why not."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install 'nsbox[bench]')"
    cases = [c for c in results["cases"] if c["samples_ns"]]
    fig, axes = plt.subplots(1, 3, figsize=(17, 0.5 * len(cases) + 3),
                             gridspec_kw={"width_ratios": [2, 1, 1]})
    dist = axes[0]
    dist.boxplot([[s / 1e6 for s in c["samples_ns"]] for c in cases], vert=False,
                 whis=(1, 99), showfliers=True, flierprops={"markersize": 2})
    dist.set_yticks(range(1, len(cases) + 1), [c["name"] for c in cases])
    dist.set_xscale("log")
    dist.set_xlabel("ms (box: p25-p75, whiskers: p1-p99)")
    dist.set_title("latency of `true` per case")
    dist.invert_yaxis()
    for ax, key, ylabel, title, scale in (
            (axes[1], "binds", "p50 ms", "extra bind mounts", 1e-6),
            (axes[2], "concurrency", "sandboxes/s", "sandboxes at once", 1)):
        data = results.get(key) or {}
        xs = sorted(data, key=int)
        for tool in sorted({t for row in data.values() for t in row}):
            ax.plot([int(x) for x in xs], [data[x].get(tool, float("nan")) * scale for x in xs],
                    marker="o", label=tool)
        ax.set_xscale("log", base=2)
        ax.set_xlabel(title)
        ax.set_ylabel(ylabel)
        ax.set_title(f"{ylabel} against {title}")
        if data:
            ax.legend()
    m = results["machine"]
    fig.suptitle(f"nsbox start-up · {m['date']} · Linux {m['kernel']} · {m['cpu']} · "
                 f"{m['cores']} cores")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return ""
