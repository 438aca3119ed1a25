"""The JSON record of one run (`nsbox exec --json-status FILE`): what ran, under which
policy, which protections were in force, and how it ended."""

import signal

def now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def protections(plan) -> dict:
    """What this plan enforces, as reviewable data."""
    from nsbox.kernel import namespaces

    ruleset = plan.landlock
    kinds = {}
    for step in plan.mounts:
        kinds.setdefault(step.kind, []).append(step.target)
    return {
        "isolation": getattr(plan, "isolation", "full"),
        "missing": list(getattr(plan, "isolation_missing", ())),
        "namespaces": namespaces.describe(plan.ns_flags).split("+") if plan.ns_flags else [],
        "landlock_abi": ruleset.abi if ruleset is not None else None,
        "seccomp_profile": plan.policy.seccomp if plan.seccomp_bpf is not None else None,
        "no_new_privs": True,
        "read_only_root": bool(kinds.get("root_readonly")),
        "writable": kinds.get("bind_rw", []),
        "protected": kinds.get("bind_ro", []),
        "pinned": kinds.get("pin", []),
        "hidden": kinds.get("mask_dir", []) + kinds.get("mask_file", []),
    }


def record(argv, policy, plan, started: str, exit_code: int, error: str = "",
           network: dict | None = None, limit_hit=None) -> dict:
    """`network`: the allowlist proxy's report ({"blocked": [...], "blocked_total": N});
    `limit_hit`: the launch.limits.LimitHit that ended the command, if one did."""
    out = {
        "command": list(argv),
        "policy_digest": policy.digest() if policy is not None else None,
        "policy": policy.as_dict() if policy is not None else None,
        "start": started,
        "end": now(),
        "exit_code": exit_code,
        "signal": None,
        "setup_error": error or None,
        "protections": protections(plan) if plan is not None else None,
        "network": _network(policy, network or {}) if policy is not None else None,
        # limit -> {"value", "mechanism" (cgroup2 | cgroup1 | rlimit | tmpfs | supervisor)}
        "limits": plan.limits.applied() if plan is not None and plan.limits else None,
        "limit_hit": limit_hit.as_dict() if limit_hit is not None else None,
    }
    # PID 1 reports a command killed by signal N as 128+N, as shells do.
    if not error and exit_code > 128:
        try:
            out["signal"] = signal.Signals(exit_code - 128).name
        except ValueError:
            pass
    return out


def _network(policy, report: dict) -> dict:
    """The network mode, and for an allowlist what it allowed and what it refused."""
    out = {"mode": policy.network}
    if policy.network == "allowlist":
        out["allow"] = list(policy.network_allow)
        out["blocked"] = list(report.get("blocked", ()))
        out["blocked_total"] = report.get("blocked_total", len(out["blocked"]))
    return out


def write(out, data: dict) -> None:
    import json

    json.dump(data, out, indent=2)
    out.write("\n")
