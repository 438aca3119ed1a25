"""Resource limits: frozen data (limit_values parses sizes and durations), and which
mechanism enforces each limit. Pure: nsbox.plan.limits supplies what the host offers.
"""

import math
from nsbox.record import Record, fields, replace

DEFAULT_PIDS = 4096
# Largest values accepted: what the kernel's 64-bit limits and timers can hold.
MAX_COUNT = (1 << 31) - 1  # pids, nofile, inotify
MAX_BYTES = 1 << 60  # memory, tmp, fsize: 1024 pebibytes
MAX_SECONDS = 100 * 365 * 86400  # wall: a century
MAX_CORES = 1 << 16
DEFAULT_INOTIFY = 64  # half the kernel's default per-user maximum (128)
# limit -> cgroup controller that enforces it for the whole sandbox
CONTROLLERS = {"pids": "pids", "memory": "memory", "cpu": "cpu"}
# limit -> rlimit used without a cgroup. Memory: RLIMIT_DATA counts a process's private
# writable memory, so node, java and go start (they reserve gigabytes of address space,
# which RLIMIT_AS counts: node and go need AS >= ~0.8G, java ~4G; DATA >= ~60M, java
# ~RAM/64 + 100M for the heap it commits at start).
RLIMITS = {"pids": "RLIMIT_NPROC", "memory": "RLIMIT_DATA", "cpu": "RLIMIT_CPU",
           "nofile": "RLIMIT_NOFILE", "fsize": "RLIMIT_FSIZE"}

# Per-user kernel counters (/proc/sys/user) the sandbox shares with its user's other
# processes. The kernel charges the sandbox's use to the user on the host too, so a
# maximum set in the sandbox's own user namespace bounds its share and leaves the rest.
# inotify instances are the `inotify` limit; these get half of the host's maximum.
SHARED_COUNTERS = ("max_inotify_watches", "max_fanotify_groups", "max_fanotify_marks")
# Reachable only where seccomp lets the command create namespaces.
NAMESPACE_COUNTERS = ("max_user_namespaces", "max_mnt_namespaces", "max_pid_namespaces",
                      "max_net_namespaces", "max_ipc_namespaces", "max_uts_namespaces",
                      "max_cgroup_namespaces", "max_time_namespaces")
PROFILES_WITHOUT_NAMESPACES = ("default", "strict")  # shipped profiles deny creating them
# rlimits the kernel counts per user namespace and charges to its ancestors too (Linux
# 5.14+): half of the caller's value, set in the sandbox, bounds the sandbox's share.
SHARED_RLIMITS = ("RLIMIT_SIGPENDING", "RLIMIT_MSGQUEUE")


class Limits(Record):
    """Resource ceilings for one sandbox; None means no limit."""

    pids: int | None = DEFAULT_PIDS  # processes and threads at once
    memory: int | None = None  # bytes
    cpu: float | None = None  # cores' worth of CPU time, e.g. 1.5
    wall: float | None = None  # seconds before the whole sandbox is killed
    tmp: int | None = 1 << 30  # size of the private /tmp, bytes
    nofile: int | None = 4096  # open files per process
    fsize: int | None = None  # largest file a process may write, bytes
    inotify: int | None = DEFAULT_INOTIFY  # inotify instances the whole sandbox holds at once

    def __post_init__(self):
        for name in ("pids", "memory", "tmp", "nofile", "fsize", "inotify"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                      or value < 1):
                _raise(f"limit {name} must be a positive integer or None; got {value!r}")
            ceiling = MAX_BYTES if name in ("memory", "tmp", "fsize") else MAX_COUNT
            if value is not None and value > ceiling:
                from nsbox.policy.limit_values import format_size

                _raise(f"limit {name}: {self.describe(name)} is too large (at most "
                       f"{format_size(ceiling) if ceiling == MAX_BYTES else ceiling}); "
                       f"use {name}=none for no limit")
        for name in ("cpu", "wall"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not value > 0 or math.isinf(value)):
                _raise(f"limit {name} must be a positive number or None; got {value!r}")
            ceiling = MAX_SECONDS if name == "wall" else MAX_CORES
            if value is not None and value > ceiling:
                _raise(f"limit {name}: {value:g} is too large (at most {ceiling}); "
                       f"use {name}=none for no limit")

    def with_options(self, *items: str) -> "Limits":
        """Apply `NAME=VALUE` options, as given to `--limit`."""
        from nsbox.policy.limit_values import parse_options

        return replace(self, **parse_options(items))

    @classmethod
    def from_mapping(cls, values) -> "Limits":
        """Limits from a policy file's `[limits]` table; values may be strings or numbers."""
        from nsbox.policy.limit_values import parse_value

        return cls(**{name: parse_value(name, value) for name, value in dict(values or {}).items()})

    def describe(self, name: str) -> str:
        """A limit as a person would write it: `512M`, `1.5 cores`, `30s`."""
        value = getattr(self, name)
        if value is None:
            return "unlimited"
        if name in ("memory", "tmp", "fsize"):
            from nsbox.policy.limit_values import format_size

            return format_size(value)
        if name == "wall":
            return f"{value:g}s"
        if name == "cpu":
            return f"{value:g} cores"
        return str(value)

    def active(self) -> tuple:
        """Names of the limits that are set, in declaration order."""
        return tuple(f.name for f in fields(self) if getattr(self, f.name) is not None)


