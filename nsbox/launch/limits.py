"""Resource limits around one sandbox: decide the mechanisms (prepare), create the
cgroup (caller, before the namespaces), join it (PID 1, first thing), set rlimits
(command, before exec), then read why the command ended and remove the cgroup.

Mechanisms, best first: a cgroup (v2, or a v1 hierarchy on hybrid hosts) limits
the whole sandbox; without one, rlimits limit each process. RLIMIT_NPROC is set
inside the sandbox's user namespace, where the kernel counts only that namespace's
processes, so it bounds the sandbox and not the user's other processes.
"""

import os

from nsbox.errors import UnsupportedKernel
from nsbox.kernel import rlimits
from nsbox.launch import init
from nsbox.policy import limits as policy_limits
from nsbox.policy.limits import Enforcement, Limits

WALL_TIMEOUT = init.WALL_TIMEOUT
SIGXFSZ_EXIT = 128 + 25
_DEFAULTS = Limits()
PREFIX = "nsbox-"  # cgroup names: nsbox-<creator pid>-<random>


class LimitsPlan:
    """The limits of one launch and how each is enforced (computed before fork)."""

    __slots__ = ("limits", "enforcement", "cgroups")

    def __init__(self, limits: Limits, enforcement: Enforcement, cgroups: tuple = ()):
        self.limits = limits
        self.enforcement = enforcement
        # ((version, parent dir, controllers to enable, ((file, content, required), ...)), ...)
        self.cgroups = cgroups

    @property
    def wall(self):
        return self.limits.wall

    @property
    def rlimits(self) -> tuple:
        return self.enforcement.rlimits

    def applied(self) -> dict:
        """limit -> {"value": ..., "mechanism": ...}: JSON-ready, for status reports."""
        report = {name: {"value": self.limits.describe(name), "mechanism": mechanism}
                  for name, mechanism in self.enforcement.mechanisms}
        for name, reason in self.enforcement.unenforced:
            report[name] = {"value": self.limits.describe(name), "mechanism": None,
                            "reason": reason}
        return report


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


def plan(limits: Limits, best_effort: bool = False, namespaced: bool = True) -> LimitsPlan:
    """Choose mechanisms for `limits` on this host; fail closed unless best effort.

    Only limits the user set fail closed: a default that this host can't enforce is
    reported as unenforced in applied(), so the defaults never stop a command.
    """
    wanted = policy_limits.controllers_wanted(limits, namespaced)
    places = {}
    if wanted:  # the defaults alone need no cgroup: skip reading the cgroup tree
        from nsbox.kernel import cgroups

        places = cgroups.find_places(wanted)
    enforcement = policy_limits.enforcement(
        limits, {controller: place.version for controller, place in places.items()}, namespaced)
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
    return LimitsPlan(limits, enforcement, groups)


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


def join(active: Active | None) -> None:
    """PID 1's first step: enter the cgroup before anything else runs in the sandbox."""
    if active is not None and active.group is not None:
        active.group.join()
        active.group.close_fds()  # this process's copies; the caller keeps its own


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
