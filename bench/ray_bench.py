"""Sandboxes at scale on a local two-node Ray cluster (127.0.0.1 only), nsbox as Ray's backend.

    make bench-ray                         # or: .venv/bin/python bench/ray_bench.py [--quick]

Two ways to use the backend, measured from the driver through Ray:
- runtime: one actor per node holds a SandboxRuntime (nsbox.integrations.ray) and
  many sandboxes; C clients per node, both nodes at once, each doing create ->
  first command, then commands on its sandbox.
- actor per sandbox: nsbox.integrations.ray.create(), the shape of
  ray.experimental.sandbox.create (a Ray actor, so a worker process, each).
Also: memory per idle sandbox (PSS), where the time goes (CPU per process), Ray's own
gVisor backend if it can run here, and gVisor's runsc alone (as root). --plan-reuse off
and --warm-settle 0 turn the backend's plan reuse and settled refills off, to compare.
The cluster is stopped at the end, also on failure.
Results: a table on stdout and JSON in bench/results/ray_bench.json.
"""

import argparse
import asyncio
import io
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ray_cluster import LOOPBACK_ENV, LocalCluster  # noqa: E402

os.environ.update(LOOPBACK_ENV)
import ray  # noqa: E402

NODES = ("bench_node_0", "bench_node_1")
CONCURRENCY = (1, 4, 16, 64)  # sandboxes at once per node, both nodes together
GOAL_PER_NODE = 8  # 16 at once in the cluster
RPC_TIMEOUT = 120
# cpu_breakdown's parts that measure the benchmark's own work (the rest is other load)
OURS = ("Ray worker holding the sandboxes", "nsbox fork server and sandboxes", "benchmark driver",
        "Ray daemons and other workers", "kernel threads")


def pss_kib(pids) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total


def tree(pid: int) -> list:
    from ray_cluster import descendants

    return [pid, *descendants(pid)]


def busy_ms() -> float:
    """CPU time the whole machine spent busy so far (all cores), in ms."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v) - v[3] - v[4]) * 1000 / os.sysconf("SC_CLK_TCK")


def cpu_snapshot() -> dict:
    """pid -> (ppid, CPU ms of it and its reaped children)."""
    tick = 1000 / os.sysconf("SC_CLK_TCK")
    snap = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            snap[int(entry)] = (int(fields[1]), sum(int(x) for x in fields[11:15]) * tick)
    return snap


def cpu_breakdown(before: dict, after: dict, host_pids, ray_pids) -> dict:
    """CPU ms spent between two snapshots, by who spent it."""
    children = {}
    for pid, (ppid, _) in after.items():
        children.setdefault(ppid, []).append(pid)
    nsbox_pids, pending = set(), list(host_pids)
    while pending:
        for child in children.get(pending.pop(), ()):
            nsbox_pids.add(child)
            pending.append(child)
    out = {}
    for pid, (ppid, ms) in after.items():
        if pid in host_pids:
            who = "Ray worker holding the sandboxes"
        elif pid in nsbox_pids:
            who = "nsbox fork server and sandboxes"
        elif pid == os.getpid():
            who = "benchmark driver"
        elif pid in ray_pids:
            who = "Ray daemons and other workers"
        elif ppid == 2 or pid == 2:
            who = "kernel threads"
        else:
            who = "other processes on the machine"
        out[who] = out.get(who, 0.0) + ms - before.get(pid, (0, 0.0))[1]
    return out


@ray.remote(num_cpus=0, max_concurrency=256)
class NodeHost:
    """Many sandboxes on its node through nsbox's SandboxRuntime."""

    def __init__(self, warm: int = 0, plan_reuse: bool = True, warm_settle=None):
        from nsbox.integrations.ray import SandboxRuntime
        from nsbox.integrations.ray.backend import SessionPlans, WarmPool

        if not plan_reuse:  # to compare: every sandbox's plan compiled afresh
            SessionPlans.MAX_AGE = 0
        if warm_settle is not None:  # to compare: refills at once (0) or later
            WarmPool.SETTLE_S = warm_settle
        self.cgroup = _own_cgroup("node")  # before the fork server starts: it inherits it
        self.rt = SandboxRuntime(warm=warm)
        sid = self.rt.create("host")
        self.rt.exec(sid, ["true"])  # the fork server is up, `auto` isolation resolved
        self.meta = self.rt.get_metadata(sid)
        self.rt.delete(sid)

    def info(self) -> dict:
        return {"pid": os.getpid(), "isolation": self.meta["isolation"],
                "node_id": ray.get_runtime_context().get_node_id()}

    def ping(self):
        return None

    def create(self):
        t = time.perf_counter()
        sid = self.rt.create("host")
        return sid, time.perf_counter() - t

    def exec(self, sid, argv):
        return self.rt.exec(sid, argv).exit_code

    def delete_all(self) -> float:
        t = time.perf_counter()
        self.rt.delete_all()
        return time.perf_counter() - t

    def close(self):
        self.rt.close()

    def cpu_ms(self) -> float:
        t = os.times()
        return (t.user + t.system) * 1000

    def tree_cpu_ms(self):
        """CPU of this worker and every process it started, gone ones included (its
        cgroup's cpu.stat), or None without a cgroup of its own (not root)."""
        return _cgroup_usage_ms(self.cgroup) if self.cgroup else None

    def pss_kib(self) -> int:
        return pss_kib(tree(os.getpid()))


