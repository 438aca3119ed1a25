"""Start-up latency of `nsbox exec` and the library against bubblewrap and friends.

Run by `make bench` (bench/run.sh) as an unprivileged user. Every case runs
`true` in a sandbox as close to nsbox's default as the peer allows. Cases are
interleaved round-robin so machine drift hits them all alike. Nothing here
fails on timing: targets are reported, not enforced.

    python bench/bench.py [--quick] [--runs N] [--results DIR] [--installed VENV]
                          [--only denials|image-memory]

bench/run.sh runs it with a regular (non-editable) install of nsbox: the venv's
console script (bin/nsbox) for the CLI and `import nsbox` from its site-packages
for the library (--installed checks that). The goals and their verdicts: report.goals().
"""

import argparse
import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import image_memory
import report
import session_memory
import workloads

HERE = os.path.dirname(os.path.abspath(__file__))

# nsbox comes from wherever `import nsbox` finds it: run.sh runs this from elsewhere
# than the source tree with the venv's python, so that is the regular install.
from nsbox import trace  # noqa: E402

BWRAP = report.BWRAP
SYSTEM_PYTHON = "/usr/bin/python3"
POLICIES = 8  # nsbox.run rotating over this many policies


class Case:
    """One way of running `true`; `run()` returns wall time in ns and raises on failure."""

    def __init__(self, name: str, argv=None, call=None, note: str = "", env=None,
                 burst: int = 0, reset=None):
        self.name, self.argv, self.call, self.note = name, argv, call, note
        self.env, self.burst = env, burst
        self.reset = reset  # untimed, before each run: a build starts from clean
        self.samples = []  # a burst case: the mean of each burst's calls
        self.calls = []  # a burst case: every call's time

    def run(self):
        """Wall time in ns; a burst case returns a list: `burst` calls timed back to back
        after one untimed call (so none of them follows idle time). Its sample is their
        mean; each call's time is kept too (calls_ns in the JSON)."""
        if self.reset is not None:
            self.reset()
        if self.burst:
            self.call()
            times = []
            for _ in range(self.burst):
                start = time.perf_counter_ns()
                self.call()
                times.append(time.perf_counter_ns() - start)
            return times
        if self.call is not None:
            start = time.perf_counter_ns()
            self.call()
            return time.perf_counter_ns() - start
        return spawn_and_wait(self.argv, self.env)


def spawn_and_wait(argv, env=None) -> int:
    """posix_spawn + waitpid: the cheapest way to time a command from Python."""
    start = time.perf_counter_ns()
    pid = os.posix_spawn(argv[0], argv, env if env is not None else _ENV,
                         file_actions=_QUIET)
    _, status = os.waitpid(pid, 0)
    elapsed = time.perf_counter_ns() - start
    if status != 0:
        raise RuntimeError(f"exit status {os.waitstatus_to_exitcode(status)}")
    return elapsed


_ENV = {k: v for k, v in os.environ.items() if not k.startswith("NSBOX_TRACE")}
_QUIET = [(os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)]


def why_it_fails(argv) -> str:
    """The command's own words, for the note that says why a case is skipped."""
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=30, env=_ENV)
    except (OSError, subprocess.SubprocessError) as err:
        return str(err)
    text = (r.stderr or r.stdout).strip().splitlines()
    return f"exit {r.returncode}: {text[-1] if text else 'no output'}"


# --- the peers -------------------------------------------------------------------------

def bwrap_argv(bwrap: str, workspace: str, extra_binds=(), root: str = "/") -> list:
    """bubblewrap with nsbox's default isolation: every namespace, read-only /,
    minimal /dev, fresh /proc, private /tmp and /run, writable workspace."""
    argv = [bwrap, "--unshare-all", "--die-with-parent", "--hostname", "nsbox",
            "--ro-bind", root, "/", "--dev", "/dev", "--proc", "/proc",
            "--tmpfs", "/tmp", "--tmpfs", "/run", "--bind", workspace, workspace]
    for path in extra_binds:
        argv += ["--bind", path, path]
    return argv + ["--chdir", workspace, "true"]


def image_root(workspace: str, notes: list, commands=("true",)):
    """A small image for container mode: the host's `true` (and any other `commands`) in
    /bin and the libraries ldd names, with the mount points both nsbox and bwrap need
    (bwrap cannot add them to a read-only root). None, with a note, when it cannot be
    built."""
    root = tempfile.mkdtemp(prefix="nsbox-bench-image-")
    try:
        os.makedirs(os.path.join(root, "bin"))
        for command in commands:
            binary = os.path.realpath(shutil.which(command) or f"/bin/{command}")
            shutil.copy2(binary, os.path.join(root, "bin", command))
            libs = subprocess.run(["ldd", binary], capture_output=True, text=True).stdout.split()
            for lib in (w for w in libs if w.startswith("/") and os.path.exists(w)):
                dest = os.path.join(root, lib.lstrip("/"))
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                shutil.copy2(os.path.realpath(lib), dest)
        for point in ("proc", "dev", "tmp", "run", workspace.lstrip("/")):
            os.makedirs(os.path.join(root, point), exist_ok=True)
        return root
    except (OSError, subprocess.SubprocessError) as err:
        shutil.rmtree(root, ignore_errors=True)
        notes.append(f"no image for the container-mode cases ({err}): they are skipped")
        return None


