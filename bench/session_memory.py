"""Memory of idle nsbox Sessions, for bench.py and bench/run.sh.

    session_memory.py hold
        (as the user) imports nsbox, prints "ready 0", then on each "open" line on stdin
        opens one more Session (and runs `true` in it), waits for it to go idle and
        prints "ready N"; on EOF closes them all.
    session_memory.py measure --sessions N --out FILE -- HOLDER_ARGV...
        starts the holder, and at each step sums the PSS (smaps_rollup) of the holder
        and every process under it; writes the steps as JSON.

nsbox's helper processes are not dumpable, so their smaps_rollup can be read by root
only: run.sh runs `measure` as root with the holder as the test user. A user measuring
its own sessions gets RSS from /proc/PID/status instead, marked as such (an upper
bound: pages shared with the fork server count in full in every process).
"""

import json
import os
import subprocess
import sys
import tempfile
import time

SETTLE_S = 0.3  # let a new session reach its idle state


def hold() -> int:
    os.chdir(tempfile.mkdtemp(prefix="nsbox-memory-"))  # the sessions' workspace
    import nsbox
    import nsbox.api  # noqa: F401  (imported before the baseline)

    sessions = []
    print("ready 0", flush=True)
    try:
        for line in sys.stdin:
            if line.strip() != "open":
                break
            session = nsbox.Session()
            sessions.append(session.__enter__() or session)
            result = sessions[-1].run(["true"])
            if result.returncode != 0:
                print(f"error true exited {result.returncode}", flush=True)
                return 1
            time.sleep(SETTLE_S)
            print(f"ready {len(sessions)}", flush=True)
    finally:
        for session in sessions:
            session.close()
    return 0


def tree(root: int) -> list:
    """root and every process under it."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    mine, frontier = {root}, {root}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - mine
        mine |= frontier
    return sorted(mine)


def process_kb(pid: int):
    """(kB, metric): PSS when smaps_rollup is readable, else RSS; (None, why) if gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("Pss:")), "pss"
    except PermissionError:
        pass
    except (OSError, StopIteration) as err:
        return None, str(err)
    try:
        with open(f"/proc/{pid}/status") as f:
            fields = dict(l.split(":", 1) for l in f if ":" in l)
        return sum(int(fields[k].split()[0]) for k in ("RssAnon", "RssFile", "RssShmem")), "rss"
    except (OSError, KeyError, ValueError) as err:
        return None, str(err)


def snapshot(root: int) -> dict:
    procs, metrics = [], set()
    for pid in tree(root):
        kb, metric = process_kb(pid)
        if kb is None:
            continue
        try:
            with open(f"/proc/{pid}/comm") as f:
                comm = f.read().strip()
        except OSError:
            comm = "?"
        procs.append({"pid": pid, "comm": comm, "kb": kb, "metric": metric})
        metrics.add(metric)
    return {"total_kb": sum(p["kb"] for p in procs), "processes": procs,
            "metric": "pss" if metrics <= {"pss"} else "rss (smaps_rollup unreadable)"}


def measure(holder_argv: list, sessions: int) -> dict:
    """Steps 0..sessions of the holder: the PSS of its process tree at each."""
    proc = subprocess.Popen(holder_argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    steps = []
    try:
        for n in range(sessions + 1):
            if n:
                proc.stdin.write("open\n")
                proc.stdin.flush()
            line = proc.stdout.readline().strip()
            if line != f"ready {n}":
                raise RuntimeError(f"holder said {line!r}, expected 'ready {n}'")
            steps.append(snapshot(proc.pid))
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)
    return summarize(steps, measured_by="root" if os.getuid() == 0 else "the same user")


def summarize(steps: list, measured_by: str) -> dict:
    totals = [s["total_kb"] for s in steps]
    out = {"sessions": len(steps) - 1, "totals_kb": totals, "measured_by": measured_by,
           "metric": steps[-1]["metric"] if steps else "", "steps": steps}
    if len(totals) >= 2:
        out["first_kb"] = totals[1] - totals[0]
    if len(totals) >= 3:
        out["extra_kb"] = (totals[-1] - totals[1]) / (len(totals) - 2)
    return out


def command(argv, doc: str, hold, measure, count_option: str, default_count: int) -> int:
    """`hold` (run by the measured user) or `measure [COUNT_OPTION N] [--out FILE] --
    HOLDER...` (run by root): the command line this module and image_memory.py share."""
    if argv[:1] == ["hold"]:
        return hold()
    if argv[:1] != ["measure"] or "--" not in argv:
        sys.stderr.write(doc)
        return 2
    opts, holder = argv[1:argv.index("--")], argv[argv.index("--") + 1:]
    count = int(opts[opts.index(count_option) + 1]) if count_option in opts else default_count
    text = json.dumps(measure(holder, count), indent=1)
    if "--out" in opts:
        with open(opts[opts.index("--out") + 1], "w") as f:
            f.write(text)
    else:
        print(text)
    return 0


def main(argv) -> int:
    return command(argv, __doc__, hold, measure, "--sessions", 4)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
