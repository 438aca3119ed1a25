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

# Case names the goals refer to.
BWRAP = "bwrap (same isolation)"
BWRAP_IN_PROCESS = "subprocess.run(bwrap)"
PYTHON = "python3 -c pass"
CLI = "nsbox exec -- true"
CLI_OVERLAY = "nsbox exec --workspace-mode overlay -- true"
CLI_ROOTFS = "nsbox exec --rootfs -- true"
CLI_ROOTFS_WRITABLE = "nsbox exec --rootfs --rootfs-writable -- true"
RUN_BACK_TO_BACK = "nsbox.run(['true']) back to back"
RUN_ROTATION = "nsbox.run(['true']) rotating 8 policies"
RUN_FRESH = "nsbox.run(['true'], prewarm=False)"
SESSION = "Session.run(['true'])"
# The cost of reporting denials: each workload with reporting on, and + NO_DENIALS off.
NO_DENIALS = ", --no-denial-events"
CLI_NO_DENIALS = "nsbox exec --no-denial-events -- true"
DENIAL_MAKE = "make -j2"
DENIAL_PIP = "pip install of a local wheel"
DENIAL_LOOP = "100,000 denied writes"
MIB = 1024  # kB


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


# --- goals -----------------------------------------------------------------------------

def _p50(results, name, section="cases"):
    case = next((c for c in results.get(section) or () if c["name"] == name), None)
    return percentile(case["samples_ns"], 50) if case and case["samples_ns"] else None


def _ratio(a, b):
    return a / b if a is not None and b else None


