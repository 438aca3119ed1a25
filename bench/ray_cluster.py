"""A local multi-node Ray cluster on 127.0.0.1, for nsbox's Ray tests and benchmark.

    with LocalCluster(temp_dir, [{"resources": {"node_a": 100}},
                                 {"resources": {"node_b": 100}}]) as cluster:
        ray.init(address=cluster.address)

Every node listens on and talks to 127.0.0.1 only. `ray start --address` cannot do
that in Ray 2.60 (it swaps 127.0.0.1 for the machine's routable address), so the
nodes are started by ray.cluster_utils.Cluster in a child process with
RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, under which Ray resolves every address to
127.0.0.1; the driver needs that variable too (set before `import ray`, see
LOOPBACK_ENV). block_userns=True runs the whole cluster under
`bwrap --unshare-user --disable-userns`: its workers cannot create user namespaces.

stop() (also on exit from the `with`) ends the cluster and then kills, by pid,
whatever is left of the process tree (the child is a subreaper, so orphans stay in
it); it never runs `ray stop`, which would end every Ray process on the machine.
"""

import json
import os
import select
import signal
import subprocess
import sys
import time

LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
_PR_SET_CHILD_SUBREAPER = 36


class LocalCluster:
    def __init__(self, temp_dir: str, nodes: list, block_userns: bool = False,
                 env: dict | None = None, start_timeout: float = 180.0, log_path: str = None):
        """nodes: one dict per node (the first is the head) with num_cpus, resources,
        object_store_memory (bytes, default 80 MiB)."""
        self.temp_dir = temp_dir
        spec = {"temp_dir": temp_dir, "nodes": nodes}
        argv = [sys.executable, os.path.abspath(__file__), "serve", json.dumps(spec)]
        if block_userns:
            argv = ["bwrap", "--dev-bind", "/", "/", "--unshare-user", "--disable-userns",
                    "--die-with-parent", "--", *argv]
        self.log_path = log_path or os.path.join(temp_dir, "cluster.log")
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=log, start_new_session=True,
                                     env={**os.environ, **LOOPBACK_ENV, **(env or {}),
                                          "RAY_TMPDIR": temp_dir})
        log.close()
        self.address = None
        try:
            info = self._read_line(start_timeout)
            self.address = info["address"]
            self.node_ids = info["node_ids"]
        except BaseException:
            self.stop()
            raise

    def _read_line(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        buf = b""
        while not buf.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.proc.stdout], [], [], left)[0]:
                raise TimeoutError(f"the Ray cluster did not start in {timeout:.0f} s; "
                                   f"see {self.log_path}")
            chunk = os.read(self.proc.stdout.fileno(), 4096)
            if not chunk:
                raise RuntimeError(f"the Ray cluster failed to start; see {self.log_path}:\n"
                                   + _tail(self.log_path))
            buf += chunk
        return json.loads(buf)

    def pids(self) -> list:
        """The cluster's live processes: the child and all its descendants."""
        return [self.proc.pid, *descendants(self.proc.pid)]

    def stop(self, timeout: float = 60.0) -> None:
        """End the cluster; bounded by `timeout`, then SIGKILL by pid."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()  # the child shuts its nodes down
            except OSError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        left = self.pids() if self.proc.poll() is None else []
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def descendants(pid: int) -> list:
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, pending = [], [pid]
    while pending:
        for child in children.get(pending.pop(), ()):
            found.append(child)
            pending.append(child)
    return found


def _tail(path: str, lines: int = 30) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


def serve(spec: dict) -> None:
    """In the child: start the nodes, print their address, wait for stdin to close."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(shutdown_at_exit=True)
    try:
        node_ids = []
        for node in spec["nodes"]:
            args = {"num_cpus": node.get("num_cpus", 1), "resources": node.get("resources", {}),
                    "object_store_memory": node.get("object_store_memory", 80 << 20),
                    "node_ip_address": "127.0.0.1"}
            if cluster.head_node is None:
                args.update(temp_dir=os.path.join(spec["temp_dir"], "ray"), include_dashboard=False)
            node_ids.append(cluster.add_node(**args).node_id)
        print(json.dumps({"address": cluster.address, "node_ids": node_ids}), flush=True)
        sys.stdin.read()
    finally:
        try:
            cluster.shutdown()
        finally:
            for pid in descendants(os.getpid()):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            _reap(10)
    del ray


def _reap(timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            time.sleep(0.05)


if __name__ == "__main__" and sys.argv[1:2] == ["serve"]:
    serve(json.loads(sys.argv[2]))