NAMES = tuple(f.name for f in fields(Limits))


# --- which mechanism enforces what ------------------------------------------------

class Enforcement:
    """How each active limit is enforced (a plain class: it is built on every start)."""

    __slots__ = ("mechanisms", "unenforced", "rlimits", "per_process")

    def __init__(self, mechanisms: tuple = (), unenforced: tuple = (), rlimits: tuple = (),
                 per_process: tuple = ()):
        self.mechanisms = mechanisms  # ((limit, mechanism), ...), e.g. ("pids", "cgroup2")
        self.unenforced = unenforced  # ((limit, reason), ...)
        self.rlimits = rlimits  # ((RLIMIT_NAME, value), ...) set in the command before exec
        # ((limit, reason), ...): meant for the whole sandbox, held only per process here
        self.per_process = per_process

    def __repr__(self) -> str:
        return (f"Enforcement({self.mechanisms!r}, {self.unenforced!r}, {self.rlimits!r}, "
                f"{self.per_process!r})")

    def mechanism(self, name: str):
        return dict(self.mechanisms).get(name)

    def as_dict(self) -> dict:
        return dict(self.mechanisms)


CGROUP_VERSIONS = ("cgroup1", "cgroup2")


def controllers_wanted(limits: Limits, namespaced: bool = True) -> set:
    """The cgroup controllers worth looking for; empty when rlimits and tmpfs cover it all."""
    if namespaced and limits.memory is None and limits.cpu is None and limits.pids in (
            None, DEFAULT_PIDS):
        return set()  # enforcement() below takes pids from RLIMIT_NPROC in this case
    return {CONTROLLERS[n] for n in limits.active() if n in CONTROLLERS}