def goals(results: dict) -> list:
    """[(goal, measured text, met: True/False/None)]: None when it could not be measured."""
    rows = []

    def ratio_row(goal, num, den, limit, at_least=False):
        r = _ratio(num, den)
        met = None if r is None else (r >= limit if at_least else r <= limit)
        rows.append((goal, "n/a" if r is None else f"{r:.2f}×", met))

    cli, bwrap = _p50(results, CLI), _p50(results, BWRAP)
    ratio_row("`nsbox exec -- true` ≤ 1.5× `python3 -c pass` (p50)", cli,
              _p50(results, PYTHON), 1.5)
    ratio_row("`nsbox exec -- true` ≤ 4× bwrap (p50)", cli, bwrap, 4.0)
    for variant in (CLI_OVERLAY, CLI_ROOTFS, CLI_ROOTFS_WRITABLE):
        measured = _p50(results, variant)
        goal = f"`{variant}` ≤ 1 ms over `nsbox exec -- true` (p50)"
        if measured is None or cli is None:
            rows.append((goal, "n/a", None))
        else:
            rows.append((goal, f"{(measured - cli) / 1e6:+.2f} ms ({_ms(cli)} → "
                               f"{_ms(measured)} ms)", measured - cli <= 1e6))
    base = _p50(results, BWRAP_IN_PROCESS)
    ratio_row("`nsbox.run` pre-warmed, back to back ≤ 1.0× `subprocess.run(bwrap)`",
              _p50(results, RUN_BACK_TO_BACK), base, 1.0)
    ratio_row("`nsbox.run` pre-warmed, rotating 8 policies ≤ 1.0× `subprocess.run(bwrap)`",
              _p50(results, RUN_ROTATION, "rotation"),
              _p50(results, BWRAP_IN_PROCESS, "rotation"), 1.0)
    ratio_row("`nsbox.run(prewarm=False)` ≤ 1.5× `subprocess.run(bwrap)`",
              _p50(results, RUN_FRESH), base, 1.5)
    ratio_row("`Session.run` ≤ 0.2× `subprocess.run(bwrap)`", _p50(results, SESSION), base, 0.2)

    threads = results.get("threads") or {}
    if threads:
        per = {t: _ratio(percentile(row.get("nsbox.run", []), 50),
                         percentile(row.get("subprocess.run(bwrap)", []), 50))
               for t, row in threads.items()}
        worst = min((r for r in per.values() if r is not None), default=None)
        text = ", ".join(f"{t}: {r:.2f}×" for t, r in sorted(per.items(), key=lambda i: int(i[0]))
                         if r is not None)
        rows.append(("sustained `nsbox.run` ≥ 1.0× `subprocess.run(bwrap)` sandboxes/s, "
                     "T threads", text or "n/a", None if worst is None else worst >= 1.0))
    else:
        rows.append(("sustained `nsbox.run` ≥ 1.0× `subprocess.run(bwrap)` sandboxes/s",
                     "n/a", None))

    mem = results.get("session_memory") or {}
    pss = mem.get("metric") == "pss"
    for key, goal, limit in (("first_kb", "first idle Session (with the fork server) ≤ 3 MiB PSS", 3),
                             ("extra_kb", "each extra idle Session ≤ 1.5 MiB PSS", 1.5)):
        value = mem.get(key)
        if value is None:
            rows.append((goal, "n/a", None))
        else:
            rows.append((goal, f"{value / MIB:.2f} MiB" + ("" if pss else f" ({mem.get('metric')})"),
                         (value / MIB <= limit) if pss else None))

    hidden = results.get("hidden_entries") or {}
    for kind, goal in (("HOME", "$HOME with {} → {} entries: CLI p50 flat (≤ 1.1×)"),
                       ("--hide", "`--hide` in a directory of {} → {} entries: CLI p50 flat "
                                  "(≤ 1.1×)")):
        counts = sorted(int(name.split(":")[1]) for name in hidden if name.startswith(kind + ":"))
        if len(counts) < 2:
            rows.append((goal.format("few", "many"), "n/a", None))
            continue
        goal = goal.format(f"{counts[0]:,}", f"{counts[-1]:,}")
        lo, hi = (percentile(hidden[f"{kind}:{n}"], 50) for n in (counts[0], counts[-1]))
        r = _ratio(hi, lo)
        rows.append((goal, f"{r:.2f}× ({_ms(lo)} → {_ms(hi)} ms)", r <= 1.1))

    for tool, peer, goal in (
            ("nsbox exec", "bwrap", "per environment variable: `nsbox exec` ≤ 2× bwrap's"),
            ("Session.run", "subprocess.run(bwrap)",
             "per environment variable: `Session.run` ≤ 2× `subprocess.run(bwrap)`'s")):
        a, b = env_slope(results, tool), env_slope(results, peer)
        if a is None or b is None:
            rows.append((goal, "n/a", None))
            continue
        text = f"{a:.0f} vs {b:.0f} ns/variable"
        rows.append((goal, text, a <= 2 * max(b, 0) if b > 0 else a <= 0))

    on, off = (_p50(results, name, "denial_startup") for name in (CLI, CLI_NO_DENIALS))
    goal = "denial reporting: `nsbox exec -- true` ≤ +0.5 ms over `--no-denial-events` (p50)"
    if on is None or off is None:
        rows.append((goal, "n/a", None))
    else:
        rows.append((goal, f"{(on - off) / 1e6:+.2f} ms ({_ms(off)} → {_ms(on)} ms)",
                     on - off <= 0.5e6))
    for workload in (DENIAL_MAKE, DENIAL_PIP):
        ratio_row(f"denial reporting: `{workload}` in the workspace ≤ 1.05× "
                  f"`--no-denial-events` (median wall time)",
                  _p50(results, workload, "denial_builds"),
                  _p50(results, workload + NO_DENIALS, "denial_builds"), 1.05)
    ratio_row(f"denial reporting: {DENIAL_LOOP} (a `sh` loop) ≤ 2× `--no-denial-events` "
              f"(median wall time)", _p50(results, DENIAL_LOOP, "denial_builds"),
              _p50(results, DENIAL_LOOP + NO_DENIALS, "denial_builds"), 2.0)

    big = results.get("big_request") or {}
    for launch in ("nsbox.run", "Session.run"):
        if launch in big:
            ok = big[launch]["ok"]
            rows.append((f"{launch} with a launch request > 256 KiB "
                         f"({big['variables']} variables, {big['env_bytes'] // 1024} KiB) works",
                         "works" if ok else "FAILS: " + big[launch]["detail"][:120], ok))
    return rows


def env_slope(results: dict, tool: str):
    """ns per extra environment variable: p50 at the most minus p50 at the fewest."""
    env = results.get("env_size") or {}
    counts = sorted(int(name.rsplit(":", 1)[1]) for name in env
                    if name.rsplit(":", 1)[0] == tool)
    if len(counts) < 2 or counts[-1] == counts[0]:
        return None
    hi, lo = (percentile(env[f"{tool}:{n}"], 50) for n in (counts[-1], counts[0]))
    return (hi - lo) / (counts[-1] - counts[0])


# --- output ----------------------------------------------------------------------------

def _ms(ns) -> str:
    return f"{ns / 1e6:.1f}" if ns == ns else "n/a"


