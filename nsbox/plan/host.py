"""What this host offers, probed once per process without forking.

Whether user namespaces can be made needs a throw-away child (nsbox.launch.probe):
the caller hands that verdict in, because plan code never forks.
"""

import os

from nsbox.kernel import caps, landlock, mounts, namespaces, rlimits
from nsbox.policy import limits as policy_limits
from nsbox.record import Record, replace

UNKNOWN = None  # userns_blocker not probed (isolation "auto" needs it)


class HostFacts(Record):
    landlock_abi: int
    landlock_unavailable: str  # why landlock_abi is 0, with the fix
    mount_api: bool  # open_tree/move_mount/mount_setattr (Linux >= 5.12)
    last_cap: int
    user_counters_writable: bool  # /proc/sys/user maxima can be set in a user namespace
    user_counters: dict  # name -> the host's /proc/sys/user maximum
    shared_rlimits: dict  # RLIMIT_NAME -> this process's finite soft limit
    userns_blocker: str | None = UNKNOWN  # "" when user namespaces work, else why not
    cgroup_places: dict | None = None  # controller -> kernel.cgroups.Place; None: look when needed


_facts = None


def facts(userns_blocker: str | None = UNKNOWN) -> HostFacts:
    """This host's facts, probed on first use; `userns_blocker` fills in the verdict."""
    global _facts
    if _facts is None:
        abi = landlock.abi_version()
        _facts = HostFacts(
            landlock_abi=abi,
            landlock_unavailable="" if abi else landlock.unavailable_reason(),
            mount_api=mounts.has_mount_api(),
            last_cap=caps.last_cap(), user_counters_writable=_user_counters_writable(),
            user_counters=namespaces.user_counter_limits(
                policy_limits.SHARED_COUNTERS + policy_limits.NAMESPACE_COUNTERS),
            shared_rlimits=_finite_rlimits(policy_limits.SHARED_RLIMITS))
    if userns_blocker is not UNKNOWN and _facts.userns_blocker != userns_blocker:
        _facts = replace(_facts, userns_blocker=userns_blocker)
    return _facts


def cgroup_places(host: HostFacts, wanted) -> dict:
    """The host's cgroup places for `wanted` controllers (read now unless given)."""
    if host.cgroup_places is not None:
        return {c: p for c, p in host.cgroup_places.items() if c in wanted}
    if not wanted:  # the defaults alone need no cgroup: skip reading the cgroup tree
        return {}
    from nsbox.kernel import cgroups

    return cgroups.find_places(wanted)


def _user_counters_writable() -> bool:
    # In a container /proc/sys is often mounted read-only: no maxima can be set there.
    try:
        return not os.statvfs(namespaces.USER_COUNTERS).f_flag & os.ST_RDONLY
    except OSError:
        return False


def _finite_rlimits(names) -> dict:
    found = {}
    for name in names:
        value = rlimits.soft(name)
        if value != rlimits.RLIM_INFINITY:
            found[name] = value
    return found


def mount_of(fstype: str):
    """Where a filesystem of this type is mounted (the first one), or None."""
    from nsbox.kernel import mountinfo

    return mountinfo.find_fstype(fstype)
