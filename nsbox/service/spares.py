"""Spare sandboxes for one-shot runs: built in the background, each used once.

After a one-shot run the runner submits one more sandbox for the same launch
plan, built up to the exec of the command (relay.SPARE). The next run with
an equal plan sends its argv, cwd, env and stdio to that spare instead of
starting from nothing. The command still gets a sandbox no other command has
used, and when it ends the whole sandbox ends with it, as on the fresh path.

A spare is used only if nothing it was built from has changed: the launch plan
except argv, env and cwd (mounts, hidden and protected paths, Landlock rules
with the directory listings behind them, seccomp filter, limits), and the
identity (device, inode) of every host path its mounts and Landlock rules hold.
Plans whose behaviour a spare would change get none: network allowlist (its
refusal report is per sandbox) and non-default resource limits. Git dirs mounted
copy-on-write (plan/gitsync.py) are the one per-run part a spare may differ in: each
spare gets layers of its own (the caller's `renew`), and the run that takes it applies
those.
"""

from collections import OrderedDict
import os
import select
import threading

from nsbox import trace
from nsbox.record import fields, replace
from nsbox.service import forkserver, relay, wire

MAX_PLANS = 8  # plans with spares kept, the least recently used dropped first
MAX_DEPTH = 2  # spares kept for a plan whose runs come faster than one is built
READY_WAIT_S = 10.0  # a spare not ready by then is dropped for a fresh sandbox
_PER_COMMAND = ("argv", "env", "cwd", "limits", "watch")  # limits: compared by value below
# Mount steps that take a host path as it is at build time: a path replaced on
# the host afterwards is not what the spare holds.
_SOURCE_FROM_HOST = ("bind_rw",)
_TARGET_ON_HOST = ("pin", "bind_ro", "mask_dir", "mask_file")


def key_of(plan):
    """What a spare must match, or None when a spare would change the run's behaviour."""
    if plan.net_proxy is not None or plan.private_tmp is not None or plan.isolation != "full":
        return None
    if plan.overlay is not None or plan.rootfs_layer is not None:  # each run's own layers
        return None
    limits = plan.limits
    if limits is not None:
        from nsbox.policy.limits import Limits

        if limits.limits != Limits() or limits.cgroups:
            return None
    per_command = _PER_COMMAND + (("mounts", "git_layers") if plan.git_layers else ())
    key = tuple(getattr(plan, f.name) for f in fields(plan) if f.name not in per_command)
    if plan.git_layers:  # each run's own layer directories: compared without them
        key += _without_layers(plan)
    key += (None,) if limits is None else (limits.limits, limits.rlimits)
    try:
        hash(key)
    except TypeError:
        return None
    return key


def _without_layers(plan) -> tuple:
    """The plan's mounts and git layers with the layers' own directories left out."""
    own = {(layer.upper, layer.work) for layer in plan.git_layers if layer.dir}
    mounts = tuple(replace(step, upper="", work="") if (step.upper, step.work) in own
                   else step for step in plan.mounts)
    return mounts, tuple(layer.gitdir for layer in plan.git_layers)


def _mounted_paths(plan) -> list:
    paths = []
    for step in plan.mounts:
        if step.kind in _SOURCE_FROM_HOST:
            paths.append(step.source)
        elif step.kind in _TARGET_ON_HOST:
            paths.append(step.target)
    return paths


def _landlock_paths(plan) -> list:
    return [rule.path for rule in plan.landlock.paths] if plan.landlock is not None else []


def _identity(path: str):
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def current_identity(plan) -> tuple:
    return tuple(_identity(p) for p in _mounted_paths(plan) + _landlock_paths(plan))


def _pinned_identity(plan):
    """(identity, fds): the mounted paths are held open until the spare is used, so
    their inode numbers can't be reused by a replacement (a mount on a path the host
    removes is detached, and would no longer hold it). Landlock holds its own."""
    pins, identity = [], []
    try:
        for path in _mounted_paths(plan):
            try:
                fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError:
                identity.append(None)
                continue
            pins.append(fd)
            st = os.fstat(fd)
            identity.append((st.st_dev, st.st_ino))
    except BaseException:
        for fd in pins:
            os.close(fd)
        raise
    identity.extend(_identity(p) for p in _landlock_paths(plan))
    return tuple(identity), pins


class Spare:
    """The runner's ends of one spare sandbox."""

    __slots__ = ("status", "control", "pins", "identity", "is_ready", "plan", "on_drop",
                 "owner")

    def __init__(self, status, control, pins, identity, plan=None, on_drop=None):
        self.status, self.control, self.pins, self.identity = status, control, pins, identity
        self.is_ready = None  # not known yet
        self.plan = plan  # what it was built from (its own git layers)
        self.on_drop = on_drop  # removes what only this spare used, if it goes unused
        self.owner = os.getpid()

    def ready(self, timeout: float):
        """True once the spare waits for its command, False if it failed, None if
        it is still being built after `timeout` seconds."""
        if self.is_ready is None:
            poller = select.poll()
            poller.register(self.control, select.POLLIN)
            if not poller.poll(timeout * 1000):
                return None
            try:
                self.is_ready = self.control.recv(16) == wire.READY
            except OSError:
                self.is_ready = False
        return self.is_ready

    def close(self, used: bool = False) -> None:
        """Drop the spare: EOF on its status socket makes its relay kill it."""
        for sock in (self.status, self.control):
            if sock is not None:
                sock.close()
        self.status = self.control = None
        for fd in self.pins:
            os.close(fd)
        self.pins = ()
        on_drop, self.on_drop = self.on_drop, None
        if on_drop is not None and not used and self.owner == os.getpid():
            try:
                on_drop()
            except OSError:
                pass  # its layers are left to gitsync's sweep