@ray.remote(num_cpus=0, max_concurrency=256)
class FloorHost:
    """The same two calls per sandbox with no sandbox behind them: what Ray alone costs
    (`empty`), and Ray plus one unsandboxed process per command (`process`), the floor
    under any backend that runs the command."""

    def __init__(self, mode: str):
        self.mode, self.next = mode, 0

    def create(self):
        self.next += 1
        return self.next, 0.0

    def exec(self, sid, argv):
        return subprocess.run(argv).returncode if self.mode == "process" else 0

    def delete_all(self) -> float:
        return 0.0


async def floors() -> dict:
    """16 at once in the cluster, create -> first command, with no sandbox behind."""
    found = {}
    for mode in ("empty", "process"):
        hosts = [FloorHost.options(resources={n: 1}).remote(mode) for n in NODES]
        await asyncio.gather(*(h.delete_all.remote() for h in hosts))
        found[mode] = await bursts(hosts, GOAL_PER_NODE, 6, 0.3)
        for h in hosts:
            ray.kill(h)
    return found


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))] if values else None


async def runtime_level(hosts, c, per_client, seconds, host_pids, ray_pids):
    """C clients per node: create -> first command (kept), then commands for `seconds`."""
    latencies, in_actor = [], []
    sids = {h: [] for h in hosts}
    snap0 = cpu_snapshot()

    async def client(host):
        for _ in range(per_client):
            t = time.perf_counter()
            sid, took = await host.create.remote()
            assert await host.exec.remote(sid, ["true"]) == 0
            latencies.append(time.perf_counter() - t)
            in_actor.append(took)
            sids[host].append(sid)

    cpu0, host_cpu0 = busy_ms(), [await h.cpu_ms.remote() for h in hosts]
    tree0 = [await h.tree_cpu_ms.remote() for h in hosts]
    t0 = time.perf_counter()
    await asyncio.gather(*(client(h) for h in hosts for _ in range(c)))
    create_wall = time.perf_counter() - t0
    cpu1, host_cpu1 = busy_ms(), [await h.cpu_ms.remote() for h in hosts]
    tree1 = [await h.tree_cpu_ms.remote() for h in hosts]
    created = sum(len(v) for v in sids.values())
    by_whom = cpu_breakdown(snap0, cpu_snapshot(), host_pids, ray_pids())
    if None not in tree0:  # the workers' cgroups count the sandboxes' gone processes too
        by_whom["nsbox fork server and sandboxes"] = sum(
            (b - a) for a, b in zip(tree0, tree1)) - sum(
            (b - a) for a, b in zip(host_cpu0, host_cpu1))
    by_whom["processes gone meanwhile, interrupts"] = max(0.0, cpu1 - cpu0 - sum(by_whom.values()))

    count = 0
    stop = time.perf_counter() + seconds

    async def runner(host, sid):
        nonlocal count
        while time.perf_counter() < stop:
            assert await host.exec.remote(sid, ["true"]) == 0
            count += 1

    t1 = time.perf_counter()
    await asyncio.gather(*(runner(h, sids[h][i % len(sids[h])]) for h in hosts for i in range(c)))
    cmd_wall = time.perf_counter() - t1
    idle_pss = [await h.pss_kib.remote() for h in hosts]
    delete_s = sum([await h.delete_all.remote() for h in hosts])
    return {
        "concurrency_per_node": c, "created": created,
        "creates_per_s_per_node": created / create_wall / len(hosts),
        "commands_per_s_per_node": count / cmd_wall / len(hosts),
        "latency_p50_ms": pct(latencies, 50) * 1000, "latency_p99_ms": pct(latencies, 99) * 1000,
        "in_actor_create_p50_ms": pct(in_actor, 50) * 1000,
        "in_actor_create_p99_ms": pct(in_actor, 99) * 1000,
        "cpu_ms_per_create": (cpu1 - cpu0) / created,
        # what the sandboxes' own work costs, without other processes on the machine
        "cpu_ms_per_create_ours": sum(v for k, v in by_whom.items() if k in OURS) / created,
        "cpu_ms_per_create_by_whom": {k: v / created for k, v in sorted(by_whom.items())},
        "host_worker_cpu_ms_per_create": sum(b - a for a, b in zip(host_cpu0, host_cpu1)) / created,
        "live_sandboxes_per_node": created // len(hosts), "pss_kib_per_node_live": idle_pss,
        "delete_ms_each": delete_s / created * 1000,
    }