def markdown(results: dict) -> str:
    m = results["machine"]
    install = results.get("install") or {}
    lines = ["## nsbox start-up latency", "",
             f"{m['date']} · Linux {m['kernel']} · {m['cpu']} · {m['cores']} cores · "
             f"Python {m['python']} · {m['bwrap'] or 'no bubblewrap'} · "
             f"{'root' if m['uid'] == 0 else 'unprivileged user'} · "
             f"{results['runs']} runs per case after {results['warmup']} warm-up, "
             f"interleaved round-robin", ""]
    if install:
        kind = ("regular install (checked)" if install.get("regular") else
                "not checked to be a regular install" if install.get("regular") is None else
                "NOT the regular install")
        head = (install.get("script_head") or "").splitlines()
        code = [line for line in head[1:] if line.strip() and not line.startswith("#")]
        lines += [f"nsbox under test: `{install['nsbox_file']}` ({kind}"
                  f"{', made by ' + install['pip'] if install.get('pip') else ''}); CLI: "
                  f"`{' '.join(install['script'])}`"
                  + (f" (`{head[0]}`, first statement `{code[0]}`)" if code else "")
                  + f"; the benchmark process (library cases) runs in `{install['cwd']}`, "
                  f"sys.path[0] `{install['sys_path0']}`.", ""]
    rows = goals(results)
    if results.get("only"):  # one section measured: the other goals are not in question
        rows = [row for row in rows if row[2] is not None]
        lines += [f"Only the `{results['only']}` section was measured (`--only`).", ""]
    full = not results.get("only")  # --only: no empty goal or latency table
    if rows or full:
        lines += ["### Goals", "", "| goal | measured | met |", "|---|---|---|"]
        for goal, measured, met in rows:
            verdict = "not measured" if met is None else ("met" if met else "**missed**")
            lines.append(f"| {goal} | {measured} | {verdict} |")
        lines += ["", f"{sum(1 for r in rows if r[2])} of {len(rows)} goals met.", ""]
    if results["cases"] or full:
        lines += ["### Latency", "",
                  "`true` in a sandbox: new user, mount, PID, IPC, UTS, net namespaces, "
                  "read-only /, minimal /dev, fresh /proc, private /tmp and /run, writable "
                  "workspace.", "",
                  "| case | p50 ms | p90 ms | p99 ms | × bwrap p50 "
                  "| × subprocess.run(bwrap) p50 |", "|---|---:|---:|---:|---:|---:|"]
    base_p50 = _p50(results, results["baseline"])
    lib_p50 = _p50(results, BWRAP_IN_PROCESS)
    for case in results["cases"]:
        p50, p90, p99 = (percentile(case["samples_ns"], p) for p in (50, 90, 99))
        ratio, lib = _ratio(p50, base_p50), _ratio(p50, lib_p50)
        name = case["name"] + (f" ({case['note']})" if case["note"] else "")
        lines.append(f"| {name} | {_ms(p50)} | {_ms(p90)} | {_ms(p99)} | "
                     f"{'' if ratio is None else f'{ratio:.2f}×'} | "
                     f"{'' if lib is None else f'{lib:.2f}×'} |")

    rot = results.get("rotation")
    if rot:
        lines += ["", "Rotating policies (a round-robin of its own, so that no other plan competes "
                  "for the pre-warmed spares):", "", "| case | p50 ms | p90 ms | p99 ms |",
                  "|---|---:|---:|---:|"]
        for case in rot:
            name = case["name"] + (f" ({case['note']})" if case["note"] else "")
            lines.append(f"| {name} | " + " | ".join(
                _ms(percentile(case["samples_ns"], p)) for p in (50, 90, 99)) + " |")

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
    threads = results.get("threads")
    if threads:
        tools = sorted({t for row in threads.values() for t in row})
        lines += ["", f"Sustained throughput: T threads each making "
                  f"{results.get('threads_per_thread_calls')} calls (sandboxes/s, median of "
                  f"repeats):", "", "| threads | " + " | ".join(tools) + " | ratio |",
                  "|---:|" + "---:|" * (len(tools) + 1)]
        for width in sorted(threads, key=int):
            row = {t: percentile(threads[width].get(t, []), 50) for t in tools}
            ratio = _ratio(row.get("nsbox.run"), row.get("subprocess.run(bwrap)"))
            lines.append(f"| {width} | " + " | ".join(f"{row[t]:.0f}" for t in tools)
                         + f" | {'' if ratio is None else f'{ratio:.2f}×'} |")
    hidden = results.get("hidden_entries")
    if hidden:
        lines += ["", "CLI p50 ms against entries beside a hidden path ($HOME with N entries, "
                  "whose ~/.ssh is hidden by default; `--hide DIR/secret` with N entries in DIR; "
                  "each used once as $HOME by `nsbox exec` and then left unchanged for "
                  f"{results.get('hidden_entries_age_s', '?')} s):",
                  "", "| entries | $HOME | --hide |", "|---:|---:|---:|"]
        for n in sorted({int(k.split(":")[1]) for k in hidden}):
            lines.append(f"| {n} | {_ms(percentile(hidden.get(f'HOME:{n}', []), 50))} | "
                         f"{_ms(percentile(hidden.get(f'--hide:{n}', []), 50))} |")
    env = results.get("env_size")
    if env:
        tools = list(dict.fromkeys(k.rsplit(":", 1)[0] for k in env))
        counts = sorted({int(k.rsplit(":", 1)[1]) for k in env})
        lines += ["", "p50 ms against extra environment variables (16-byte values):", "",
                  "| extra variables | " + " | ".join(tools) + " |",
                  "|---:|" + "---:|" * len(tools)]
        for n in counts:
            lines.append(f"| {n} | " + " | ".join(_ms(percentile(env.get(f"{t}:{n}", []), 50))
                                                  for t in tools) + " |")
        slopes = [(t, env_slope(results, t)) for t in tools]
        lines.append("| ns per variable | " + " | ".join(
            "n/a" if v is None else f"{v:.0f}" for _, v in slopes) + " |")
    cow = results.get("overlay")
    if cow and cow.get("files"):
        empty = percentile(cow.get("empty_exec_ns") or [], 50)
        lines += ["", "Copy-on-write workspace: a run creating N files (`nsbox exec "
                  "--workspace-mode overlay`), its manifest computed directly on the kept run "
                  "(`nsbox.plan.overlay.recompute`) and `nsbox apply RUN` (wall time, with the "
                  f"CLI's start-up); the same run creating nothing takes {_ms(empty)} ms "
                  "(median ms):", "",
                  "| files | exec | exec − empty run | manifest | apply |",
                  "|---:|---:|---:|---:|---:|"]
        for n in sorted(cow["files"], key=int):
            row = cow["files"][n]
            run = percentile(row["exec_ns"], 50)
            lines.append(f"| {int(n):,} | {_ms(run)} | {_ms(run - empty)} | "
                         f"{percentile(row['manifest_ns'], 50) / 1e6:.2f} | "
                         f"{_ms(percentile(row['apply_ns'], 50))} |")
    big = results.get("big_request")
    if big:
        lines += ["", f"Launch request larger than 256 KiB ({big['variables']} variables, "
                  f"{big['env_bytes']} bytes of environment): " + "; ".join(
                      f"{k}: {'works' if v['ok'] else 'fails (' + v['detail'] + ')'}"
                      for k, v in big.items() if isinstance(v, dict))]
    mem = results.get("session_memory")
    if mem and "first_kb" in mem:
        lines += ["", f"Memory of idle Sessions ({mem['metric']}, measured by {mem['measured_by']}"
                  f", sum over the holding process and every process under it): "
                  f"totals for 0..{mem['sessions']} sessions "
                  + ", ".join(f"{kb / MIB:.1f}" for kb in mem["totals_kb"]) + " MiB; first "
                  f"{mem['first_kb'] / MIB:.2f} MiB"
                  + (f", each extra {mem['extra_kb'] / MIB:.2f} MiB" if "extra_kb" in mem else "")]
        last = mem["steps"][-1]["processes"]
        by = {}
        for proc in last:
            by.setdefault(proc["comm"], []).append(proc["kb"])
        lines.append("With all open, by process name (count, MiB): " + ", ".join(
            f"{name} ({len(kbs)}, {sum(kbs) / MIB:.1f})" for name, kbs in sorted(by.items())))
    lines += image_memory_table(results)
    lines += denial_table(results)
    if results.get("notes"):
        lines += ["", "Notes:"] + [f"- {note}" for note in results["notes"]]
    return "\n".join(lines) + "\n"


