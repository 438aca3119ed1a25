"""What a plan enforces, as reviewable data: read by the run record and `policy show`,
so both say what the launch will do (and nothing it will not)."""

from nsbox.plan.types import LANDLOCK


def protections(plan) -> dict:
    ruleset = plan.landlock
    out = {
        "isolation": plan.isolation,
        "missing": list(plan.isolation_missing),
        "fallback_reason": plan.isolation_fallback or None,
        "namespaces": list(plan.namespaces),
        "landlock_abi": ruleset.abi if ruleset is not None else None,
        "seccomp_profile": plan.policy.seccomp if plan.seccomp_bpf is not None else None,
        "no_new_privs": True,
    }
    if plan.isolation == LANDLOCK:
        # No mounts: Landlock alone decides what is writable and what is unreadable.
        out.update(read_only_root=False, private_tmp=plan.private_tmp,
                   writable=list(plan.writable) if ruleset is not None else [],
                   protected=[], pinned=[], hidden=list(plan.hidden))
        return out
    kinds = {}
    for step in plan.mounts:
        kinds.setdefault(step.kind, []).append(step.target)
    out.update(read_only_root=bool(kinds.get("root_readonly")), private_tmp=None,
               writable=kinds.get("bind_rw", []) + kinds.get("overlay", []),
               protected=kinds.get("bind_ro", []), pinned=kinds.get("pin", []),
               hidden=kinds.get("mask_dir", []) + kinds.get("mask_file", []))
    if "overlay" in kinds:  # writable inside; the real tree changes only on `nsbox apply`
        out["copy_on_write"] = kinds["overlay"]
    return out
