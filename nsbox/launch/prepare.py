"""Everything computed in the parent before fork: resolved paths, env, flags.

The forked children only make syscalls from this plan (no policy logic there).
"""

import os
from nsbox.record import Record

from nsbox.errors import PolicyError, UnsupportedKernel
from nsbox.kernel import caps, mounts, namespaces
from nsbox import state
from nsbox.launch import isolation, limits, protect, seccomp_filter, trace, watch
from nsbox.policy import plan as policy_plan
from nsbox.policy.env import sandbox_env
from nsbox.policy.limits import PROFILES_WITHOUT_NAMESPACES
from nsbox.policy.model import Policy

_NS_FLAGS = {
    "user": namespaces.CLONE_NEWUSER, "mount": namespaces.CLONE_NEWNS,
    "pid": namespaces.CLONE_NEWPID, "ipc": namespaces.CLONE_NEWIPC,
    "uts": namespaces.CLONE_NEWUTS, "net": namespaces.CLONE_NEWNET,
    "cgroup": namespaces.CLONE_NEWCGROUP,
}


class LaunchPlan(Record):
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
    isolation: str = "full"  # what this run achieves: full | landlock
    isolation_missing: tuple = ()  # protections left out under best effort, in words
    isolation_fallback: str = ""  # why `auto` settled for less than full
    private_tmp: str | None = None  # landlock isolation: per-run TMPDIR, created and removed
    limits: object = None  # launch.limits.LimitsPlan: resource limits and their mechanisms
    net_proxy: object = None  # policy.netallow.ProxySettings for network "allowlist"
    watch: object = None  # watch.Watch: what to compare after the run


def prepare(argv, policy: Policy | None = None, cwd: str | None = None,
            env: dict | None = None, session: bool = False) -> LaunchPlan:
    """Validate and resolve a policy for one command (or a session's server); raises
    PolicyError on bad input."""
    trace.mark("prepare")
    policy = policy or Policy()
    if not argv:
        raise PolicyError("no command given: nsbox exec [OPTIONS] -- CMD [ARGS...]")
    workspace = resolve_dir(policy.workspace or os.getcwd(), "workspace")
    extra = tuple(resolve_dir(p, "writable root") for p in policy.writable)
    workdir = resolve_dir(cwd, "working directory") if cwd else workspace
    writable = policy_plan.writable_roots(policy, workspace, extra)
    host_env = dict(os.environ if env is None else env)
    iso = isolation.resolve(policy, session=session)
    # Everything that can fail comes before the mount points are made (at the end).
    seccomp_filter.profiles.find(policy.seccomp)
    limits_plan = limits.plan(policy.limits, policy.best_effort,
                              namespaced=iso.mode != isolation.LANDLOCK,
                              nested_namespaces=policy.seccomp not in PROFILES_WITHOUT_NAMESPACES)
    net_proxy = None
    if policy.network == "allowlist":
        net_proxy = _proxy_settings(policy, iso, host_env)
    own = own_dirs(os.environ)
    guard = protect.resolve(policy, workspace, writable, homes(host_env), create=False,
                            own=own, landlock_only=iso.mode == isolation.LANDLOCK,
                            envs=(os.environ, host_env))
    roots = writable
    writable += guard.extra_writable
    steps = policy_plan.mount_steps(
        policy, writable,
        var_run_is_dir=os.path.isdir("/var/run") and not os.path.islink("/var/run"),
        protections=guard.steps())
    ns_flags = 0
    for name in policy_plan.namespaces(policy):
        ns_flags |= _NS_FLAGS[name]
    private_tmp = isolation.private_tmp_path() if iso.mode == isolation.LANDLOCK else None
    steps = isolation.with_test_switches(steps)
    # hidden: paths Landlock must make unreadable too (e.g. the policy's hidden list).
    landlock_rules = isolation.ruleset(iso, policy, writable, private_tmp,
                                       hidden=guard.landlock_hidden)
    full_env = sandbox_env(policy, host_env, tmpdir=private_tmp or "/tmp")
    if net_proxy is not None:
        point_at_proxy(full_env, policy, net_proxy.port)
    # A cached filter is trusted by later runs: never cache where this command can write.
    command_writes = writable + ((private_tmp,) if private_tmp else ()) + (
        ("/",) if any(step.kind == "root_writable" for step in steps) else ())
    # Without a network namespace, seccomp is what keeps inet sockets from the host's network.
    seccomp_bpf = seccomp_filter.bpf_for(
        policy, command_writes,
        deny_inet=policy.network == "none" and iso.mode == isolation.LANDLOCK,
        state_dir=own.state)
    protect.make_mount_points(guard.created)
    watched = watch.start(roots, guard.watched, guard.repos, guard.undo)
    return LaunchPlan(
        argv=tuple(os.fsdecode(a) for a in argv), env=full_env, cwd=workdir,
        uid=os.getuid(), gid=os.getgid(), ns_flags=ns_flags, mounts=steps,
        hostname=policy.hostname, loopback="net" in policy_plan.namespaces(policy),
        use_mount_api=(os.environ.get("NSBOX_TEST_LEGACY_MOUNTS") != "1"
                       and mounts.has_mount_api()),
        last_cap=caps.last_cap(), policy=policy, landlock=landlock_rules,
        isolation=iso.mode, isolation_missing=iso.missing,
        isolation_fallback=iso.fallback_reason, private_tmp=private_tmp, limits=limits_plan,
        seccomp_bpf=seccomp_bpf, net_proxy=net_proxy, watch=watched)