def nsbox_argv(script: list, writable=()) -> list:
    argv = list(script) + ["exec"]
    for path in writable:
        argv += ["--writable", path]
    return argv + ["--", "true"]


def overlay_argv(script: list, command: list, workspace: str = "", status: str = "") -> list:
    argv = list(script) + ["exec", "--workspace-mode", "overlay"]
    if workspace:
        argv += ["--workspace", workspace]
    if status:
        argv += ["--json-status", status]
    return argv + ["--"] + list(command)


def nsbox_script() -> list:
    """The venv's console script, as a user would type `nsbox`."""
    script = os.path.join(os.path.dirname(sys.executable), "nsbox")
    if os.access(script, os.X_OK):
        return [script]
    return [sys.executable, "-m", "nsbox"]


def library():
    """(nsbox module, notes): run/Session are picked up as soon as they exist."""
    import nsbox

    return nsbox, {name: hasattr(nsbox, name) for name in ("run", "Session")}


def returncode_of(result) -> int:
    return getattr(result, "returncode", result if isinstance(result, int) else 0)


def check_ok(result) -> None:
    code = returncode_of(result)
    if code != 0:
        raise RuntimeError(f"returned exit status {code}")


def build_cases(workspace: str, notes: list) -> tuple:
    """(cases, cleanups). A peer that is missing is left out with a note."""
    cases, cleanups = [], []
    true = shutil.which("true") or "/bin/true"
    cases.append(Case("/bin/true", [true], note="fork+exec floor"))
    unshare = shutil.which("unshare")
    if unshare:
        cases.append(Case("unshare -Urmpfn true", [unshare, "-Urmpfn", true]))
    else:
        notes.append("unshare (util-linux) not found: its case is skipped")
    bwrap = shutil.which("bwrap")
    if bwrap:
        cases.append(Case(BWRAP, bwrap_argv(bwrap, workspace)))
    else:
        notes.append("bubblewrap not found: its cases are skipped and no ratios are given "
                     "(as root, `make bench` installs it)")
    python3 = SYSTEM_PYTHON if os.access(SYSTEM_PYTHON, os.X_OK) else sys.executable
    cases.append(Case("python3 -c pass", [python3, "-c", "pass"],
                      note=f"reference, {python3}"))
    cases.append(Case("venv python -c pass", [sys.executable, "-c", "pass"],
                      note="the CLI's interpreter and site"))
    cases.append(Case("nsbox exec -- true", nsbox_argv(nsbox_script()), note="CLI"))
    cases.append(Case(report.CLI_OVERLAY, overlay_argv(nsbox_script(), ["true"]),
                      note="CLI, copy-on-write workspace"))
    image = image_root(workspace, notes)
    if image is not None:
        cleanups.append(lambda: shutil.rmtree(image, ignore_errors=True))
        rootfs = list(nsbox_script()) + ["exec", "--rootfs", image]
        cases.append(Case(report.CLI_ROOTFS, rootfs + ["--", "/bin/true"],
                          note="CLI, container mode: an image as /, read-only"))
        cases.append(Case(report.CLI_ROOTFS_WRITABLE,
                          rootfs + ["--rootfs-writable", "--", "/bin/true"],
                          note="CLI, container mode, private copy-on-write root"))
        if bwrap:
            cases.append(Case("bwrap, the same image as /", bwrap_argv(
                bwrap, workspace, root=image), note="the image as --ro-bind IMAGE /"))

    nsbox, have = library()
    if bwrap:
        argv = bwrap_argv(bwrap, workspace)
        cases.append(Case(report.BWRAP_IN_PROCESS,
                          call=lambda: check_ok(subprocess.run(argv)), note="in-process"))
    if have["run"]:
        cases.append(Case("nsbox.run(['true'])", call=lambda: check_ok(nsbox.run(["true"])),
                          note="in-process, pre-warmed"))
        burst = 4
        cases.append(Case(report.RUN_BACK_TO_BACK, burst=burst,
                          call=lambda: check_ok(nsbox.run(["true"])),
                          note=f"in-process, pre-warmed, {burst} calls back to back"))
        cases.append(Case("nsbox.run(['true'], prewarm=False)",
                          call=lambda: check_ok(nsbox.run(["true"], prewarm=False)),
                          note="in-process, built from scratch"))
    else:
        notes.append("nsbox.run does not exist yet: library fresh case skipped")
    if have["Session"]:
        try:
            session = open_session(nsbox)
            cases.append(Case("Session.run(['true'])",
                              call=lambda: check_ok(session.run(["true"])),
                              note="in-process, warm session"))
            cleanups.append(lambda: close_session(session))
        except Exception as err:  # a broken Session is reported, not fatal
            notes.append(f"Session could not be opened ({err}): session case skipped")
    else:
        notes.append("nsbox.Session does not exist yet: session case and memory skipped")
    return cases, cleanups