class Pool:
    """Spares by plan key: one per plan, two for a plan run back to back (a run that had
    to wait for its spare), for the MAX_PLANS plans used most recently."""

    def __init__(self):
        self._lock = threading.Lock()
        self._spares = OrderedDict()  # key -> [Spare], oldest first; least recent key first
        self._depth = {}  # key -> spares kept for it
        self.enabled = True
        self.built = self.used = self.dropped = 0
        os.register_at_fork(after_in_child=self._forget)
        import atexit

        # Spares die with this process anyway; closing them first removes their layers.
        atexit.register(self.set_enabled, False)

    def start(self, key, plan, fds, wait: bool = True, renew=None):
        """Start `plan`'s command in a spare for `key`: (its status socket, the plan the
        spare was built from), or None. The spare taken is replaced at once, so the next
        one builds while this command runs. renew: see replenish.

        wait False: a spare still being built stays for later and None is returned.
        """
        with self._lock:
            queue = self._spares.get(key)
            spare = queue.pop(0) if queue else None
        if spare is None:
            return None
        usable = spare.identity == current_identity(plan)
        ready = spare.ready(0) if usable else False
        if ready is None and not wait:
            self._put_back(key, spare, front=True)
            return None
        if ready is None:
            with self._lock:  # runs come faster than one spare is built
                self._depth[key] = MAX_DEPTH
            ready = spare.ready(READY_WAIT_S)
        if ready:
            trace.mark("spare")
            try:
                wire.send_request(spare.control,
                                  wire.encode_command(plan.argv, plan.cwd, plan.env), fds)
            except OSError:
                pass
            else:
                status, spare.status = spare.status, None
                built_from = spare.plan
                spare.close(used=True)
                self.used += 1
                self._refill(key, plan, renew)
                return status, built_from
        spare.close()
        self.dropped += 1
        return None

    def replenish(self, key, plan, renew=None) -> None:
        """Build spares for `key` up to its depth; never waits for them to be built.
        renew(plan) -> (the plan for one more spare, what drops its own parts unused):
        for plans with parts no two sandboxes may share (git layers)."""
        self._refill(key, plan, renew)

    def _refill(self, key, plan, renew=None) -> None:
        while True:
            with self._lock:
                if not self.enabled:
                    return
                queue = self._spares.get(key, ())
                if queue:
                    self._spares.move_to_end(key)
                if len(queue) >= self._depth.get(key, 1):
                    return
            try:
                spare = _build(*(renew(plan) if renew is not None else (plan, None)))
            except Exception:  # noqa: BLE001 - only an optimisation: the next run starts fresh
                return
            self.built += 1
            if not self._put_back(key, spare):
                return

    def set_enabled(self, enabled: bool) -> None:
        with self._lock:
            self.enabled = enabled
            dropped = [] if enabled else [s for queue in self._spares.values() for s in queue]
            if not enabled:
                self._spares.clear()
        for spare in dropped:
            spare.close()

    def wait_ready(self, timeout: float = READY_WAIT_S) -> bool:
        """Block until every spare kept now is ready (for tests and benchmarks)."""
        with self._lock:
            kept = [spare for queue in self._spares.values() for spare in queue]
        return all([spare.ready(timeout) for spare in kept])

    def stats(self) -> dict:
        with self._lock:
            return {"spares": sum(len(queue) for queue in self._spares.values()),
                    "built": self.built, "used": self.used, "dropped": self.dropped}

    def _put_back(self, key, spare: Spare, front: bool = False) -> bool:
        """Keep `spare` for `key` (False if it was not wanted and is closed)."""
        evicted = []
        with self._lock:
            queue = self._spares.get(key)
            if not self.enabled or (queue and len(queue) >= self._depth.get(key, 1)):
                evicted.append(spare)
            else:
                if queue is None:
                    queue = self._spares[key] = []
                queue.insert(0 if front else len(queue), spare)
                self._spares.move_to_end(key)
                while len(self._spares) > MAX_PLANS:
                    old_key, old = self._spares.popitem(last=False)
                    self._depth.pop(old_key, None)
                    evicted += old
        for old in evicted:
            old.close()
        return spare not in evicted

    def _forget(self) -> None:
        # A forked runner must not hand its commands to the parent's spares.
        self._lock = threading.Lock()
        spares, self._spares = self._spares, OrderedDict()
        self._depth = {}
        for queue in spares.values():
            for spare in queue:
                spare.close()


def _build(plan, on_drop=None) -> Spare:
    try:
        identity, pins = _pinned_identity(plan)
    except BaseException:
        if on_drop is not None:
            on_drop()
        raise
    control = theirs = None
    devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    try:
        control, theirs = wire.socketpair()
        # The spare's own stdio is /dev/null until its command brings stdio along.
        status = forkserver.submit(relay.SPARE, replace(plan, argv=("nsbox-spare",), env={}),
                                   [devnull, devnull, devnull, theirs.fileno()])
    except BaseException:
        if control is not None:
            control.close()
        for fd in pins:
            os.close(fd)
        if on_drop is not None:
            on_drop()
        raise
    finally:
        os.close(devnull)
        if theirs is not None:
            theirs.close()
    return Spare(status, control, pins, identity, plan, on_drop)


_pool = None
_pool_lock = threading.Lock()


def pool() -> Pool:
    global _pool
    if _pool is None:
        with _pool_lock:
            if _pool is None:
                _pool = Pool()
    return _pool
