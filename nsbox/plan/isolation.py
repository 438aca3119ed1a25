"""Which isolation this host can give, and the Landlock ruleset that goes with it.

`full`: namespaces + mounts + Landlock + seccomp. `landlock`: no namespaces (for
containers and hosts that forbid user namespaces); Landlock, seccomp and a child
subreaper carry the whole confinement. `auto` takes the strongest, on the caller's
verdict about user namespaces (plan.host).
"""

import os

from nsbox.errors import UnsupportedKernel
from nsbox.plan.types import FULL, LANDLOCK
from nsbox.policy import landlock_rules
from nsbox.record import Record


class Isolation(Record):
    mode: str  # full | landlock: what this run actually gets
    landlock_abi: int
    missing: tuple = ()  # protections left out under --best-effort, in words
    fallback_reason: str = ""  # why `auto` settled for less than full


def resolve(policy, host, session: bool = False) -> Isolation:
    """Pick the mode and check the kernel can enforce it; fail closed unless best effort.
    host: plan.host.HostFacts; session: for a Session, whose commands each need a
    Landlock domain of their own."""
    abi = host.landlock_abi
    mode, fallback_reason = policy.isolation, ""
    if mode == "auto":
        if host.userns_blocker is None:
            raise ValueError("isolation 'auto' needs the host's user-namespace verdict "
                             "(plan.host.facts(userns_blocker=...))")
        fallback_reason = host.userns_blocker
        mode = LANDLOCK if fallback_reason else FULL
    missing = _missing_protections(mode, abi, policy)
    if session and 1 <= abi and not landlock_rules.command_domain(abi):
        missing.append(SESSION_DOMAINS_MISSING)
    if missing and not policy.best_effort:
        if abi < 1:
            raise UnsupportedKernel(
                f"Landlock is unavailable: {host.landlock_unavailable}. "
                "Pass --best-effort to run without it.")
        raise UnsupportedKernel(
            f"isolation {mode!r} needs a newer Landlock (this kernel has ABI {abi}) for: "
            f"{'; '.join(missing)}. Pass --best-effort to run without them.")
    return Isolation(mode, abi, tuple(missing), fallback_reason)


SESSION_DOMAINS_MISSING = (
    "a Landlock domain per session command, so that it can neither signal the session's "
    "server nor signal or trace other commands' processes (Landlock ABI 6, Linux 6.12)")


def _missing_protections(mode: str, abi: int, policy) -> list:
    if abi < 1:
        return ["Landlock (writes confined to the workspace by the kernel, "
                "independently of mounts)"]
    if mode != LANDLOCK:
        return []  # namespaces already cover network, signals and abstract sockets
    missing = []
    if policy.network == "none" and abi < 4:
        missing.append("TCP bind/connect denial (Landlock ABI 4, Linux 6.7)")
    if abi < 6:
        missing.append("signal and abstract unix socket scoping (Landlock ABI 6, Linux 6.12)")
    return missing


def private_tmp_path() -> str:
    """A fresh, unguessable name for the per-run TMPDIR (launch.scope creates it)."""
    base = os.environ.get("TMPDIR", "")
    if not (base.startswith("/") and os.path.isdir(base)):
        base = "/tmp"
    return os.path.join(os.path.realpath(base), f"nsbox-{os.getpid()}-{os.urandom(6).hex()}")


def ruleset(iso: Isolation, policy, writable: tuple, private_tmp, hidden=()):
    """The Landlock ruleset for this run (None without Landlock); reads the directory
    listings that hiding paths needs."""
    if iso.landlock_abi < 1:
        return None
    if iso.mode == LANDLOCK:
        tmp, devices = (private_tmp,), landlock_rules.DEVICES_HOST
    else:
        # The policy's private dirs are the sandbox's own tmpfs, as /tmp is.
        tmp = ("/tmp", "/dev/shm") + tuple(os.path.normpath(p) for p in policy.private_dirs)
        devices = landlock_rules.DEVICES_SANDBOX
    # A hidden path that does not exist has nothing to hide; skipping it keeps its
    # parent listable.
    hidden = tuple(p for p in (os.path.realpath(os.path.expanduser(h)) for h in hidden)
                   if os.path.lexists(p))
    roots = tuple(writable) + tmp + devices
    listings = {d: _entries(d) for d in landlock_rules.dirs_to_list(roots, hidden)}
    return landlock_rules.build(
        iso.landlock_abi, writable=writable, tmp=tmp, network=policy.network, hidden=hidden,
        listings=listings, devices=devices, confine_fs=policy.preset != "full-access",
        # The mounts hide those names in full isolation; without them, listing leaks them.
        list_hidden_parents=iso.mode == FULL, net_namespace=iso.mode == FULL)


def _entries(directory: str) -> tuple:
    # Symlinks are left out: a rule on one would land on its target, which may be
    # the hidden path itself. What they point to is granted under its own name.
    try:
        with os.scandir(directory) as it:
            return tuple(e.name for e in it if not e.is_symlink())
    except OSError:
        return ()  # unlistable: nothing beneath it is granted


def report(plan) -> list:
    """Lines for stderr when this run is weaker than full isolation."""
    lines = []
    if plan.isolation == LANDLOCK:
        why = f" ({plan.isolation_fallback})" if plan.isolation_fallback else ""
        reachable = "host processes are visible"
        if plan.landlock is None or not plan.landlock.handled_fs & landlock_rules.FS_RESOLVE_UNIX:
            reachable += " and the host's named unix sockets reachable"
        unprotected = ""
        if plan.policy.protected or plan.policy.git_protected:
            # Landlock cannot make a path read-only inside a writable root without
            # also forbidding new files in every directory above it.
            unprotected = ("; protected paths in writable roots (.git/hooks, ...) stay writable "
                           "(changes to them are reported after the run)")
        lines.append("isolation: landlock only, weaker than full: no user, mount, pid, net or "
                     f"ipc namespaces{why}; {reachable}{unprotected}")
    if plan.isolation_missing:
        lines.append("best effort: running without " + "; ".join(plan.isolation_missing))
    return lines


def status(plan) -> dict:
    """The isolation this run achieved, for machine-readable output."""
    return {
        "requested": plan.policy.isolation,
        "isolation": plan.isolation,
        "landlock_abi": plan.landlock.abi if plan.landlock is not None else 0,
        "missing": list(plan.isolation_missing),
        "fallback_reason": plan.isolation_fallback,
    }