def rotation(bwrap, workspace: str, runs: int, warmup: int, notes: list) -> list:
    """nsbox.run rotating over POLICIES policies, back to back, against subprocess.run(bwrap),
    interleaved. A section of its own: the pre-warmed pool keeps spares for a bounded
    number of plans, and the other library cases' plan would compete for them."""
    nsbox, have = library()
    if not (have["run"] and bwrap):
        return []
    policies = rotation_policies(nsbox, workspace)
    turn = iter(range(1 << 62))
    argv = bwrap_argv(bwrap, workspace)
    cases = [Case(report.BWRAP_IN_PROCESS, call=lambda: check_ok(subprocess.run(argv)),
                  note="in-process"),
             Case(report.RUN_ROTATION, burst=POLICIES, note=(
                 f"in-process, pre-warmed, back to back, next of {POLICIES} workspaces each call"),
                 call=lambda: check_ok(nsbox.run(["true"], policy=policies[next(turn) % POLICIES])))]
    cases = warm_up(cases, warmup, notes)
    round_robin(cases, runs)
    return cases


def rotation_policies(nsbox, workspace: str) -> list:
    policies = []
    for i in range(POLICIES):
        path = os.path.join(workspace, f"rotation-{i}")
        os.makedirs(path, exist_ok=True)
        policies.append(nsbox.Policy(workspace=path))
    return policies


def open_session(nsbox, policy=None):
    session = nsbox.Session(policy) if policy is not None else nsbox.Session()
    enter = getattr(session, "__enter__", None)
    return enter() or session if enter else session


def close_session(session) -> None:
    if hasattr(session, "__exit__"):
        session.__exit__(None, None, None)
    elif hasattr(session, "close"):
        session.close()


# --- measuring -------------------------------------------------------------------------

def warm_up(cases: list, rounds: int, notes: list) -> list:
    """Run each case `rounds` times; a case that fails is dropped with a note."""
    working = []
    for case in cases:
        try:
            for _ in range(max(rounds, 1)):
                case.run()
            working.append(case)
        except Exception as err:
            reason = why_it_fails(case.argv) if case.argv else str(err)
            notes.append(f"{case.name}: skipped, it fails here ({reason})")
    return working


def round_robin(cases: list, runs: int) -> None:
    """Interleave the cases; each round starts one case later so none is always first."""
    for i in range(runs):
        k = i % len(cases)
        for case in cases[k:] + cases[:k]:
            sample = case.run()
            if isinstance(sample, list):
                case.calls.extend(sample)
                sample = sum(sample) // len(sample)
            case.samples.append(sample)


def bind_scaling(script, bwrap, workspace, counts, runs, warmup) -> dict:
    """p50 latency against the number of extra writable bind mounts."""
    base = tempfile.mkdtemp(prefix="binds-", dir=workspace)
    dirs = []
    for i in range(max(counts)):
        dirs.append(os.path.join(base, f"d{i}"))
        os.mkdir(dirs[-1])
    cases = []
    for n in counts:
        cases.append(Case(f"nsbox:{n}", nsbox_argv(script, dirs[:n])))
        if bwrap:
            cases.append(Case(f"bwrap:{n}", bwrap_argv(bwrap, workspace, dirs[:n])))
    notes = []
    cases = warm_up(cases, warmup, notes)
    round_robin(cases, runs)
    shutil.rmtree(base, ignore_errors=True)
    rows = {}
    for case in cases:
        tool, n = case.name.split(":")
        rows.setdefault(int(n), {})[tool] = report.percentile(case.samples, 50)
    return {"p50_ns": rows, "notes": notes}


def run_concurrently(argv, total: int, width: int) -> float:
    """Start `total` sandboxes keeping `width` in flight; sandboxes per second."""
    started = running = 0
    start = time.perf_counter_ns()
    while started < total or running:
        while running < width and started < total:
            os.posix_spawn(argv[0], argv, _ENV, file_actions=_QUIET)
            started += 1
            running += 1
        _, status = os.wait()
        running -= 1
        if status != 0:
            raise RuntimeError(f"a sandbox failed: {argv}")
    return total / ((time.perf_counter_ns() - start) / 1e9)


def concurrency_scaling(tools: dict, widths, total: int, repeats: int) -> dict:
    """Throughput (sandboxes/s) against how many run at once; median of `repeats`."""
    results = {}
    for width in widths:
        samples = {name: [] for name in tools}
        for _ in range(repeats):
            for name, argv in tools.items():
                samples[name].append(run_concurrently(argv, max(total, width), width))
        results[width] = {name: report.percentile(s, 50) for name, s in samples.items()}
    return results


def thread_throughput(call, threads: int, per_thread: int) -> float:
    """`threads` threads each making `per_thread` calls; calls per second over them all."""
    barrier = threading.Barrier(threads + 1)
    errors = []

    def worker():
        barrier.wait()
        try:
            for _ in range(per_thread):
                call()
        except Exception as err:  # reported after the join
            errors.append(err)

    workers = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    for w in workers:
        w.start()
    barrier.wait()
    start = time.perf_counter_ns()
    for w in workers:
        w.join()
    elapsed = time.perf_counter_ns() - start
    if errors:
        raise RuntimeError(f"{len(errors)} of {threads} threads failed: {errors[0]}")
    return threads * per_thread / (elapsed / 1e9)


def sustained_throughput(calls: dict, widths, per_thread: int, repeats: int) -> dict:
    """{threads: {tool: [sandboxes/s per repeat]}}; the tools alternate which goes first."""
    results = {}
    for width in widths:
        samples = {name: [] for name in calls}
        for r in range(repeats):
            names = list(calls)[::(-1 if r % 2 else 1)]
            for name in names:
                samples[name].append(thread_throughput(calls[name], width, per_thread))
        results[width] = samples
    return results


