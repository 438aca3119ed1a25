"""Resource limits around one sandbox: decide the mechanisms (prepare), create the
cgroup (caller, before the namespaces), join it (PID 1, first thing), set rlimits
(command, before exec), then read why the command ended and remove the cgroup.

Mechanisms, best first: a cgroup (v2, or a v1 hierarchy on hybrid hosts) limits
the whole sandbox; without one, rlimits limit each process, so a memory limit is
refused unless best effort. RLIMIT_NPROC is set inside the sandbox's user namespace,
where the kernel counts only that namespace's processes, so it bounds the sandbox
and not the user's other processes. Per-user kernel counters the sandbox shares
with the user (inotify, fanotify, queued signals, message queues) get a bounded
share the same way: maxima in the sandbox's user namespace (PID 1, while it still
has its capabilities there) and rlimits.
"""

import os

from nsbox.errors import UnsupportedKernel
from nsbox.kernel import namespaces, rlimits
from nsbox.launch import init
from nsbox.policy import limits as policy_limits
from nsbox.policy.limits import Enforcement, Limits

WALL_TIMEOUT = init.WALL_TIMEOUT
SIGXFSZ_EXIT = 128 + 25
_DEFAULTS = Limits()
PREFIX = "nsbox-"  # cgroup names: nsbox-<creator pid>-<random>


class LimitsPlan:
    """The limits of one launch and how each is enforced (computed before fork)."""

    __slots__ = ("limits", "enforcement", "cgroups", "counters", "shared_rlimits")

    def __init__(self, limits: Limits, enforcement: Enforcement, cgroups: tuple = (),
                 counters: tuple = (), shared_rlimits: tuple = ()):
        self.limits = limits
        self.enforcement = enforcement
        # ((version, parent dir, controllers to enable, ((file, content, required), ...)), ...)
        self.cgroups = cgroups
        self.counters = counters  # ((name, maximum), ...) for the sandbox's user namespace
        self.shared_rlimits = shared_rlimits  # ((RLIMIT_NAME, value), ...): shares of the user's

    @property
    def wall(self):
        return self.limits.wall

    @property
    def rlimits(self) -> tuple:
        return self.enforcement.rlimits + self.shared_rlimits

    def applied(self) -> dict:
        """limit -> {"value", "mechanism", "scope" (sandbox | per process)[, "rlimit"]}:
        JSON-ready, for status reports."""
        report = {}
        for name, mechanism in self.enforcement.mechanisms:
            entry = {"value": self.limits.describe(name), "mechanism": mechanism,
                     "scope": policy_limits.scope(name, mechanism)}
            if mechanism == "rlimit":
                entry["rlimit"] = policy_limits.RLIMITS[name]
            report[name] = entry
        for name, reason in self.enforcement.unenforced:
            report[name] = {"value": self.limits.describe(name), "mechanism": None,
                            "reason": reason}
        return report

    def shares(self) -> dict:
        """The sandbox's maxima of per-user kernel counters: name -> value."""
        return dict(self.counters + self.shared_rlimits)


class LimitHit:
    """A limit that ended (or broke) the command: data for a Result and the CLI's message."""

    __slots__ = ("limit", "value", "reason", "killed")

    def __init__(self, limit: str, value: str, reason: str, killed: bool = True):
        self.limit = limit  # memory | pids | wall | fsize
        self.value = value  # as configured, e.g. "512M"
        self.reason = reason  # e.g. "OOM"
        self.killed = killed  # the sandbox killed something, rather than refusing a request

    @property
    def message(self) -> str:
        verb = "command killed" if self.killed else "command stopped"
        return f"{verb}: {self.limit} limit {self.value} reached ({self.reason})"

    def as_dict(self) -> dict:
        return {"limit": self.limit, "value": self.value, "reason": self.reason,
                "killed": self.killed, "message": self.message}

    def __repr__(self) -> str:
        return f"LimitHit({self.limit!r}, {self.value!r}, {self.reason!r}, killed={self.killed})"


