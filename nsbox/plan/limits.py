"""Resource limits before the fork: which mechanism enforces each limit on this host
(a cgroup for the whole sandbox, else rlimits per process), failing closed unless
best effort.

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
from nsbox.plan import host as host_facts
from nsbox.plan.types import LimitsPlan
from nsbox.policy import limits as policy_limits
from nsbox.policy.limits import Limits

_DEFAULTS = Limits()


def plan(limits: Limits, host, best_effort: bool = False, namespaced: bool = True,
         nested_namespaces: bool = False) -> LimitsPlan:
    """Choose mechanisms for `limits` on this host; fail closed unless best effort.

    Only limits the user set fail closed: a default that this host can't enforce is
    reported as unenforced in applied(), so the defaults never stop a command.
    `host`: plan.host.HostFacts. `nested_namespaces`: the seccomp profile lets the
    command create namespaces.
    """
    wanted = policy_limits.controllers_wanted(limits, namespaced)
    places = host_facts.cgroup_places(host, wanted)
    user_counters = namespaced and host.user_counters_writable
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
        wanted_counters = policy_limits.counters_to_read(limits, nested_namespaces)
        counters, shared = policy_limits.shares(
            limits, {name: value for name, value in host.user_counters.items()
                     if name in wanted_counters}, host.shared_rlimits)
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
        from nsbox.policy.limit_values import format_size

        lines.append(f"note: java commits 1/64 of RAM ({format_size(heap)}) for "
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


def _java_start_heap() -> int:
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 64 >> 20 << 20
