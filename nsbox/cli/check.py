"""`nsbox check`: what this host lets nsbox enforce, with a fix for each gap.

It reads the same host facts and probes as a launch (nsbox.plan.host and
nsbox.launch.probe, whose probes run in a forked child and never alter the caller).
"""

import os

from nsbox.launch import probe
from nsbox.plan import host, limits
from nsbox.policy import limits as policy_limits
from nsbox.policy.limits import RLIMITS, Limits

OK, WARN, FAIL = "ok", "warn", "fail"


def check_kernel() -> dict:
    u = os.uname()
    return {"status": OK, "release": u.release, "machine": u.machine}


def check_userns() -> dict:
    error, reason = probe.userns_failure()
    if not error:
        return {"status": OK, "works": True}
    error = error.replace(f". {reason}", "").strip()
    fix = reason.split("Fix: ", 1)[1] if "Fix: " in reason else USERNS_FIX
    return {"status": FAIL, "works": False, "error": error, "cause": reason.split(" Fix: ")[0],
            "fix": fix, "instead": ISOLATION_AUTO_GIVES}


USERNS_FIX = ("let the container create user namespaces (e.g. docker run --security-opt "
              "seccomp=unconfined --security-opt apparmor=unconfined), or run nsbox on the host")
ISOLATION_AUTO_GIVES = ("`nsbox exec --isolation auto` works here: Landlock and seccomp confine "
                        "the command, with a private $TMPDIR but no mount, network or PID namespace")


def check_landlock() -> dict:
    facts = host.facts()
    abi = facts.landlock_abi
    if abi >= 1:
        out = {"status": OK, "abi": abi}
        if abi < 4:
            out.update(status=WARN, note="ABI < 4: no TCP rules (Linux 6.7+)")
        return out
    return {"status": FAIL, "abi": 0, "cause": facts.landlock_unavailable,
            "fix": "use Linux 5.13+ with lsm=landlock on the kernel command line "
                   "(CONFIG_SECURITY_LANDLOCK=y)"}


def check_seccomp() -> dict:
    mode = _status_field("Seccomp")
    if mode is None:
        return {"status": FAIL, "available": False,
                "fix": "build the kernel with CONFIG_SECCOMP=y and CONFIG_SECCOMP_FILTER=y"}
    error = probe.seccomp_error()
    works = not error
    out = {"status": OK if works else FAIL, "available": works, "mode_here": int(mode)}
    if not works:
        out["error"] = error
        out["fix"] = ("allow seccomp() for this process (a container runtime's own seccomp "
                      "profile may forbid it: docker run --security-opt seccomp=unconfined)")
    return out


def check_cgroup() -> dict:
    mount = host.mount_of("cgroup2")
    if mount is None:
        return {"status": WARN, "v2": False, "note": "no cgroup2 mount: limits use rlimits only",
                "fix": "boot with systemd.unified_cgroup_hierarchy=1 or mount cgroup2"}
    group = ""
    try:
        with open("/proc/self/cgroup") as f:
            for line in f:
                if line.startswith("0::"):
                    group = line[3:].strip()
    except OSError:
        pass
    path = os.path.join(mount, group.lstrip("/")) if group else mount
    writable = os.access(path, os.W_OK) and os.access(os.path.join(path, "cgroup.procs"), os.W_OK)
    controllers = _read_words(os.path.join(path, "cgroup.controllers"))
    out = {"status": OK if writable else WARN, "v2": True, "mount": mount, "cgroup": path,
           "delegated": writable, "controllers": controllers}
    if not writable:
        out["note"] = "own cgroup not writable: limits use rlimits only"
        out["fix"] = ("run under a delegated cgroup, e.g. "
                      "systemd-run --user --scope -p Delegate=yes nsbox ...")
    return out


def check_limits() -> dict:
    """Which mechanism would enforce each resource limit for this user on this host."""
    wanted = Limits(pids=1024, memory=1 << 30, cpu=1.0, wall=60)
    plan = limits.plan(wanted, host.facts(), best_effort=True)
    applied = plan.applied()
    mechanisms = {name: entry["mechanism"] or "none" for name, entry in applied.items()}
    scopes = {name: entry.get("scope", "none") for name, entry in applied.items()}
    weak = [name for name in ("pids", "memory", "cpu") if mechanisms.get(name) not in
            ("cgroup1", "cgroup2")]
    out = {"status": OK if not weak else WARN, "mechanisms": mechanisms, "scopes": scopes,
           "shares": plan.shares(),
           "described": {name: _mechanism_words(name, mechanism)
                         for name, mechanism in mechanisms.items()}}
    if weak:
        out["note"] = (f"no writable cgroup for {', '.join(weak)}: rlimits instead, per process "
                       "where the scope says so; --limit memory is refused unless --best-effort, "
                       f"which caps each process ({policy_limits.RLIMITS['memory']}: a hog gets "
                       "MemoryError, not an OOM kill); cpu needs a wall limit")
        out["fix"] = ("run as root or under a delegated cgroup, e.g. "
                      "systemd-run --user --scope -p Delegate=yes nsbox ...")
    return out


