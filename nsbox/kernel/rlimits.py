"""Per-process resource limits (setrlimit), inherited by every child of the caller."""

import resource


def lower(limits) -> None:
    """Set soft and hard limit of each (RLIMIT_NAME, value); never above the current hard limit.

    Raising a hard limit needs CAP_SYS_RESOURCE in the initial user namespace, which
    the sandbox never has; a lower existing ceiling already satisfies the limit.
    """
    for name, value in limits:
        which = getattr(resource, name)
        _, hard = resource.getrlimit(which)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        resource.setrlimit(which, (value, value))