class Active:
    """Limits in force for a running sandbox (owned by the caller)."""

    __slots__ = ("plan", "group", "removal_failed")

    def __init__(self, plan: LimitsPlan):
        self.plan = plan
        self.group = None  # cgroups.Group, when a cgroup enforces something
        self.removal_failed = []  # hierarchies whose directory stayed behind


def plan(limits: Limits, best_effort: bool = False, namespaced: bool = True,
         nested_namespaces: bool = False) -> LimitsPlan:
    """Choose mechanisms for `limits` on this host; fail closed unless best effort.

    Only limits the user set fail closed: a default that this host can't enforce is
    reported as unenforced in applied(), so the defaults never stop a command.
    `nested_namespaces`: the seccomp profile lets the command create namespaces.
    """
    wanted = policy_limits.controllers_wanted(limits, namespaced)
    places = {}
    if wanted:  # the defaults alone need no cgroup: skip reading the cgroup tree
        from nsbox.kernel import cgroups

        places = cgroups.find_places(wanted)
    user_counters = namespaced and _user_counters_writable()
    enforcement = policy_limits.enforcement(
        limits, {controller: place.version for controller, place in places.items()}, namespaced,
        user_counters)
    if enforcement.per_process and not best_effort:
        name, reason = enforcement.per_process[0]
        value = limits.describe(name)
        raise UnsupportedKernel(
            f"cannot enforce limit {name}={value} for the sandbox as a whole: {reason}. Fix: run "
            f"as root or in a delegated cgroup (e.g. systemd-run --user --scope -p Delegate=yes "
            f"nsbox exec ...), or pass --best-effort to cap each process instead "
            f"({policy_limits.RLIMITS[name]} = {value} per process; together they can use more)")
    chosen = [(name, reason) for name, reason in enforcement.unenforced
              if getattr(limits, name) != getattr(_DEFAULTS, name)]
    if chosen and not best_effort:
        name, reason = chosen[0]
        fix = "drop the limit or pass --best-effort"
        if name in policy_limits.CONTROLLERS:
            fix = (f"run where a writable cgroup with the {policy_limits.CONTROLLERS[name]} "
                   f"controller is delegated to you, {fix}")
        raise UnsupportedKernel(
            f"cannot enforce limit {name}={limits.describe(name)}: {reason}. Fix: {fix}")
    by_dir = {}
    for name, mechanism in enforcement.mechanisms:
        controller = policy_limits.CONTROLLERS.get(name)
        if controller is None or mechanism not in policy_limits.CGROUP_VERSIONS:
            continue
        place = places[controller]
        enable, settings = by_dir.setdefault((place.version, place.path), ([], []))
        if place.enable:
            enable.append(controller)
        settings.extend(policy_limits.cgroup_settings(limits, place.version, controller))
    groups = tuple((version, path, tuple(enable), tuple(settings))
                   for (version, path), (enable, settings) in by_dir.items())
    counters = shared = ()
    if user_counters:
        host_rlimits = {}
        for name in policy_limits.SHARED_RLIMITS:
            value = rlimits.soft(name)
            if value != rlimits.RLIM_INFINITY:
                host_rlimits[name] = value
        counters, shared = policy_limits.shares(limits, namespaces.user_counter_limits(
            policy_limits.counters_to_read(limits, nested_namespaces)), host_rlimits)
    return LimitsPlan(limits, enforcement, groups, counters, shared)