async def bursts(hosts, c, rounds, pause):
    """Rounds of C simultaneous create -> first command per node, `pause` s apart."""
    latencies = []

    async def one(host):
        t = time.perf_counter()
        sid, _ = await host.create.remote()
        assert await host.exec.remote(sid, ["true"]) == 0
        latencies.append(time.perf_counter() - t)

    for _ in range(rounds):
        await asyncio.sleep(pause)
        await asyncio.gather(*(one(h) for h in hosts for _ in range(c)))
        await asyncio.gather(*(h.delete_all.remote() for h in hosts))
    return {"p50_ms": pct(latencies, 50) * 1000, "p99_ms": pct(latencies, 99) * 1000,
            "samples": len(latencies)}


async def actor_level(c):
    """C sandbox actors at once (create() API), spread over the nodes."""
    from nsbox.integrations.ray import create

    latencies = []
    actors = []

    async def one(i):
        t = time.perf_counter()
        sb = create("host", resources={NODES[i % len(NODES)]: 1})
        actors.append(sb)
        r = await sb.exec.remote(["true"])
        assert r.exit_code == 0
        latencies.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    try:
        await asyncio.gather(*(one(i) for i in range(c)))
        wall = time.perf_counter() - t0
        metas = await asyncio.gather(*(sb.get_metadata.remote() for sb in actors))
        pss = pss_kib([p for m in metas for p in tree(m["pid"])]) / c
    finally:
        for sb in actors:
            ray.kill(sb)
    return {"concurrency": c, "creates_per_s": c / wall,
            "latency_p50_ms": pct(latencies, 50) * 1000,
            "latency_p99_ms": pct(latencies, 99) * 1000, "pss_kib_per_sandbox": pss,
            "limits_dropped": sorted({k for m in metas for k in m["limits_dropped"]})}


def gvisor_attempt(workdir: str) -> dict:
    """Ray's own backend (gVisor) on a minimal local image; the error if it cannot run."""
    if not shutil.which("runsc"):
        return {"ran": False, "why": "runsc is not installed (Debian package runsc)"}
    image = os.path.join(workdir, "bench-image.tar")
    _image_tar(image)

    @ray.remote(num_cpus=0, resources={NODES[0]: 1})
    def attempt(image):
        from ray.experimental.sandbox import SandboxRuntime

        ray_dir = "/tmp/ray"  # Ray's gVisor backend keeps images and bundles there
        existed = os.path.exists(ray_dir)
        rt = SandboxRuntime()
        t = time.perf_counter()
        try:
            sid = rt.create(image, timeout_seconds=60)
            created = time.perf_counter() - t
            rt.exec(sid, ["/bin/true"])
            first = time.perf_counter() - t
            rt.delete(sid)
            return {"ran": True, "create_s": created, "first_command_s": first}
        except Exception as err:
            return {"ran": False, "why": f"{type(err).__name__}: {err}"}
        finally:
            if not existed:
                shutil.rmtree(ray_dir, ignore_errors=True)

    version = subprocess.run(["runsc", "--version"], capture_output=True, text=True).stdout
    return {**ray.get(attempt.remote(image), timeout=RPC_TIMEOUT),
            "runsc": version.splitlines()[0] if version else "?"}


def _image_files() -> set:
    """/bin/sh, /bin/true, /bin/cat and their libraries."""
    files = set()
    for binary in ("/bin/sh", "/bin/true", "/bin/cat"):
        real = os.path.realpath(binary)
        files.add(real)
        out = subprocess.run(["ldd", real], capture_output=True, text=True).stdout
        files.update(p.split()[0] for p in (line.split("=>")[-1] for line in out.splitlines())
                     if p.split() and p.split()[0].startswith("/"))
    return files


