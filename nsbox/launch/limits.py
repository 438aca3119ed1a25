"""Resource limits at run time: create the sandbox's cgroup (caller, before the
namespaces), join it (PID 1, first thing), set rlimits (command, before exec), then
read why the command ended and remove the cgroup. The mechanisms were chosen
before the fork (nsbox.plan.limits)."""

import os

from nsbox.kernel import namespaces, rlimits
from nsbox.launch import pid1

WALL_TIMEOUT = pid1.WALL_TIMEOUT
SIGXFSZ_EXIT = 128 + 25
PREFIX = "nsbox-"  # cgroup names: nsbox-<creator pid>-<random>


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

    def __init__(self, plan):  # plan.types.LimitsPlan
        self.plan = plan
        self.group = None  # cgroups.Group, when a cgroup enforces something
        self.removal_failed = []  # hierarchies whose directory stayed behind


def start(limits_plan) -> Active | None:
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
    """PID 1's first step: enter the cgroup and bound the per-user counters of the
    sandbox's user namespace before anything else runs in the sandbox."""
    if active is None:
        return
    if active.group is not None:
        active.group.join()
        active.group.close_fds()  # this process's copies; the caller keeps its own
    namespaces.limit_user_counters(active.plan.counters)


def apply_rlimits(limits_plan) -> None:
    """In the command process, before exec: the per-process limits."""
    if limits_plan is not None and limits_plan.rlimits:
        rlimits.lower(limits_plan.rlimits)


def deadline(limits_plan, now: float):
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