def image_memory_table(results: dict) -> list:
    """Markdown lines: idle sandboxes held at once on one image, per kind."""
    mem = results.get("image_memory") or {}
    rows = mem.get("kinds") or []
    if not rows:
        return []
    by_kind = {row["kind"]: row for row in rows}
    metric = rows[0]["metric"]
    lines = ["", f"Memory of {mem['sandboxes']} idle sandboxes held open at once on one image "
             f"({(mem.get('image_kb') or 0) / MIB:.1f} MiB, {mem.get('image_files', '?')} "
             "files: `true`, `sleep`, their libraries), next to as many on the host root and "
             f"as many bwrap sandboxes ({metric} read by {mem['measured_by']} over the holding "
             "process and everything under it, with them open minus before; the fork server "
             "already running). Sessions idle after one `true`; layer: what a writable root's own layer "
             "holds (in memory: its tmpfs; on disk: its directory):",
             "", "| sandboxes | total MiB | per sandbox MiB | × reference | writable layer KiB "
             "each | with them open, by process name: count (MiB) |",
             "|---|---:|---:|---:|---:|---|"]
    for row in rows:
        ref = by_kind.get(row.get("reference") or "")
        ratio = _ratio(row["per_sandbox_kb"], ref and ref["per_sandbox_kb"])
        layers = row.get("layer_kb")
        layer = "" if "layer_kb" not in row else "n/a" if not layers else (
            f"{max(layers)}" if min(layers) == max(layers) else f"{min(layers)}–{max(layers)}")
        by = {}
        for proc in row["processes"]:
            by.setdefault(proc["comm"], []).append(proc["kb"])
        lines.append(f"| {row['what']} | {row['total_kb'] / MIB:.1f} | "
                     f"{row['per_sandbox_kb'] / MIB:.2f} | "
                     f"{'' if ratio is None else f'{ratio:.2f}×'} | {layer} | "
                     + ", ".join(f"{name} {len(kbs)} ({sum(kbs) / MIB:.1f})"
                                 for name, kbs in sorted(by.items())) + " |")
    return lines