def runsc_alone(workdir: str, runs: int, burst: int) -> dict:
    """gVisor's runsc by itself (as root, not through Ray): a container running /bin/true
    from `runsc run` to its exit, one after another and `burst` at once, with the CPU of
    runsc's whole process tree. Ray's gVisor backend adds its image handling and its
    actor calls on top, so this is a lower bound for it."""
    if os.getuid() != 0 or not shutil.which("runsc"):
        return {"ran": False, "why": "needs root and runsc"}
    bundle = os.path.join(workdir, "runsc-bundle")
    rootfs = os.path.join(bundle, "rootfs")
    for f in _image_files():
        os.makedirs(os.path.dirname(rootfs + f), exist_ok=True)
        shutil.copy2(f, rootfs + f)
    for link in ("/bin/sh", "/bin/true", "/bin/cat"):
        if not os.path.lexists(rootfs + link):
            os.makedirs(os.path.dirname(rootfs + link), exist_ok=True)
            shutil.copy2(os.path.realpath(link), rootfs + link)
    subprocess.run(["runsc", "spec", "--", "/bin/true"], cwd=bundle, check=True)
    r = subprocess.run([sys.executable, os.path.abspath(__file__), "--runsc", str(runs),
                        str(burst), bundle], capture_output=True, text=True, timeout=600)
    if r.returncode:
        return {"ran": False, "why": r.stderr.strip()[-500:]}
    version = subprocess.run(["runsc", "--version"], capture_output=True, text=True).stdout
    return {**json.loads(r.stdout), "ran": True, "runsc": version.splitlines()[0]}