def homes(env: dict) -> tuple:
    """The user's home directories: the password database's, nsbox's $HOME and the
    command's, where they differ."""
    return (state.password_home(), os.environ.get("HOME", ""), env.get("HOME", ""))


def own_dirs(env) -> protect.OwnDirs:
    """nsbox's own directories (of this process's environment, not the command's); the
    state directory is made first so that every run hides it."""
    return protect.OwnDirs(state=state.ensure_state_dir(env), config=state.config_dir(env),
                           cache=state.cache_dir(env))


def _proxy_settings(policy: Policy, iso, host_env: dict):
    from nsbox.policy import netallow

    if iso.mode == isolation.LANDLOCK:
        # Without a network namespace the command's sockets are the host's: a proxy
        # port on the host loopback would not stop it from connecting anywhere else.
        why = f" ({iso.fallback_reason})" if iso.fallback_reason else ""
        raise UnsupportedKernel(
            "network 'allowlist' needs the sandbox's own network namespace, which "
            f"Landlock-only isolation does not have{why}. Use --isolation full on a host "
            "that allows user namespaces, or --network none")
    overrides = ()
    test_resolve = host_env.get("NSBOX_TEST_RESOLVE")
    if test_resolve:
        import sys

        try:
            overrides = netallow.parse_test_resolve(test_resolve)
        except ValueError as err:
            raise PolicyError(str(err)) from None
        sys.stderr.write("nsbox: WARNING: NSBOX_TEST_RESOLVE is set: the network proxy "
                         "resolves those names to the given addresses. Test use only.\n")
    return netallow.ProxySettings(allow=policy.network_allow, overrides=overrides)


def point_at_proxy(env: dict, policy: Policy, port: int) -> None:
    """Proxy variables override the caller's (its proxy is out of reach), not --setenv."""
    from nsbox.policy import netallow

    chosen = {name for name, _ in policy.extra_env}
    for name, value in netallow.proxy_env(port).items():
        if name not in chosen:
            env[name] = value


def resolve_dir(path: str, what: str) -> str:
    real = os.path.realpath(os.path.expanduser(path))
    if not os.path.exists(real):
        raise PolicyError(f"{what} {path!r} does not exist; create it or pass an existing directory")
    if not os.path.isdir(real):
        raise PolicyError(f"{what} {path!r} is not a directory")
    return real
