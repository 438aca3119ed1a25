"""Policy -> launch plan: the ordered mount steps and namespace set, as plain data.

Pure functions over already-resolved paths, so the whole order is testable
without root. The launcher replays the steps exactly in this order.
"""

from dataclasses import dataclass

from nsbox.policy.model import Policy


@dataclass(frozen=True)
class MountStep:
    kind: str  # root_readonly | root_writable | tmpfs | dev | proc | bind_rw | bind_new
    target: str
    source: str = ""
    mode: int = 0


NAMESPACES_ALWAYS = ("user", "mount", "pid", "ipc", "uts", "cgroup")


def namespaces(policy: Policy) -> tuple:
    if policy.network == "host":
        return NAMESPACES_ALWAYS
    return NAMESPACES_ALWAYS + ("net",)


def writable_roots(policy: Policy, workspace: str, extra: tuple) -> tuple:
    """Resolved writable roots, workspace first, duplicates and nested repeats removed."""
    roots = ([workspace] if policy.workspace_writable else []) + list(extra)
    unique = []
    for root in roots:
        if root not in unique:
            unique.append(root)
    return tuple(unique)


def mount_steps(policy: Policy, writable: tuple, var_run_is_dir: bool = False) -> tuple:
    """The new root, in order. Later steps mount on top of earlier ones."""
    steps = []
    if policy.preset == "full-access":
        steps.append(MountStep("root_writable", "/", "/"))
    else:
        steps.append(MountStep("root_readonly", "/", "/"))
    # Private /tmp and /run come before the writable binds: a workspace under /tmp
    # must be mounted on top of the tmpfs, not hidden by it.
    steps.append(MountStep("tmpfs", "/tmp", mode=0o1777))
    # A fresh /run hides the host's D-Bus, docker, ssh-agent and gpg-agent sockets.
    steps.append(MountStep("tmpfs", "/run", mode=0o755))
    if var_run_is_dir:
        steps.append(MountStep("bind_new", "/var/run", source="/run"))
    steps.append(MountStep("dev", "/dev"))
    # Shallow roots first so a nested root is mounted on top of its parent.
    for root in sorted(writable, key=lambda p: p.count("/")):
        steps.append(MountStep("bind_rw", root, root))
    steps.append(MountStep("proc", "/proc"))
    return tuple(steps)
