"""What a plan enforces, as reviewable data: read by the run record and `policy show`,
so both say what the launch will do (and nothing it will not)."""

import posixpath

from nsbox.plan.types import LANDLOCK


def protections(plan) -> dict:
    ruleset = plan.landlock
    out = {
        "isolation": plan.isolation,
        "missing": list(plan.isolation_missing),
        "fallback_reason": plan.isolation_fallback or None,
        "namespaces": list(plan.namespaces),
        "landlock_abi": ruleset.abi if ruleset is not None else None,
        "seccomp_profile": plan.policy.seccomp if (
            plan.seccomp_bpf is not None or plan.denial_watch is not None) else None,
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
    # Container mode: an image is the root (root_image read-only, or an overlay of "/").
    out.update(read_only_root=bool(kinds.get("root_readonly") or kinds.get("root_image")),
               private_tmp=None,
               writable=kinds.get("bind_rw", []) + kinds.get("overlay", []),
               protected=kinds.get("bind_ro", []), pinned=kinds.get("pin", []),
               hidden=kinds.get("mask_dir", []) + kinds.get("mask_file", []))
    if "overlay" in kinds:  # writable inside; the real tree changes only on `nsbox apply`
        out["copy_on_write"] = kinds["overlay"]
    # The other tmpfs mounts: the policy's private_dirs and its hidden_parents (empty
    # but for the writable roots bound inside).
    private_dirs = {posixpath.normpath(p) for p in plan.policy.private_dirs}
    tmpfs = [t for t in kinds.get("tmpfs", []) if t not in ("/tmp", "/run")]
    private = [t for t in tmpfs if t in private_dirs]
    if private:
        out["private_dirs"] = private
    parents = [t for t in tmpfs if t not in private_dirs]
    if parents:
        out["hidden_parents"] = parents
    shown = [f"{s.source} -> {s.target}" for s in plan.mounts if s.kind == "bind_ro_from"]
    if shown:
        out["read_only_binds"] = shown
    return out
