"""Memory of many idle sandboxes on the same image (container mode), for bench.py and
bench/run.sh; the host root's Sessions are the reference.

    image_memory.py hold
        (as the user) builds the image (bench.image_root, with `sleep`), warms the fork
        server up with one sandbox of each kind, prints "ready IMAGE"; then for each
        "open KIND N" line holds N idle sandboxes of KIND at once and prints "ready KIND N"
        with the disk layers they made, and for "close" closes them and prints "closed".
        On EOF everything it started is closed and the image removed.
    image_memory.py measure --sandboxes N --out FILE -- HOLDER_ARGV...
        starts the holder and, for each kind, sums the PSS of the holder and every
        process under it before and with the N sandboxes open, and what their writable
        layers use; writes the kinds as JSON.

As for session_memory.py, the sandboxes' helpers are not dumpable: run.sh runs `measure`
as root with the holder as the test user; a user measuring its own gets RSS instead,
and no layer sizes.
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import session_memory

SANDBOXES = 16  # held open at once, per kind
SETTLE_S = 0.3  # let the sandboxes reach their idle state
START_TIMEOUT_S = 30
# (kind, what it is); Sessions idle after one `true`, CLI sandboxes run `sleep`.
KINDS = (
    ("session-host", "nsbox.Session() on the host root (reference)"),
    ("session-image", "nsbox.Session(Policy(rootfs=IMAGE)), read-only"),
    ("session-image-writable", "nsbox.Session(Policy(rootfs=IMAGE, rootfs_writable=True)), "
                               "layer in memory (the default)"),
    ("session-image-writable-disk", "the same with rootfs_layer='disk'"),
    ("exec-image", "nsbox exec --rootfs IMAGE -- sleep"),
    ("bwrap-image", "bwrap --ro-bind IMAGE / ... sleep (reference for nsbox exec)"),
)
REFERENCE = {"session-image": "session-host", "session-image-writable": "session-host",
             "session-image-writable-disk": "session-host", "exec-image": "bwrap-image"}
WRITABLE = ("session-image-writable", "session-image-writable-disk")


# --- the holder (the user's side) -----------------------------------------------------

class Holder:
    def __init__(self, workspace: str, image: str):
        import bench
        import nsbox
        from nsbox import state

        self.nsbox, self.workspace, self.image = nsbox, workspace, image
        self.layers_dir = os.path.join(state.state_dir(), "rootfs")
        self.sessions, self.procs = [], []
        self.exec_argv = bench.nsbox_script() + ["exec", "--rootfs", image, "--",
                                                 "/bin/sleep", "600"]
        bwrap = shutil.which("bwrap")
        self.bwrap_argv = (bench.bwrap_argv(bwrap, workspace, root=image)[:-1]
                           + ["/bin/sleep", "600"]) if bwrap else None

    def policy(self, kind: str):
        Policy = self.nsbox.Policy
        return {"session-host": Policy(),
                "session-image": Policy(rootfs=self.image),
                "session-image-writable": Policy(rootfs=self.image, rootfs_writable=True),
                "session-image-writable-disk": Policy(rootfs=self.image, rootfs_writable=True,
                                                      rootfs_layer="disk")}[kind]

    def open(self, kind: str, count: int) -> list:
        """Hold `count` sandboxes of `kind`; the disk layers they made."""
        before = self._layers()
        if kind.startswith("session-"):
            policy = self.policy(kind)
            command = ["true"] if kind == "session-host" else ["/bin/true"]
            for _ in range(count):
                session = self.nsbox.Session(policy)
                self.sessions.append(session.__enter__() or session)
                result = self.sessions[-1].run(command)
                if result.returncode != 0:
                    raise RuntimeError(f"{kind}: true exited {result.returncode}: "
                                       f"{result.stderr[-300:]!r}")
        else:
            argv = self.exec_argv if kind == "exec-image" else self.bwrap_argv
            if argv is None:
                raise RuntimeError("bubblewrap not found")
            for _ in range(count):
                self.procs.append(subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                                   stdout=subprocess.DEVNULL,
                                                   stderr=subprocess.PIPE))
            self._wait_for_sleepers(count, kind)
        time.sleep(SETTLE_S)
        return sorted(os.path.join(self.layers_dir, name) for name in self._layers() - before)

    def _wait_for_sleepers(self, count: int, kind: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while sleepers(os.getpid()) < count:
            failed = next((p for p in self.procs if p.poll() is not None), None)
            if failed is not None or time.monotonic() > deadline:
                why = (f"exit {failed.returncode}: {failed.stderr.read()[-300:]!r}"
                       if failed is not None else f"not running after {START_TIMEOUT_S} s")
                raise RuntimeError(f"{kind}: a sandbox failed to start ({why})")
            time.sleep(0.05)

    def _layers(self) -> set:
        try:
            return set(os.listdir(self.layers_dir))
        except OSError:
            return set()

    def close(self) -> None:
        for session in self.sessions:
            session.close()
        self.sessions = []
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            proc.stderr.close()
        self.procs = []


def sleepers(root: int) -> int:
    """How many processes under `root` are `sleep`."""
    count = 0
    for pid in session_memory.tree(root):
        try:
            with open(f"/proc/{pid}/comm") as f:
                count += f.read().strip() == "sleep"
        except OSError:
            continue
    return count


def hold() -> int:
    workspace = os.path.realpath(tempfile.mkdtemp(prefix="nsbox-image-memory-"))
    os.chdir(workspace)  # the sandboxes' workspace
    import bench

    notes = []
    image = bench.image_root(workspace, notes, commands=("true", "sleep"))
    if image is None:
        os.chdir("/")
        shutil.rmtree(workspace, ignore_errors=True)
        print("error " + "; ".join(notes), flush=True)
        return 1
    holder = None
    try:
        holder = Holder(workspace, image)
        for kind, _ in KINDS:  # the fork server up, with each kind's code loaded
            if kind.startswith("session-"):
                holder.open(kind, 1)
                holder.close()
        print(f"ready {image}", flush=True)
        for line in sys.stdin:
            words = line.split()
            if words[:1] == ["open"]:
                try:
                    layers = holder.open(words[1], int(words[2]))
                except RuntimeError as err:
                    holder.close()  # what did start goes: the next kind starts from none
                    print(f"error {err}".replace("\n", " "), flush=True)
                    continue
                print(" ".join(["ready", words[1], words[2]] + layers), flush=True)
            elif words == ["close"]:
                holder.close()
                print("closed", flush=True)
            else:
                break
    finally:
        if holder is not None:
            holder.close()
        os.chdir("/")
        shutil.rmtree(image, ignore_errors=True)
        shutil.rmtree(workspace, ignore_errors=True)
    return 0


# --- the measurement (root's side) ----------------------------------------------------

def tree_kb(path: str):
    """Disk blocks under `path` (not following links), in kB; None if unreadable."""
    total = 0
    try:
        total += os.lstat(path).st_blocks // 2
        for top, dirs, files in os.walk(path, onerror=_raise):
            for name in dirs + files:
                total += os.lstat(os.path.join(top, name)).st_blocks // 2
    except OSError:
        return None
    return total


def _raise(err):
    raise err


def memory_layers_kb(root: int):
    """What each writable root in memory holds (its tmpfs's used blocks, through the
    overlay's statfs), in kB, one per sandbox; None when /proc/PID/root is unreadable."""
    host = os.stat("/").st_dev
    seen, sizes = set(), []
    for pid in session_memory.tree(root):
        try:
            dev = os.stat(f"/proc/{pid}/root/").st_dev
            if dev == host or dev in seen:
                continue
            seen.add(dev)
            fs = os.statvfs(f"/proc/{pid}/root/")
        except PermissionError:
            return None
        except OSError:
            continue
        sizes.append((fs.f_blocks - fs.f_bfree) * fs.f_frsize // 1024)
    return sizes


def measure(holder_argv: list, count: int, kinds=None) -> dict:
    """For each kind: the holder tree's PSS before and with `count` sandboxes open."""
    started = time.monotonic()
    errors = tempfile.TemporaryFile()  # the holder's stderr, quoted when it fails
    proc = subprocess.Popen(holder_argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=errors, text=True)
    out = {"sandboxes": count, "kinds": [], "errors": [],
           "measured_by": "root" if os.getuid() == 0 else "the same user"}
    try:
        line = proc.stdout.readline().split()
        if line[:1] != ["ready"]:
            proc.wait(timeout=60)
            errors.seek(0)
            said = errors.read().decode(errors="replace")[-2000:]
            raise RuntimeError(f"holder said {' '.join(line)!r}, expected 'ready IMAGE' "
                               f"(exit {proc.returncode}; stderr: {said!r})")
        out["image"], out["image_kb"] = line[1], tree_kb(line[1])
        out["image_files"] = sum(len(f) for _, _, f in os.walk(line[1]))
        for kind, what in KINDS:
            if kinds and kind not in kinds:
                continue
            before = session_memory.snapshot(proc.pid)
            proc.stdin.write(f"open {kind} {count}\n")
            proc.stdin.flush()
            answer = proc.stdout.readline().split()
            if answer[:3] != ["ready", kind, str(count)]:
                out["errors"].append(f"{kind}: {' '.join(answer) or 'holder exited'}")
                if answer[:1] != ["error"]:
                    break
                continue
            held = session_memory.snapshot(proc.pid)
            row = {"kind": kind, "what": what, "before_kb": before["total_kb"],
                   "total_kb": held["total_kb"] - before["total_kb"], "metric": held["metric"],
                   "processes": held["processes"]}
            row["per_sandbox_kb"] = row["total_kb"] / count
            row["reference"] = REFERENCE.get(kind)
            if kind == "session-image-writable-disk":
                row["layers"] = answer[3:]
                sizes = [tree_kb(path) for path in answer[3:]]
                row["layer_kb"] = None if None in sizes or len(sizes) != count else sizes
            elif kind in WRITABLE:
                sizes = memory_layers_kb(proc.pid)
                row["layer_kb"] = sizes if sizes is not None and len(sizes) == count else None
            proc.stdin.write("close\n")
            proc.stdin.flush()
            if proc.stdout.readline().strip() != "closed":
                raise RuntimeError(f"{kind}: the holder did not close its sandboxes")
            out["kinds"].append(row)
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)
        errors.close()
    out["elapsed_s"] = round(time.monotonic() - started, 1)
    return out


def main(argv) -> int:
    return session_memory.command(argv, __doc__, hold, measure, "--sandboxes", SANDBOXES)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
