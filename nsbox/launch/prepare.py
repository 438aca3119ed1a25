"""Everything computed in the parent before fork: resolved paths, env, flags.

The forked children only make syscalls from this plan (no policy logic there).
"""

import os
from dataclasses import dataclass

from nsbox.errors import PolicyError
from nsbox.kernel import caps, namespaces
from nsbox.policy import plan as policy_plan
from nsbox.policy.model import Policy

_NS_FLAGS = {
    "user": namespaces.CLONE_NEWUSER, "mount": namespaces.CLONE_NEWNS,
    "pid": namespaces.CLONE_NEWPID, "ipc": namespaces.CLONE_NEWIPC,
    "uts": namespaces.CLONE_NEWUTS, "net": namespaces.CLONE_NEWNET,
    "cgroup": namespaces.CLONE_NEWCGROUP,
}


@dataclass(frozen=True)
class LaunchPlan:
    argv: tuple
    env: dict
    cwd: str
    uid: int
    gid: int
    ns_flags: int
    mounts: tuple
    hostname: str
    loopback: bool
    use_mount_api: bool
    last_cap: int
    policy: Policy
    landlock: object = None  # a Landlock ruleset, applied in the command process
    seccomp_bpf: bytes | None = None  # compiled filter, loaded last before exec


def prepare(argv, policy: Policy | None = None, cwd: str | None = None,
            env: dict | None = None) -> LaunchPlan:
    """Validate and resolve a policy for one command; raises PolicyError on bad input."""
    policy = policy or Policy()
    if not argv:
        raise PolicyError("no command given: nsbox exec [OPTIONS] -- CMD [ARGS...]")
    workspace = resolve_dir(policy.workspace or os.getcwd(), "workspace")
    extra = tuple(resolve_dir(p, "writable root") for p in policy.writable)
    workdir = resolve_dir(cwd, "working directory") if cwd else workspace
    writable = policy_plan.writable_roots(policy, workspace, extra)
    steps = policy_plan.mount_steps(
        policy, writable,
        var_run_is_dir=os.path.isdir("/var/run") and not os.path.islink("/var/run"))
    ns_flags = 0
    for name in policy_plan.namespaces(policy):
        ns_flags |= _NS_FLAGS[name]
    full_env = dict(os.environ if env is None else env)
    full_env["TMPDIR"] = "/tmp"
    full_env.update(policy.extra_env)
    return LaunchPlan(
        argv=tuple(os.fsdecode(a) for a in argv), env=full_env, cwd=workdir,
        uid=os.getuid(), gid=os.getgid(), ns_flags=ns_flags, mounts=steps,
        hostname=policy.hostname, loopback="net" in policy_plan.namespaces(policy),
        use_mount_api=os.environ.get("NSBOX_TEST_LEGACY_MOUNTS") != "1",
        last_cap=caps.last_cap(), policy=policy)


def resolve_dir(path: str, what: str) -> str:
    real = os.path.realpath(os.path.expanduser(path))
    if not os.path.exists(real):
        raise PolicyError(f"{what} {path!r} does not exist; create it or pass an existing directory")
    if not os.path.isdir(real):
        raise PolicyError(f"{what} {path!r} is not a directory")
    return real