def runsc_main(runs: int, burst: int, bundle: str) -> None:
    """In a helper process that reaps every descendant: see runsc_alone. Prints JSON."""
    import ctypes
    import resource

    ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    group = _own_cgroup("runsc")  # counted as nsbox is (nsbox_own_cpu)
    state = os.path.join(bundle, "state")
    count = 0

    def argv():
        nonlocal count
        count += 1
        return ["runsc", "--network=none", "--root", state, "run", "--bundle", bundle,
                f"bench-{os.getpid()}-{count}"]

    def reap():
        while True:
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    time.sleep(0.02)
            except ChildProcessError:
                return

    def cpu():
        if group:
            return _cgroup_usage_ms(group)
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        return (ru.ru_utime + ru.ru_stime) * 1000

    subprocess.run(argv(), check=True, capture_output=True, timeout=60)  # warm the caches
    seq, c0 = [], cpu()
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(argv(), check=True, capture_output=True, timeout=60)
        seq.append(time.perf_counter() - t)
    reap()
    cpu_each = (cpu() - c0) / runs
    t = time.perf_counter()
    procs = [subprocess.Popen(argv(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for _ in range(burst)]
    ends = []
    for p in procs:
        if p.wait(timeout=120):
            raise SystemExit(f"runsc run exited {p.returncode}")
        ends.append(time.perf_counter() - t)
    reap()
    print(json.dumps({"runs": runs, "p50_ms": pct(seq, 50) * 1000, "p99_ms": pct(seq, 99) * 1000,
                      "cpu_ms_each": cpu_each, "burst": burst,
                      "burst_p50_ms": pct(ends, 50) * 1000, "burst_p99_ms": pct(ends, 99) * 1000,
                      "burst_per_s": burst / max(ends),
                      "cpu_method": "cgroup cpu.stat" if group else "rusage"}))
    if group:
        _leave_cgroup()


def _image_tar(path: str) -> None:
    """A docker-archive image holding /bin/sh, /bin/true and their libraries."""
    import hashlib

    files = _image_files()
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as t:
        for f in sorted(files):
            t.add(f, arcname=f.lstrip("/"))
    blob = layer.getvalue()
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "config": {"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["/bin/sh"]},
                         "rootfs": {"type": "layers",
                                    "diff_ids": ["sha256:" + hashlib.sha256(blob).hexdigest()]}})
    manifest = json.dumps([{"Config": "config.json", "RepoTags": ["bench:1"],
                            "Layers": ["layer.tar"]}])
    with tarfile.open(path, "w") as t:
        for name, data in (("layer.tar", blob), ("config.json", config.encode()),
                           ("manifest.json", manifest.encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))


async def start_hosts(warm: int, plan_reuse: bool, warm_settle=None):
    hosts = [NodeHost.options(resources={n: 1}).remote(warm, plan_reuse, warm_settle)
             for n in NODES]
    infos = [await h.info.remote() for h in hosts]
    return hosts, infos


async def stop_hosts(hosts):
    await asyncio.gather(*(h.close.remote() for h in hosts))
    for h in hosts:
        ray.kill(h)


async def main_async(args, out, cluster):
    levels = CONCURRENCY[:3] if args.quick else CONCURRENCY
    deadline = time.monotonic() + args.budget
    rounds = {1: 20, 4: 8, 16: 4, 64: 2}

    def ray_pids():
        return set(cluster.pids())

    hosts, infos = await start_hosts(0, args.plan_reuse == "on")
    out["isolation"] = sorted({i["isolation"] for i in infos})
    host_pids = {i["pid"] for i in infos}
    baseline = [await h.pss_kib.remote() for h in hosts]
    pings = []
    for _ in range(50):
        t = time.perf_counter()
        await hosts[0].ping.remote()
        pings.append(time.perf_counter() - t)
    out["ray_call_p50_ms"] = pct(pings, 50) * 1000
    # CPU of one empty actor call, in the worker and in the driver: the floor under the
    # two calls each sandbox costs (create, first command).
    calls, worker0, driver0 = 200, await hosts[0].cpu_ms.remote(), os.times()
    for _ in range(calls):
        await hosts[0].ping.remote()
    worker1, driver1 = await hosts[0].cpu_ms.remote(), os.times()
    out["ray_call_cpu_ms"] = {
        "worker": (worker1 - worker0) / calls,
        "driver": (sum(driver1[:2]) - sum(driver0[:2])) * 1000 / calls}
    for c in levels:
        if time.monotonic() > deadline:
            out["skipped"].append(f"runtime c={c}: over the time budget")
            continue
        per_client = max(1, (16 if args.quick else 32) // c)
        level = await runtime_level(hosts, c, per_client, 1.0 if args.quick else 3.0,
                                    host_pids, ray_pids)
        level["pss_kib_per_sandbox"] = statistics.mean(
            (live - base) / level["live_sandboxes_per_node"]
            for live, base in zip(level["pss_kib_per_node_live"], baseline))
        n_rounds = max(1, rounds[c] // (2 if args.quick else 1))
        level["burst_cold"] = await bursts(hosts, c, n_rounds, 0.2)
        out["runtime"].append(level)
        print(f"runtime c={c}: {level['creates_per_s_per_node']:.0f} creates/s/node, "
              f"{level['commands_per_s_per_node']:.0f} cmds/s/node, saturated p50 "
              f"{level['latency_p50_ms']:.1f} p99 {level['latency_p99_ms']:.1f} ms, burst p99 "
              f"{level['burst_cold']['p99_ms']:.1f} ms", flush=True)
    # How the numbers grow with nodes: one node's actor alone at 16 clients, against both
    # (the level above). Both nodes share this machine's cores.
    if time.monotonic() < deadline:
        one = await runtime_level(hosts[:1], 16, 1 if args.quick else 2, 1.0, host_pids, ray_pids)
        both = next((lv for lv in out["runtime"] if lv["concurrency_per_node"] == 16), None)
        out["nodes"] = {"1": {"creates_per_s": one["creates_per_s_per_node"],
                              "commands_per_s": one["commands_per_s_per_node"]}}
        if both:
            out["nodes"]["2"] = {"creates_per_s": both["creates_per_s_per_node"] * len(hosts),
                                 "commands_per_s": both["commands_per_s_per_node"] * len(hosts)}
        print("by nodes, 16 clients per node: " + ", ".join(
            f"{k} node(s) {v['creates_per_s']:.0f} creations/s and {v['commands_per_s']:.0f} "
            f"commands/s in all" for k, v in out["nodes"].items()), flush=True)
    # The goal's point: 16 sandboxes at once in the cluster (8 per node).
    out["goal_16"] = {"cold": await bursts(hosts, GOAL_PER_NODE, 6, 0.3)}
    await stop_hosts(hosts)

    hosts, _ = await start_hosts(args.warm, args.plan_reuse == "on", args.warm_settle)
    out["goal_16"]["warm"] = await bursts(hosts, GOAL_PER_NODE, 6, 0.6)
    print(f"16 at once in the cluster: p99 cold {out['goal_16']['cold']['p99_ms']:.1f} ms, "
          f"warm {out['goal_16']['warm']['p99_ms']:.1f} ms", flush=True)
    for level in out["runtime"]:
        c = level["concurrency_per_node"]
        if time.monotonic() > deadline:
            out["skipped"].append(f"warm bursts c={c}: over the time budget")
            continue
        level["burst_warm"] = await bursts(hosts, c, max(1, rounds[c] // (2 if args.quick else 1)),
                                           0.3 + 0.04 * min(c, args.warm))
        print(f"warm pool of {args.warm}, bursts of {c}/node: p50 "
              f"{level['burst_warm']['p50_ms']:.1f} p99 {level['burst_warm']['p99_ms']:.1f} ms",
              flush=True)
    await stop_hosts(hosts)
    out["goal_16"]["floors"] = await floors()
    print(f"16 at once with no sandbox behind the calls: p99 "
          f"{out['goal_16']['floors']['empty']['p99_ms']:.1f} ms (Ray alone), "
          f"{out['goal_16']['floors']['process']['p99_ms']:.1f} ms (Ray and a plain `true`)",
          flush=True)

    for c in (1, 4) if args.quick else (1, 4, 16):
        if time.monotonic() > deadline:
            out["skipped"].append(f"actor per sandbox c={c}: over the time budget")
            continue
        level = await actor_level(c)
        out["actor_per_sandbox"].append(level)
        print(f"actor per sandbox c={c}: {level['creates_per_s']:.1f} creates/s, "
              f"p50 {level['latency_p50_ms']:.0f} ms", flush=True)


_OWN_CPU_SCRIPT = """
import sys
from nsbox.integrations.ray import SandboxRuntime
from nsbox.integrations.ray.backend import SessionPlans
n = int(sys.argv[1])
if sys.argv[2] == "off":
    SessionPlans.MAX_AGE = 0
rt = SandboxRuntime()
rt.exec(s := rt.create("host"), ["true"])
rt.delete(s)
ids = []
for _ in range(n):
    s = rt.create("host")
    rt.exec(s, ["true"])
    ids.append(s)
rt.close()
"""


def _own_cgroup(kind: str):
    """As root: move this process into a new cgroup (children inherit it); its path,
    or None. Removed by remove_bench_cgroups once empty."""
    root = _cgroup2_root()
    if os.getuid() != 0 or root is None:
        return None
    group = os.path.join(root, f"nsbox-bench-{kind}-{os.getpid()}")
    try:
        os.mkdir(group)
        with open(os.path.join(group, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))
    except OSError:
        return None
    return group


def _leave_cgroup() -> None:
    """Back to the root cgroup, so that the one made here can be removed."""
    with open(os.path.join(_cgroup2_root(), "cgroup.procs"), "w") as f:
        f.write(str(os.getpid()))


def _cgroup_usage(group: str) -> tuple:
    """(user, system) CPU ms of everything that ran in `group`."""
    with open(os.path.join(group, "cpu.stat")) as f:
        stat = dict(line.split() for line in f)
    return int(stat["user_usec"]) / 1000, int(stat["system_usec"]) / 1000


def _cgroup_usage_ms(group: str) -> float:
    return sum(_cgroup_usage(group))


def remove_bench_cgroups() -> None:
    root = _cgroup2_root()
    if os.getuid() != 0 or root is None:
        return
    for name in os.listdir(root):
        if name.startswith("nsbox-bench-"):
            try:
                os.rmdir(os.path.join(root, name))
            except OSError:
                pass  # still holds a process: left for the next run


def _cgroup2_root():
    """Where the cgroup2 hierarchy is mounted (mountinfo), or None."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            if fields[sep + 1] == "cgroup2":
                return fields[4]
    return None


def _cgroup_cpu(n: int, plan_reuse: str):
    """As root: the script's whole process tree in a cgroup of its own, whose cpu.stat
    counts every process that ran in it, reaped by the kernel or not (the fork server
    lets the kernel reap its children, so their rusage reaches no parent). None when
    no cgroup can be made here."""
    group = _own_cgroup("alone")
    if group is None:
        return None
    try:
        found = []
        for count in (0, n):
            before = _cgroup_usage(group)
            subprocess.run([sys.executable, "-c", _OWN_CPU_SCRIPT, str(count), plan_reuse],
                           check=True, timeout=120)
            time.sleep(0.2)  # the sandboxes' last processes end after the runner's close
            after = _cgroup_usage(group)
            found.append((after[0] - before[0], after[1] - before[1]))
        (base_user, base_sys), (user, system) = found
        return {"user_ms": (user - base_user) / n, "system_ms": (system - base_sys) / n,
                "sandboxes": n, "method": "cgroup cpu.stat"}
    finally:
        _leave_cgroup()
        remove_bench_cgroups()


def own_cpu_main(n: int, plan_reuse: str) -> None:
    """In a helper process: the CPU of nsbox's whole process tree per sandbox (create,
    first command, delete), whatever else the machine runs. As root a cgroup of its
    own counts it; otherwise a subreaper collects the rusage of the descendants that
    reach it (the fork server's children do not: a floor). Prints JSON."""
    import ctypes
    import resource

    counted = _cgroup_cpu(n, plan_reuse)
    if counted is not None:
        print(json.dumps(counted))
        return
    ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER

    def run(count):
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run([sys.executable, "-c", _OWN_CPU_SCRIPT, str(count), plan_reuse],
                       check=True, timeout=120)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    time.sleep(0.02)
            except ChildProcessError:
                break
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        return r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime

    base, full = run(0), run(n)
    print(json.dumps({"user_ms": (full[0] - base[0]) * 1000 / n,
                      "system_ms": (full[1] - base[1]) * 1000 / n, "sandboxes": n,
                      "method": "rusage (a floor)"}))


def nsbox_own_cpu(n: int, plan_reuse: str) -> dict:
    r = subprocess.run([sys.executable, os.path.abspath(__file__), "--own-cpu", str(n),
                        "--plan-reuse", plan_reuse], capture_output=True, text=True, timeout=300)
    if r.returncode:
        return {"error": r.stderr[-500:]}
    return json.loads(r.stdout)


def table(out) -> str:
    def ms(d, key="p"):
        return f"{d[key + '50_ms']:.1f} / {d[key + '99_ms']:.1f}" if d else "–"

    rows = ["| backend, shape | sandboxes at once per node | creations/s per node | "
            "commands/s per node | create→first command p50 / p99 ms: saturated | "
            "burst, cold | burst, warm pool | PSS per idle sandbox |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for lv in out["runtime"]:
        rows.append(f"| nsbox SandboxRuntime, 1 actor/node | {lv['concurrency_per_node']} | "
                    f"{lv['creates_per_s_per_node']:.0f} | {lv['commands_per_s_per_node']:.0f} | "
                    f"{lv['latency_p50_ms']:.1f} / {lv['latency_p99_ms']:.1f} | "
                    f"{ms(lv['burst_cold'], 'p')} | {ms(lv.get('burst_warm'), 'p')} | "
                    f"{lv['pss_kib_per_sandbox'] / 1024:.1f} MiB |")
    for lv in out["actor_per_sandbox"]:
        rows.append(f"| nsbox `create()`, 1 actor/sandbox | {lv['concurrency'] / len(NODES):g} | "
                    f"{lv['creates_per_s'] / len(NODES):.1f} | – | – | "
                    f"{lv['latency_p50_ms']:.0f} / {lv['latency_p99_ms']:.0f} | – | "
                    f"{lv['pss_kib_per_sandbox'] / 1024:.0f} MiB |")
    g = out.get("gvisor", {})
    if g.get("ran"):
        rows.append(f"| Ray gVisor SandboxRuntime | 1 | {1 / g['create_s']:.1f} | – | – | "
                    f"{g['first_command_s'] * 1000:.0f} | – | – |")
    r = out.get("runsc_alone", {})
    if r.get("ran"):
        rows.append(f"| gVisor `runsc run` alone, no Ray (start to exit of `/bin/true`) | "
                    f"{r['burst']} | {r['burst_per_s']:.1f} | – | {r['p50_ms']:.0f} / "
                    f"{r['p99_ms']:.0f} one at a time | {r['burst_p50_ms']:.0f} / "
                    f"{r['burst_p99_ms']:.0f} | – | – |")
    return "\n".join(rows)


def where_time_goes(out) -> str:
    lines = []
    for lv in out["runtime"]:
        parts = ", ".join(f"{who} {v:.1f}" for who, v in sorted(
            lv["cpu_ms_per_create_by_whom"].items(), key=lambda kv: -kv[1]) if v >= 0.05)
        ours = lv["cpu_ms_per_create_ours"]
        cores = os.cpu_count() or 1
        lines.append(f"{lv['concurrency_per_node']}/node: {lv['cpu_ms_per_create']:.1f} ms of CPU "
                     f"per sandbox (create + first command), by whom (ms): {parts}; one create "
                     f"inside the actor p50 {lv['in_actor_create_p50_ms']:.1f} ms; delete "
                     f"{lv['delete_ms_each']:.1f} ms; the benchmark's own parts {ours:.1f} ms, "
                     f"so {cores * 1000 / ours / len(NODES):.0f} creations/s per node would fill "
                     f"the {cores} cores with nothing else running")
    goal = out.get("goal_16")
    if goal:
        lines.append(f"16 sandboxes at once in the cluster (8 per node), create → first command "
                     f"p50 / p99: {goal['cold']['p50_ms']:.1f} / {goal['cold']['p99_ms']:.1f} ms "
                     f"cold, {goal['warm']['p50_ms']:.1f} / {goal['warm']['p99_ms']:.1f} ms "
                     f"with the warm pool")
        for mode, what in (("empty", "Ray alone, two empty calls"),
                           ("process", "Ray and one unsandboxed `true` per first command")):
            floor = goal.get("floors", {}).get(mode)
            if floor:
                lines.append(f"the same with no sandbox behind the calls ({what}): p50 / p99 "
                             f"{floor['p50_ms']:.1f} / {floor['p99_ms']:.1f} ms")
    for k, v in out.get("nodes", {}).items():
        lines.append(f"{k} node(s), 16 clients each: {v['creates_per_s']:.0f} creations/s and "
                     f"{v['commands_per_s']:.0f} commands/s in all (the nodes share "
                     f"{os.cpu_count()} cores)")
    call = out.get("ray_call_cpu_ms", {})
    lines.append(f"one Ray actor call round trip: p50 {out['ray_call_p50_ms']:.2f} ms; CPU of "
                 f"an empty call {call.get('worker', 0):.2f} ms in the worker, "
                 f"{call.get('driver', 0):.2f} ms in the driver")
    r = out.get("runsc_alone", {})
    if r.get("ran"):
        lines.append(f"gVisor runsc alone ({r['runsc']}): {r['cpu_ms_each']:.0f} ms of CPU per "
                     f"container (runsc's whole process tree, by "
                     f"{r.get('cpu_method', 'rusage')})")
    own = out.get("nsbox_own_cpu", {})
    if "user_ms" in own:
        lines.append(f"nsbox alone, no Ray (its whole process tree, by "
                     f"{own.get('method', 'rusage')}): {own['user_ms']:.1f} ms user + "
                     f"{own['system_ms']:.1f} ms system CPU per sandbox (create, first "
                     f"command, delete)")
        need = GOAL_PER_NODE * len(NODES) * (own["user_ms"] + own["system_ms"])
        cores = os.cpu_count() or 1
        lines.append(f"16 cold sandboxes at once need {need:.0f} ms of CPU for nsbox alone, "
                     f"{need / cores:.0f} ms of the {cores} cores with perfect spreading, "
                     f"before Ray's two calls each")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer levels, about a minute")
    parser.add_argument("--warm", type=int, default=16, help="warm pool size for the warm rows")
    parser.add_argument("--budget", type=float, default=150.0,
                        help="seconds for the measurements after the cluster is up")
    parser.add_argument("--results", default=os.path.join(os.path.dirname(__file__), "results"))
    parser.add_argument("--plan-reuse", choices=("on", "off"), default="on",
                        help="off: compile every sandbox's plan afresh (to compare)")
    parser.add_argument("--warm-settle", type=float,
                        help="seconds without a create before the warm pool refills (to compare)")
    parser.add_argument("--no-gvisor", action="store_true", help="skip the gVisor rows")
    parser.add_argument("--own-cpu", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--runsc", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.own_cpu:
        return own_cpu_main(args.own_cpu, args.plan_reuse)
    if args.runsc:
        return runsc_main(int(args.runsc[0]), int(args.runsc[1]), args.runsc[2])
    out = {"date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "load_before": os.getloadavg(),
           "machine": f"{os.cpu_count()} cores, Linux {platform.release()}, "
                      f"Python {platform.python_version()}, ray {ray.__version__}",
           "user": os.getuid(), "plan_reuse": args.plan_reuse, "runtime": [],
           "actor_per_sandbox": [], "skipped": []}
    temp = tempfile.mkdtemp(prefix="nsray-bench-", dir="/tmp")  # short: unix socket paths
    tmpdir = os.path.join(temp, "tmp")
    os.mkdir(tmpdir)
    nodes = [{"num_cpus": 32, "resources": {n: 1000}} for n in NODES]
    cluster = None
    started = time.monotonic()
    out["nsbox_own_cpu"] = nsbox_own_cpu(40 if args.quick else 100, args.plan_reuse)
    try:
        cluster = LocalCluster(temp, nodes, env={"TMPDIR": tmpdir})
        out["cluster_start_s"] = time.monotonic() - started
        ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
        asyncio.run(asyncio.wait_for(main_async(args, out, cluster), args.budget + 120))
        try:
            out["gvisor"] = {"ran": False, "why": "--no-gvisor"} if args.no_gvisor else \
                gvisor_attempt(temp)
        except Exception as err:
            out["gvisor"] = {"ran": False, "why": f"{type(err).__name__}: {err}"}
        try:
            out["runsc_alone"] = {"ran": False, "why": "--no-gvisor"} if args.no_gvisor else \
                runsc_alone(temp, 10 if args.quick else 30, GOAL_PER_NODE)
        except Exception as err:
            out["runsc_alone"] = {"ran": False, "why": f"{type(err).__name__}: {err}"}
    finally:
        ray.shutdown()
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(temp, ignore_errors=True)
        remove_bench_cgroups()
    out["total_s"] = time.monotonic() - started
    out["load_after"] = os.getloadavg()
    os.makedirs(args.results, exist_ok=True)
    with open(os.path.join(args.results, "ray_bench.json"), "w") as f:
        json.dump(out, f, indent=1)
    print(f"\n{out['date_utc']}, {out['machine']}, uid {out['user']}, isolation "
          f"{'/'.join(out.get('isolation', ['?']))}; two Ray nodes on 127.0.0.1 sharing the "
          f"cores; load average before/after {out['load_before'][0]:.1f}/"
          f"{out['load_after'][0]:.1f}; warm pool {args.warm}; plan reuse {args.plan_reuse}\n")
    print(table(out))
    print("\nWhere the time goes:\n" + where_time_goes(out))
    g = out.get("gvisor", {})
    print("\nRay's gVisor backend: "
          + ("ran" if g.get("ran") else f"could not run: {g.get('why')}"))
    for note in out["skipped"]:
        print("skipped:", note)
    print(f"total {out['total_s']:.0f} s")


if __name__ == "__main__":
    main()