def _mechanism_words(name: str, mechanism: str) -> str:
    words = {
        "cgroup1": f"cgroup v1 {name} controller, whole sandbox",
        "cgroup2": f"cgroup v2 {name} controller, whole sandbox",
        "supervisor": "nsbox kills the whole sandbox when time is up",
        "tmpfs": "size of the sandbox's private /tmp",
        "userns": "a maximum in the sandbox's own user namespace",
        "none": "not enforced here",
    }
    if mechanism == "rlimit":
        scope = "counted in the sandbox's user namespace" if name == "pids" else "per process"
        return f"{RLIMITS.get(name, 'rlimit')}, {scope}"
    return words.get(mechanism, mechanism)


def check_container() -> dict:
    evidence = []
    for marker in ("/.dockerenv", "/run/.containerenv"):
        if os.path.exists(marker):
            evidence.append(marker)
    try:
        with open("/proc/1/environ", "rb") as f:
            for item in f.read().split(b"\0"):
                if item.startswith(b"container="):
                    evidence.append("pid 1 env " + item.decode(errors="replace"))
    except OSError:
        pass
    try:
        with open("/proc/1/cgroup") as f:
            text = f.read()
        for word in ("docker", "kubepods", "lxc", "containerd", "libpod"):
            if word in text:
                evidence.append(f"/proc/1/cgroup mentions {word}")
                break
    except OSError:
        pass
    # Outside a user namespace the identity map covers the whole id range.
    try:
        with open("/proc/self/uid_map") as f:
            if f.read().split()[:3] != ["0", "0", "4294967295"]:
                evidence.append("running in a user namespace")
    except (OSError, IndexError):
        pass
    return {"status": OK, "nested": bool(evidence), "evidence": evidence}


def run_checks() -> dict:
    checks = {
        "kernel": check_kernel(),
        "user_namespaces": check_userns(),
        "landlock": check_landlock(),
        "seccomp": check_seccomp(),
        "cgroup_v2": check_cgroup(),
        "limits": check_limits(),
        "container": check_container(),
    }
    checks["verdict"] = verdict(checks)
    return checks


def verdict(checks: dict) -> dict:
    userns = checks["user_namespaces"]["works"]
    landlock = checks["landlock"]["abi"] >= 1
    seccomp = checks["seccomp"]["available"]
    if userns and landlock and seccomp:
        level, text = "full", "full isolation available (namespaces + Landlock + seccomp)"
    elif landlock and seccomp:
        level, text = "landlock", ("user namespaces unavailable: use --isolation landlock "
                                   "(or auto), which is weaker; see the fix above")
    elif userns:
        level, text = "degraded", ("namespaces work but Landlock or seccomp is missing: "
                                   "only --best-effort runs")
    else:
        level, text = "unsupported", "nsbox cannot sandbox commands here; see the fixes above"
    return {"status": OK if level == "full" else WARN if level == "landlock" else FAIL,
            "level": level, "summary": text}


def render(checks: dict) -> None:
    """A readable table on stdout."""
    # rich costs tens of milliseconds and only the table needs it (not --json).
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="nsbox check", show_lines=False)
    table.add_column("check")
    table.add_column("status")
    table.add_column("details", overflow="fold")
    colours = {OK: "green", WARN: "yellow", FAIL: "red"}
    for name, result in checks.items():
        status = result.get("status", OK)
        if name == "limits":
            for limit, words in result["described"].items():
                table.add_row(f"limit {limit}", f"[{colours[status]}]{status}[/]", escape(words))
            shared = ", ".join(f"{k}={v}" for k, v in result["shares"].items())
            rest = {"shared counters": shared or "-", **{k: result[k] for k in ("note", "fix")
                                                         if k in result}}
            table.add_row("limits", f"[{colours[status]}]{status}[/]",
                          escape("; ".join(f"{k}: {v}" for k, v in rest.items())))
            continue
        details = "; ".join(f"{k}: {_short(v)}" for k, v in result.items() if k != "status")
        table.add_row(_title(name, result), f"[{colours[status]}]{status}[/]", escape(details))
    Console().print(table)


def _title(name: str, result: dict) -> str:
    if name == "cgroup_v2":
        v1 = host.mount_of("cgroup") is not None
        return "cgroup v1 + v2" if v1 and result.get("v2") else "cgroup v1" if v1 else "cgroup v2"
    return name.replace("_", " ")


def _short(value) -> str:
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "-"
    return str(value)


def _status_field(name: str):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(name + ":"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _read_words(path: str) -> list:
    try:
        with open(path) as f:
            return f.read().split()
    except OSError:
        return []