def enforcement(limits: Limits, cgroup_controllers: dict, namespaced: bool = True,
                user_counters: bool = True) -> Enforcement:
    """Choose a mechanism per active limit.

    `cgroup_controllers` maps a controller name (pids, memory, cpu) to the cgroup
    version that can enforce it here ("cgroup2" or "cgroup1"); absent means none.
    `namespaced`: the sandbox has its own user namespace and a tmpfs /tmp.
    `user_counters`: that namespace's /proc/sys/user maxima can be set here.
    """
    mechanisms, unenforced, rlimits, per_process = [], [], [], []
    # Moving PID 1 into a cgroup costs up to ~10 ms (the kernel waits for an RCU
    # grace period), so the default pids limit alone does not pay for one: inside
    # the sandbox's own user namespace RLIMIT_NPROC counts exactly its processes.
    cgroup_anyway = any(getattr(limits, n) is not None and CONTROLLERS[n] in cgroup_controllers
                        for n in ("memory", "cpu"))
    pids_by_rlimit = namespaced and limits.pids == DEFAULT_PIDS and not cgroup_anyway
    for name in limits.active():
        value = getattr(limits, name)
        version = cgroup_controllers.get(CONTROLLERS.get(name, ""))
        if name == "pids" and pids_by_rlimit:
            version = None
        if version:
            mechanisms.append((name, version))
        elif name == "wall":
            mechanisms.append((name, "supervisor"))
        elif name == "tmp":
            if namespaced:
                mechanisms.append((name, "tmpfs"))
            else:
                unenforced.append((name, "/tmp is a plain directory without namespaces"))
        elif name == "inotify":
            if namespaced and user_counters:
                mechanisms.append((name, "userns"))
            else:
                unenforced.append((name, "nsbox cannot set an inotify maximum for the "
                                         "sandbox alone (landlock-only isolation has no user "
                                         "namespace, or /proc/sys is read-only): only the "
                                         "host's per-user one applies"))
        elif name == "pids" and not namespaced:
            # Outside a user namespace RLIMIT_NPROC counts all of the uid's processes.
            unenforced.append((name, "no cgroup pids controller is available, and "
                                     "RLIMIT_NPROC would count every process of this user"))
        elif name == "cpu" and limits.wall is None:
            unenforced.append((name, "no cgroup cpu controller is available, and without one "
                                     "a cpu rate needs a wall limit (it becomes RLIMIT_CPU = "
                                     "cpu x wall seconds per process)"))
        else:
            mechanisms.append((name, "rlimit"))
            rlimits.append((RLIMITS[name], _rlimit_value(name, value, limits)))
            if name == "memory":
                per_process.append((name, "no writable cgroup with the memory controller"))
    return Enforcement(tuple(mechanisms), tuple(unenforced), tuple(rlimits), tuple(per_process))


def scope(name: str, mechanism: str) -> str:
    """What a mechanism bounds: the sandbox as a whole, or each of its processes."""
    if mechanism == "rlimit" and name != "pids":  # RLIMIT_NPROC counts per user namespace
        return "per process"
    return "sandbox"


def counters_to_read(limits: Limits, nested_namespaces: bool) -> tuple:
    """The host's /proc/sys/user maxima that `shares` needs."""
    names = tuple(n for n in SHARED_COUNTERS  # inotify=none lifts the watches' bound too
                  if limits.inotify is not None or not n.startswith("max_inotify"))
    return names + (NAMESPACE_COUNTERS if nested_namespaces else ())


def shares(limits: Limits, host_counters: dict, host_rlimits: dict) -> tuple:
    """(counters, rlimits): the sandbox's maxima of per-user kernel counters, as
    ((name, value), ...) for its user namespace and ((RLIMIT_NAME, value), ...) for its
    processes: the `inotify` limit and half of each host value given."""
    counters = [("max_inotify_instances", limits.inotify)] if limits.inotify is not None else []
    counters += [(name, max(1, value // 2)) for name, value in host_counters.items() if value > 0]
    rlimits = [(name, max(1, value // 2)) for name, value in host_rlimits.items() if value > 0]
    return tuple(counters), tuple(rlimits)


def _rlimit_value(name: str, value, limits: Limits) -> int:
    if name == "cpu":
        return max(1, math.ceil(value * limits.wall))
    return int(value)


def cgroup_settings(limits: Limits, version: str, controller: str) -> tuple:
    """The (file, content, required) writes that set a controller's limits in a fresh cgroup."""
    if controller == "pids":
        return (("pids.max", str(limits.pids), True),)
    if controller == "memory":
        if version == "cgroup2":
            # No swap either (where swap is accounted): the hog would page out instead.
            return (("memory.max", str(limits.memory), True), ("memory.swap.max", "0", False))
        return (("memory.limit_in_bytes", str(limits.memory), True),)
    if controller == "cpu":
        period = 100_000
        quota = max(1000, round(limits.cpu * period))
        if version == "cgroup2":
            return (("cpu.max", f"{quota} {period}", True),)
        return (("cpu.cfs_period_us", str(period), True), ("cpu.cfs_quota_us", str(quota), True))
    raise ValueError(f"unknown controller {controller!r}")


def _raise(message: str):
    from nsbox.errors import PolicyError

    raise PolicyError(message)