def make_entries(directory: str, count: int, keep=()) -> None:
    """`directory` holding `count` entries: the names in `keep` plus empty files."""
    os.makedirs(directory, exist_ok=True)
    for name in keep:
        os.makedirs(os.path.join(directory, name), exist_ok=True)
    for i in range(count - len(keep)):
        os.close(os.open(os.path.join(directory, f"f{i:06d}"), os.O_CREAT | os.O_WRONLY, 0o644))


def host_dirs(script, counts) -> tuple:
    """(base, {N: a directory with N entries, among them .ssh and secret}, when).

    Made at the start of the run and used once as $HOME by `nsbox exec` (which makes its
    state and cache directories there), so that by the time they are measured they are
    homes nsbox has been used in, unchanged for a while: nsbox remembers the hidden-name
    matches of a directory only once it has settled (nsbox.plan.name_matches)."""
    base = tempfile.mkdtemp(prefix="nsbox-bench-host-")
    dirs = {}
    for n in counts:
        dirs[n] = os.path.join(base, f"dir-{n}")
        make_entries(dirs[n], n, keep=(".ssh", "secret"))
        subprocess.run(nsbox_argv(script), env=dict(_ENV, HOME=dirs[n]),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return base, dirs, time.time()


def host_size(script, dirs: dict, runs: int, warmup: int) -> dict:
    """CLI p50 against the number of entries beside a hidden path: $HOME (whose ~/.ssh
    etc. are hidden by default) with N entries, and `--hide DIR/secret` with N in DIR."""
    cases = []
    for n, home in dirs.items():
        cases.append(Case(f"HOME:{n}", nsbox_argv(script), env=dict(_ENV, HOME=home)))
        cases.append(Case(f"--hide:{n}", script + ["exec", "--hide", os.path.join(home, "secret"),
                                                   "--", "true"]))
    notes = []
    cases = warm_up(cases, warmup, notes)
    round_robin(cases, runs)
    return {"samples_ns": {c.name: c.samples for c in cases}, "notes": notes}


def overlay_changes(script, workspace: str, counts, repeats: int) -> dict:
    """Copy-on-write runs that create N files: the `nsbox exec` wall time (and that of
    the same run creating nothing), the manifest computed directly on the kept run
    (nsbox.plan.overlay.recompute: what `nsbox exec` does after the run) and the wall
    time of `nsbox apply RUN`, which writes them into the real tree."""
    from nsbox import state
    from nsbox.plan import overlay

    state_dir = state.state_dir()
    out = {"empty_exec_ns": [], "files": {}}
    for n in [0] + list(counts):
        row = {"exec_ns": [], "manifest_ns": [], "apply_ns": [], "entries": None}
        for k in range(repeats):
            ws = os.path.join(workspace, f"overlay-{n}-{k}")
            os.makedirs(os.path.join(ws, "old"))
            with open(os.path.join(ws, "old", "keep"), "w") as f:
                f.write("keep\n")
            status = os.path.join(workspace, f"overlay-{n}-{k}.json")
            create = (f"mkdir out && cd out && i=0; while [ $i -lt {n} ]; do "
                      f"echo $i > f$i; i=$((i+1)); done") if n else "true"
            try:
                start = time.perf_counter_ns()
                done = subprocess.run(overlay_argv(script, ["sh", "-c", create], ws, status),
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                elapsed = time.perf_counter_ns() - start
                if done.returncode != 0:
                    raise RuntimeError(f"exit {done.returncode}: "
                                       f"{done.stderr.decode(errors='replace')[-300:]}")
                if not n:
                    out["empty_exec_ns"].append(elapsed)
                    continue
                row["exec_ns"].append(elapsed)
                with open(status) as f:
                    run_id = json.load(f)["run_id"]
                run, _, entries = overlay.load(state_dir, run_id)
                start = time.perf_counter_ns()
                computed = overlay.recompute(run)
                row["manifest_ns"].append(time.perf_counter_ns() - start)
                row["entries"] = len(computed)
                start = time.perf_counter_ns()
                done = subprocess.run(list(script) + ["apply", run_id],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                row["apply_ns"].append(time.perf_counter_ns() - start)
                if done.returncode != 0 or len(os.listdir(os.path.join(ws, "out"))) != n:
                    raise RuntimeError(f"nsbox apply: exit {done.returncode}: "
                                       f"{done.stderr.decode(errors='replace')[-300:]}")
            finally:
                shutil.rmtree(ws, ignore_errors=True)
                if os.path.exists(status):
                    os.unlink(status)
        if n:
            out["files"][str(n)] = row
    return out


def big_env(count: int, value_len: int, prefix: str = "NSBOXBENCH_") -> dict:
    return {f"{prefix}{i:05d}": "v" * value_len for i in range(count)}


def env_size(script, bwrap, workspace, counts, runs: int, warmup: int) -> dict:
    """Latency against extra environment variables (16 bytes each), nsbox against
    bwrap given the same environment: the CLI and bwrap spawned, Session.run and
    subprocess.run(bwrap) in this process."""
    nsbox, have = library()
    cases, session = [], None
    for n in counts:
        env = dict(_ENV, **big_env(n, 16))
        cases.append(Case(f"nsbox exec:{n}", nsbox_argv(script), env=env))
        if bwrap:
            argv = bwrap_argv(bwrap, workspace)
            cases.append(Case(f"bwrap:{n}", argv, env=env))
            cases.append(Case(f"subprocess.run(bwrap):{n}", call=(
                lambda argv=argv, env=env: check_ok(subprocess.run(argv, env=env)))))
    notes = []
    if have["Session"]:
        try:
            session = open_session(nsbox)
            for n in counts:
                env = dict(_ENV, **big_env(n, 16))
                cases.append(Case(f"Session.run:{n}", call=(
                    lambda env=env: check_ok(session.run(["true"], env=env)))))
        except Exception as err:
            notes.append(f"environment size: Session could not be opened ({err})")
    try:
        cases = warm_up(cases, warmup, notes)
        round_robin(cases, runs)
    finally:
        if session is not None:
            close_session(session)
    return {"samples_ns": {c.name: c.samples for c in cases}, "notes": notes}


def big_request(count: int = 5000, value_len: int = 100) -> dict:
    """Launches whose request is larger than 256 KiB (count variables of value_len bytes)."""
    nsbox, have = library()
    env = dict(_ENV, **big_env(count, value_len, prefix="NSBOXBIG_"))
    size = sum(len(k) + len(v) + 2 for k, v in env.items())
    out = {"variables": count, "env_bytes": size}
    launches = {"nsbox.run": lambda: nsbox.run(["sh", "-c", "echo $NSBOXBIG_04999"], env=env)}
    if have["Session"]:
        def in_session():
            with nsbox.Session() as session:
                return session.run(["sh", "-c", "echo $NSBOXBIG_04999"], env=env)
        launches["Session.run"] = in_session
    for name, launch in launches.items():
        try:
            result = launch()
            ok = result.returncode == 0 and result.stdout.strip() == b"v" * value_len
            out[name] = {"ok": ok, "detail": "" if ok else
                         f"exit {result.returncode}: {(result.stderr or b'')[-200:]!r}"}
        except Exception as err:
            out[name] = {"ok": False, "detail": f"{type(err).__name__}: {err}"[:300]}
    return out


def denial_cost(script, workspace: str, runs: int, build_runs: int, warmup: int,
                notes: list) -> dict:
    """The cost of reporting denials: `nsbox exec -- true` and two builds in the workspace
    (`make -j2` of a C project, `pip install` of a local wheel into a venv) and a loop of
    100,000 denied writes, each with reporting on against `--no-denial-events`,
    interleaved in pairs. A build is reset (untimed) before each run. One more run of
    each with --json-status counts its events: allowed work should make none, the loop
    one event with its count."""
    out = {"startup": [], "builds": [], "events": {}}
    off = ["--no-denial-events"]
    startup = [Case(report.CLI, nsbox_argv(script), note="reporting on"),
               Case(report.CLI_NO_DENIALS, script + ["exec", *off, "--", "true"])]
    startup = warm_up(startup, warmup, notes)
    round_robin(startup, runs)
    out["startup"] = [{"name": c.name, "note": c.note, "samples_ns": c.samples} for c in startup]

    base = os.path.join(workspace, "denial-builds")
    os.makedirs(base)
    builds = {}
    if shutil.which("make") and shutil.which("cc"):
        project = workloads.c_project(base)
        files = len([n for n in os.listdir(project) if n.endswith(".c")])
        builds[report.DENIAL_MAKE] = (["make", "-j2", "-s", "-C", project],
                                      lambda: workloads.reset_c_project(project),
                                      f"{files} C files, in the workspace")
    else:
        notes.append("denial cost: make or cc not found, the make -j2 case is skipped")
    try:
        venv = workloads.venv(base, SYSTEM_PYTHON if os.access(SYSTEM_PYTHON, os.X_OK)
                              else sys.executable)
        wheel = workloads.wheel(base)
        builds[report.DENIAL_PIP] = (workloads.pip_install_argv(venv, wheel),
                                     lambda: workloads.reset_venv(venv),
                                     "a venv in the workspace, offline, no cache")
    except (OSError, subprocess.SubprocessError) as err:
        notes.append(f"denial cost: no venv for the pip install case ({err}): skipped")
    builds[report.DENIAL_LOOP] = (
        ["sh", "-c", "i=0; while [ $i -lt 100000 ]; do true 2>/dev/null >/etc/nsbox-bench-x; "
                     "i=$((i+1)); done"],
        lambda: None, "`true 2>/dev/null >/etc/x` in a `sh` loop, one event expected")
    cases = []
    for name, (command, reset, note) in builds.items():
        exec_on = script + ["exec", "--workspace", base, "--quiet-denials", "--"]
        exec_off = script + ["exec", "--workspace", base, *off, "--"]
        cases += [Case(name, exec_on + command, note=f"{note}, reporting on", reset=reset),
                  Case(name + report.NO_DENIALS, exec_off + command, note=note, reset=reset)]
        status = os.path.join(workspace, "denial-status.json")
        reset()
        done = subprocess.run(script + ["exec", "--workspace", base, "--json-status", status,
                                        "--quiet-denials", "--"] + command,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_ENV)
        try:
            with open(status) as f:
                denials = json.load(f).get("denials") or []
            out["events"][name] = sum(d.get("count", 1) for d in denials)
        except (OSError, ValueError) as err:
            notes.append(f"denial cost: {name}: no status (exit {done.returncode}, {err}): "
                         f"{done.stderr.decode(errors='replace')[-200:]}")
    cases = warm_up(cases, 1, notes)
    round_robin(cases, build_runs)
    for case in cases:  # the workspace left as it was found
        case.reset()
    out["builds"] = [{"name": c.name, "note": c.note, "samples_ns": c.samples} for c in cases]
    shutil.rmtree(base, ignore_errors=True)
    return out


def memory(args) -> tuple:
    """Idle Session memory: run.sh's root-side measurement when there is one, else the
    holder measured by this user (RSS when its helpers' smaps_rollup is unreadable)."""
    sessions = 4 if args.quick else 8
    if args.memory_json:
        try:
            with open(args.memory_json) as f:
                return json.load(f), ""
        except (OSError, ValueError) as err:
            why = f"run.sh's root-side memory measurement is missing ({err}); measured here"
    else:
        why = ""
    holder = [sys.executable, os.path.join(HERE, "session_memory.py"), "hold"]
    try:
        return session_memory.measure(holder, sessions), why
    except Exception as err:
        return None, f"memory per idle session not measured: {err}"


def measure_image_memory(results: dict, args, notes: list) -> None:
    """Idle sandboxes held at once on one image against as many on the host root:
    run.sh's root-side measurement when there is one, else the holder measured here."""
    count = 4 if args.quick else image_memory.SANDBOXES
    say(f"memory of {count} idle sandboxes on one image")
    why = ""
    if args.image_memory_json:
        try:
            with open(args.image_memory_json) as f:
                results["image_memory"] = json.load(f)
        except (OSError, ValueError) as err:
            why = f"run.sh's root-side image memory measurement is missing ({err}); measured here"
    if "image_memory" not in results:
        holder = [sys.executable, os.path.join(HERE, "image_memory.py"), "hold"]
        try:
            results["image_memory"] = image_memory.measure(holder, count)
        except Exception as err:
            why = f"memory of sandboxes on one image not measured: {err}"
    if why:
        notes.append(why)
    notes += [f"image memory: {e}" for e in (results.get("image_memory") or {}).get("errors", [])]


def install_facts(args) -> dict:
    """Where the CLI and the library under test come from."""
    import nsbox

    script = nsbox_script()
    head = ""
    try:
        with open(script[0]) as f:
            head = "".join(f.readline() for _ in range(12))
    except (OSError, UnicodeDecodeError):
        pass
    facts = {"nsbox_file": os.path.realpath(nsbox.__file__), "script": script,
             "script_head": head, "python": sys.executable, "pip": args.pip_version,
             "venv": args.installed, "cwd": os.getcwd(), "sys_path0": sys.path[0],
             "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    if args.installed:
        venv = os.path.realpath(args.installed)
        site = os.path.realpath(os.path.join(
            venv, "lib", f"python{sys.version_info[0]}.{sys.version_info[1]}", "site-packages"))
        facts["site_packages"] = site
        facts["regular"] = (facts["nsbox_file"].startswith(site + os.sep)
                            and script == [os.path.join(venv, "bin", "nsbox")])
    return facts


# --- where the time goes ---------------------------------------------------------------

def traced_runs(argv, runs: int, cwd: str) -> list:
    """Run `argv` with NSBOX_TRACE on; per run, the marks framed by spawn and reap."""
    fd, path = tempfile.mkstemp(prefix="nsbox-trace-")
    os.unlink(path)
    os.set_inheritable(fd, True)
    env = dict(_ENV, NSBOX_TRACE="1", NSBOX_TRACE_FD=str(fd))
    runs_out = []
    try:
        for _ in range(runs):
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            start = time.monotonic_ns()
            pid = os.posix_spawn(argv[0], argv, env, file_actions=_QUIET)
            _, status = os.waitpid(pid, 0)
            end = time.monotonic_ns()
            if status != 0:
                raise RuntimeError(why_it_fails(argv))
            os.lseek(fd, 0, os.SEEK_SET)
            text = os.read(fd, 1 << 20).decode(errors="replace")
            runs_out.append([(start, 0, report.SPAWNED)] + trace.parse(text)
                            + [(end, 0, report.REAPED)])
    finally:
        os.close(fd)
    return runs_out


def library_trace(mode: str, runs: int, workspace: str):
    """Trace nsbox.run / Session.run in a helper process that has imported nsbox."""
    helper = [sys.executable, os.path.join(HERE, "library_trace.py"), mode, str(runs)]
    env = dict(_ENV, NSBOX_TRACE="1", NSBOX_TRACE_FD="1")
    r = subprocess.run(helper, capture_output=True, text=True, cwd=workspace, env=env,
                       timeout=300)
    if r.returncode != 0:
        lines = (r.stderr or r.stdout).strip().splitlines()
        return None, lines[-1] if lines else f"helper exited {r.returncode}"
    return report.split_runs(trace.parse(r.stdout)), ""


def cli_import_time(script, workspace: str, runs: int = 5) -> dict:
    """`python -X importtime` of `nsbox exec -- true`: the median run's imports."""
    python = script[0] if script[0].endswith(("python", "python3")) else _shebang_python(script[0])
    argv = [python, "-X", "importtime", *([] if script[0] == python else script[:1]),
            *script[1:], "exec", "--", "true"]
    best = []
    for _ in range(runs):
        r = subprocess.run(argv, capture_output=True, text=True, cwd=workspace, env=_ENV)
        best.append(report.parse_importtime(r.stderr))
    best.sort(key=lambda x: x["total_us"])
    return best[len(best) // 2]


def _shebang_python(script: str) -> str:
    with open(script, "rb") as f:
        first = f.readline().decode(errors="replace").strip()
    return first[2:].split()[0] if first.startswith("#!") else sys.executable


# --- main ------------------------------------------------------------------------------

def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a ~3 min run with fewer iterations")
    p.add_argument("--runs", type=int, help="timed runs per case (default 200, quick 30)")
    p.add_argument("--warmup", type=int, help="untimed runs per case first (default 10, quick 3)")
    p.add_argument("--binds", default="1,8,32,64", help="extra bind mount counts")
    p.add_argument("--concurrency", default="1,2,4,8,16",
                   help="sandboxes at once (CLI) and threads (library)")
    p.add_argument("--entries", default="10,10000,100000",
                   help="entries beside a hidden path ($HOME, --hide)")
    p.add_argument("--env-vars", default="0,1000,5000", help="extra environment variables")
    p.add_argument("--overlay-files", default="10,1000,10000",
                   help="files an overlay run creates (manifest and apply time)")
    p.add_argument("--results", default=os.path.join(HERE, "results"),
                   help="where the JSON, PNG and latest.md go")
    p.add_argument("--installed", help="the venv nsbox must come from (run.sh's regular install)")
    p.add_argument("--pip-version", default="", help="the pip that made that install")
    p.add_argument("--plot-python", help="a python with matplotlib, when this one has none")
    p.add_argument("--memory-json", help="run.sh's root-side session memory measurement")
    p.add_argument("--image-memory-json",
                   help="run.sh's root-side memory measurement of sandboxes on one image")
    p.add_argument("--only", choices=["denials", "image-memory"],
                   help="measure one section only (denials: the cost of reporting denials; "
                        "image-memory: idle sandboxes on one image)")
    args = p.parse_args(argv)
    args.runs = args.runs or (30 if args.quick else 200)
    args.warmup = args.warmup if args.warmup is not None else (3 if args.quick else 10)
    args.scale_runs = max(2, args.runs // 7)
    args.size_runs = max(2, args.runs // 3)
    args.rotation_runs = max(2, args.runs // 2)
    args.trace_runs = max(2, min(20, args.runs // 6))
    args.binds = [int(x) for x in args.binds.split(",") if x]
    args.concurrency = [int(x) for x in args.concurrency.split(",") if x]
    args.entries = [int(x) for x in args.entries.split(",") if x]
    args.env_vars = [int(x) for x in args.env_vars.split(",") if x]
    args.overlay_files = [int(x) for x in args.overlay_files.split(",") if x]
    args.overlay_repeats = 1 if args.quick or args.runs < 50 else 3
    args.concurrency_total = 16 if args.quick or args.runs < 50 else 32
    args.concurrency_repeats = 1 if args.quick or args.runs < 50 else 3
    args.per_thread = 8 if args.quick or args.runs < 50 else 25
    args.thread_repeats = 2 if args.quick or args.runs < 50 else 3
    args.build_runs = 2 if args.quick or args.runs < 50 else 5
    return args


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    started = time.time()
    notes = []
    workspace = os.path.realpath(tempfile.mkdtemp(prefix="nsbox-bench-"))
    os.chdir(workspace)  # nsbox's default workspace is the current directory
    script = nsbox_script()
    bwrap = shutil.which("bwrap")
    results = {"machine": report.machine(), "runs": args.runs, "warmup": args.warmup,
               "baseline": BWRAP, "install": install_facts(args)}
    install = results["install"]
    say(f"nsbox from {install['nsbox_file']}, CLI {' '.join(script)}")
    if args.installed and not install["regular"]:
        say(f"nsbox is not the regular install in {args.installed}: {install}")
        return 2
    if args.only == "denials":
        results["cases"], results["only"] = [], args.only
        measure_denials(results, script, workspace, args, notes)
        return finish(results, notes, started, workspace, args)
    if args.only == "image-memory":
        results["cases"], results["only"] = [], args.only
        measure_image_memory(results, args, notes)
        return finish(results, notes, started, workspace, args)
    say(f"host size: making directories of {args.entries} entries")
    host_base, host_dirs_made, host_made_at = host_dirs(script, args.entries)
    atexit.register(shutil.rmtree, host_base, True)  # also if a section below fails
    cases, cleanups = build_cases(workspace, notes)
    try:
        say(f"latency: {len(cases)} cases x {args.runs} runs, round-robin")
        cases = warm_up(cases, args.warmup, notes)
        round_robin(cases, args.runs)
    finally:
        for cleanup in cleanups:
            cleanup()
    results["cases"] = [{"name": c.name, "note": c.note, "samples_ns": c.samples,
                         **({"calls_ns": c.calls} if c.burst else {})} for c in cases]

    say(f"library: nsbox.run rotating {POLICIES} policies, {args.rotation_runs} runs")
    results["rotation"] = [{"name": c.name, "note": c.note, "samples_ns": c.samples,
                            **({"calls_ns": c.calls} if c.burst else {})}
                           for c in rotation(bwrap, workspace, args.rotation_runs,
                                             args.warmup, notes)]

    say("where the time goes: NSBOX_TRACE=1")
    results["breakdown"] = {}
    try:
        results["breakdown"]["nsbox exec -- true"] = report.breakdown(
            traced_runs(nsbox_argv(script), args.trace_runs, workspace))
    except RuntimeError as err:
        notes.append(f"CLI trace failed: {err}")
    for mode, name in (("run", "nsbox.run(['true'])"),
                       ("fresh", "nsbox.run(['true'], prewarm=False)"),
                       ("session", "Session.run(['true'])")):
        runs, why = library_trace(mode, args.trace_runs, workspace)
        if runs:
            results["breakdown"][name] = report.breakdown(runs)
        else:
            notes.append(f"{name} breakdown skipped: {why}")
    results["import_time"] = cli_import_time(script, workspace)

    say(f"scaling: extra bind mounts {args.binds}")
    scaling = bind_scaling(script, bwrap, workspace, args.binds, args.scale_runs,
                           min(args.warmup, 2))
    notes += scaling.pop("notes")
    results["binds"] = scaling["p50_ns"]

    say(f"scaling: sandboxes at once {args.concurrency}")
    tools = {"nsbox exec": nsbox_argv(script)}
    if bwrap:
        tools["bwrap"] = bwrap_argv(bwrap, workspace)
    try:
        results["concurrency"] = concurrency_scaling(
            tools, args.concurrency, args.concurrency_total, args.concurrency_repeats)
    except RuntimeError as err:
        notes.append(f"concurrency: {err}")
        results["concurrency"] = {}

    nsbox, have = library()
    if have["run"] and bwrap:
        say(f"sustained throughput: threads {args.concurrency}, {args.per_thread} calls each")
        argv = bwrap_argv(bwrap, workspace)
        calls = {"nsbox.run": lambda: check_ok(nsbox.run(["true"])),
                 "subprocess.run(bwrap)": lambda: check_ok(subprocess.run(argv))}
        try:
            results["threads"] = sustained_throughput(calls, args.concurrency, args.per_thread,
                                                      args.thread_repeats)
            results["threads_per_thread_calls"] = args.per_thread
        except RuntimeError as err:
            notes.append(f"sustained throughput: {err}")

    say(f"host size: entries beside a hidden path {args.entries}")
    try:
        results["hidden_entries_age_s"] = round(time.time() - host_made_at, 1)
        size = host_size(script, host_dirs_made, args.size_runs, min(args.warmup, 2))
        notes += size.pop("notes")
        results["hidden_entries"] = size["samples_ns"]
    except OSError as err:
        notes.append(f"host size: {err}")
    finally:
        shutil.rmtree(host_base, ignore_errors=True)
    say(f"copy-on-write workspace: runs creating {args.overlay_files} files, "
        f"{args.overlay_repeats} each")
    try:
        results["overlay"] = overlay_changes(script, workspace, args.overlay_files,
                                             args.overlay_repeats)
    except (RuntimeError, OSError, LookupError, ValueError, KeyError) as err:
        notes.append(f"copy-on-write workspace: {err}")
    say(f"environment size: extra variables {args.env_vars}")
    size = env_size(script, bwrap, workspace, args.env_vars, args.size_runs,
                    min(args.warmup, 2))
    notes += size.pop("notes")
    results["env_size"] = size["samples_ns"]
    if have["run"]:
        say("a launch request larger than 256 KiB")
        results["big_request"] = big_request()

    measure_denials(results, script, workspace, args, notes)

    say("memory per idle session")
    memory_result, why = memory(args)
    results["session_memory"] = memory_result
    if why:
        notes.append(why)
    measure_image_memory(results, args, notes)
    return finish(results, notes, started, workspace, args)


def measure_denials(results: dict, script, workspace: str, args, notes: list) -> None:
    say(f"cost of reporting denials: `true` x {args.runs}, builds x {args.build_runs}")
    try:
        cost = denial_cost(script, workspace, args.runs, args.build_runs, args.warmup, notes)
    except (RuntimeError, OSError, subprocess.SubprocessError) as err:
        notes.append(f"denial cost: {err}")
        return
    results["denial_startup"] = cost["startup"]
    results["denial_builds"] = cost["builds"]
    results["denial_events"] = cost["events"]


def finish(results: dict, notes: list, started: float, workspace: str, args) -> int:
    """Print the report and write it out."""
    results["notes"] = notes
    results["elapsed_s"] = round(time.time() - started, 1)
    os.chdir("/")
    shutil.rmtree(workspace, ignore_errors=True)
    text = report.markdown(results)
    print(text)
    # One section (--only) goes beside the full run's results, not over them.
    directory = os.path.join(args.results, args.only) if args.only else args.results
    written = report.write(results, text, directory, plot_python=args.plot_python)
    say("wrote " + ", ".join(written))
    return 0


def say(message: str) -> None:
    sys.stderr.write(f"bench: {message}\n")
    sys.stderr.flush()


if __name__ == "__main__":
    sys.exit(main())