def report(limits_plan: LimitsPlan | None) -> list:
    """Lines for stderr: limits that are weaker than they read, or left out by best effort."""
    if limits_plan is None:
        return []
    limits, lines = limits_plan.limits, []
    for name, reason in limits_plan.enforcement.per_process:
        lines.append(f"best effort: limit {name}={limits.describe(name)} caps each process "
                     f"({policy_limits.RLIMITS[name]}), not the sandbox as a whole: {reason}")
    heap = _java_start_heap() if limits_plan.enforcement.per_process else 0
    if heap and limits.memory < heap + (128 << 20):
        lines.append(f"note: java commits 1/64 of RAM ({policy_limits.format_size(heap)}) for "
                     "its heap at start, more than this cap leaves: give it -Xms, e.g. "
                     "JAVA_TOOL_OPTIONS=-Xms16m")
    if limits_plan.enforcement.mechanism("cpu") == "rlimit":
        seconds = dict(limits_plan.enforcement.rlimits)["RLIMIT_CPU"]
        lines.append(f"limit cpu={limits.describe('cpu')} is RLIMIT_CPU = {seconds}s of CPU time "
                     "per process (no writable cgroup with the cpu controller)")
    for name, reason in limits_plan.enforcement.unenforced:
        if getattr(limits, name) != getattr(_DEFAULTS, name):
            lines.append(f"best effort: no limit {name}={limits.describe(name)}: {reason}")
    return lines


def start(limits_plan: LimitsPlan | None) -> Active | None:
    """Create the sandbox's cgroup; call in the caller before entering the namespaces."""
    if limits_plan is None:
        return None
    active = Active(limits_plan)
    if limits_plan.cgroups:
        from nsbox.kernel import cgroups

        group = cgroups.Group(f"{PREFIX}{os.getpid()}-{os.urandom(3).hex()}")
        try:
            for version, parent, enable, settings in limits_plan.cgroups:
                cgroups.sweep_stale(parent, PREFIX)
                group.add(version, parent, enable, settings)
        except BaseException:
            group.remove(wait=0)
            raise
        active.group = group
    return active


def _user_counters_writable() -> bool:
    # In a container /proc/sys is often mounted read-only: no maxima can be set there.
    try:
        return not os.statvfs(namespaces.USER_COUNTERS).f_flag & os.ST_RDONLY
    except OSError:
        return False


def _java_start_heap() -> int:
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 64 >> 20 << 20


def join(active: Active | None) -> None:
    """PID 1's first step: enter the cgroup and bound the per-user counters of the
    sandbox's user namespace before anything else runs in the sandbox."""
    if active is None:
        return
    if active.group is not None:
        active.group.join()
        active.group.close_fds()  # this process's copies; the caller keeps its own
    namespaces.limit_user_counters(active.plan.counters)


def apply_rlimits(limits_plan: LimitsPlan | None) -> None:
    """In the command process, before exec: the per-process limits."""
    if limits_plan is not None and limits_plan.rlimits:
        rlimits.lower(limits_plan.rlimits)


def deadline(limits_plan: LimitsPlan | None, now: float):
    """Monotonic time at which the wall limit kills the sandbox, or None."""
    if limits_plan is None or limits_plan.wall is None:
        return None
    return now + limits_plan.wall


def finish(active: Active | None, exit_code: int, timed_out: bool = False):
    """After PID 1 is reaped: which limit ended the command (or None); removes the cgroup."""
    if active is None:
        return None
    hit = outcome(active, exit_code, timed_out)
    if active.group is not None:
        active.removal_failed = active.group.remove()
        active.group = None
    return hit


def outcome(active: Active, exit_code: int, timed_out: bool):
    limits = active.plan.limits
    group = active.group
    if timed_out:
        return LimitHit("wall", limits.describe("wall"), "timeout")
    if group is not None and limits.memory is not None:
        # v2 counts kills in memory.events, v1 in memory.oom_control.
        if group.counter("memory.events", "oom_kill") or group.counter("memory.oom_control", "oom_kill"):
            return LimitHit("memory", limits.describe("memory"), "OOM")
    if exit_code == 0:
        return None
    if group is not None and limits.pids is not None and group.counter("pids.events", "max"):
        return LimitHit("pids", limits.describe("pids"), "fork failed", killed=False)
    if exit_code == SIGXFSZ_EXIT and limits.fsize is not None:
        return LimitHit("fsize", limits.describe("fsize"), "SIGXFSZ")
    return None