def denial_table(results: dict) -> list:
    """Markdown lines: each denial-cost case, reporting on against off."""
    cases = (results.get("denial_startup") or []) + (results.get("denial_builds") or [])
    if not cases:
        return []
    events = results.get("denial_events") or {}
    lines = ["", "Cost of reporting denials (reporting on, the default, against "
             "`--no-denial-events`, interleaved; a build starts from clean each run; events: "
             "what one more run with reporting on reported):", "",
             "| case | runs | p50 ms | min ms | max ms | × off p50 | events |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for case in cases:
        samples = case["samples_ns"]
        if not samples:
            continue
        name = case["name"]
        section = "denial_startup" if case in (results.get("denial_startup") or []) else \
            "denial_builds"
        off = None if name.endswith(NO_DENIALS) or name == CLI_NO_DENIALS else _p50(
            results, CLI_NO_DENIALS if name == CLI else name + NO_DENIALS, section)
        ratio = _ratio(percentile(samples, 50), off)
        label = name + (f" ({case['note']})" if case["note"] else "")
        lines.append(f"| {label} | {len(samples)} | {_ms(percentile(samples, 50))} | "
                     f"{_ms(min(samples))} | {_ms(max(samples))} | "
                     f"{'' if ratio is None else f'{ratio:.3f}×'} | {events.get(name, '')} |")
    return lines


def write(results: dict, text: str, directory: str, plot_python: str = None) -> list:
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
    if why and plot_python and os.access(plot_python, os.X_OK):
        # matplotlib lives in a separate venv (bench/run.sh): plot from there.
        r = subprocess.run([plot_python, os.path.abspath(__file__), "--plot",
                            os.path.join(directory, "latest.json"), png],
                           capture_output=True, text=True)
        why = r.stdout.strip() if r.returncode == 0 else (r.stderr.strip().splitlines()
                                                           or ["plot failed"])[-1]
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
    if not cases:
        return "no latency cases in this run"
    fig, axes = plt.subplots(1, 4, figsize=(22, 0.5 * len(cases) + 3),
                             gridspec_kw={"width_ratios": [2, 1, 1, 1]})
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
    threads = results.get("threads") or {}
    ax = axes[3]
    xs = sorted(threads, key=int)
    for tool in sorted({t for row in threads.values() for t in row}):
        ax.plot([int(x) for x in xs], [percentile(threads[x].get(tool, []), 50) for x in xs],
                marker="o", label=tool)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("threads")
    ax.set_ylabel("sandboxes/s")
    ax.set_title("library: sustained sandboxes/s against threads")
    if threads:
        ax.legend()
    m = results["machine"]
    fig.suptitle(f"nsbox start-up · {m['date']} · Linux {m['kernel']} · {m['cpu']} · "
                 f"{m['cores']} cores")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return ""


if __name__ == "__main__":  # `report.py --plot latest.json out.png`, from a python with matplotlib
    import sys

    if sys.argv[1:2] == ["--plot"]:
        with open(sys.argv[2]) as f:
            why = plot(json.load(f), sys.argv[3])
        print(why)
        sys.exit(0 if not why else 1)
