"""Policy + host facts -> LaunchPlan: everything computed in the parent before fork.

The isolation mode is decided here, once: a landlock-only plan has no namespaces
and no mount steps, a full one no private TMPDIR. The forked children only make
syscalls from the plan (nsbox.launch); this module never forks.
"""

import os

from nsbox import state, trace
from nsbox.errors import PolicyError, UnsupportedKernel
from nsbox.kernel import namespaces
from nsbox.plan import host as host_facts
from nsbox.plan import caches, isolation, limits, protect, seccomp_filter, watch
from nsbox.plan.types import FULL, LANDLOCK, LaunchPlan
from nsbox.policy import plan as policy_plan
from nsbox.policy.env import sandbox_env
from nsbox.policy.limits import PROFILES_WITHOUT_NAMESPACES
from nsbox.policy.model import Policy
from nsbox.record import Record, replace

_NS_FLAGS = {
    "user": namespaces.CLONE_NEWUSER, "mount": namespaces.CLONE_NEWNS,
    "pid": namespaces.CLONE_NEWPID, "ipc": namespaces.CLONE_NEWIPC,
    "uts": namespaces.CLONE_NEWUTS, "net": namespaces.CLONE_NEWNET,
    "cgroup": namespaces.CLONE_NEWCGROUP,
}


class Compiled(Record):
    """A plan before anything was created for it, and the protections it came from."""
    plan: LaunchPlan
    guard: protect.Protections
    roots: tuple  # the writable roots the policy names (before protections' additions)
    workspace: str  # resolved
    cache: caches.Area | None = None  # the package managers' area, writable too


def prepare(argv, policy: Policy | None = None, cwd: str | None = None,
            env: dict | None = None, session: bool = False, host=None) -> LaunchPlan:
    """The plan for one command (or a session's server), with its mount points made and
    its watch started; raises PolicyError / UnsupportedKernel on bad input.
    host: plan.host.HostFacts (probed here when None; `auto` needs its userns verdict)."""
    done = compile_plan(argv, policy, cwd, env, session, host)
    # Last, once every check passed: nothing is created for a run that is refused.
    caches.create(done.cache)
    protect.make_mount_points(done.guard.created)
    guard, roots = done.guard, done.roots
    if done.plan.overlay is not None:
        from nsbox.plan import overlay

        overlay.create(done.plan.overlay, done.plan.argv, policy_digest(done.plan.policy))
        # The real workspace does not change in the run: its changes are the manifest's.
        guard, roots = _outside(guard, done.workspace), tuple(
            r for r in roots if r != done.workspace)
    watched = watch.start(roots, guard.watched, guard.repos, guard.undo)
    return replace(done.plan, watch=watched)


def _outside(guard: protect.Protections, workspace: str) -> protect.Protections:
    def keep(paths):
        return tuple(p for p in paths if not policy_plan.under(p, workspace))

    return replace(guard, watched=keep(guard.watched), repos=keep(guard.repos),
                   undo=keep(guard.undo))


def compile_plan(argv, policy: Policy | None = None, cwd: str | None = None,
                 env: dict | None = None, session: bool = False, host=None) -> Compiled:
    """The plan, without creating anything but nsbox's own state directory."""
    trace.mark("prepare")
    policy = policy or Policy()
    host = host or host_facts.facts()
    if not argv:
        raise PolicyError("no command given: nsbox exec [OPTIONS] -- CMD [ARGS...]")
    workspace = resolve_dir(policy.workspace or os.getcwd(), "workspace")
    extra = tuple(resolve_dir(p, "writable root") for p in policy.writable)
    workdir = resolve_dir(cwd, "working directory") if cwd else workspace
    roots = policy_plan.writable_roots(policy, workspace, extra)
    host_env = dict(os.environ if env is None else env)
    iso = isolation.resolve(policy, host, session=session)
    full = iso.mode == FULL
    seccomp_filter.profiles.find(policy.seccomp)  # a bad profile name fails before anything
    limits_plan = limits.plan(policy.limits, host, policy.best_effort, namespaced=full,
                              nested_namespaces=policy.seccomp not in PROFILES_WITHOUT_NAMESPACES)
    net_proxy = _proxy_settings(policy, iso, host_env) if policy.network == "allowlist" else None
    own = own_dirs(os.environ)
    guard = protect.resolve(policy, workspace, roots, homes(host_env), create=False,
                            own=own, landlock_only=not full, envs=(os.environ, host_env))
    writable = roots + guard.extra_writable
    # The cache area is writable but no project: kept out of `roots` (no broad-root
    # check, git scan, watch or protected names there).
    cache = caches.locate(policy.cache, workspace, own)
    if caches.left_out(cache, [p for p, _ in guard.hidden] + list(guard.landlock_hidden),
                       writable):
        cache = None
    run = _overlay_run(policy, iso, session, own.state, workspace, roots)
    steps, ns_names, private_tmp = (), (), None
    if full:
        steps = with_test_switches(policy_plan.mount_steps(
            policy, writable,
            var_run_is_dir=os.path.isdir("/var/run") and not os.path.islink("/var/run"),
            protections=caches.with_mount(guard.steps(), cache),
            overlay=run.layers() if run else ()))
        ns_names = tuple(policy_plan.namespaces(policy))
    else:
        private_tmp = isolation.private_tmp_path()
    if cache is not None:
        writable += (cache.path,)
    ns_flags = 0
    for name in ns_names:
        ns_flags |= _NS_FLAGS[name]
    # hidden: paths Landlock must make unreadable too (e.g. the policy's hidden list).
    landlock_rules = isolation.ruleset(iso, policy, writable, private_tmp,
                                       hidden=guard.landlock_hidden)
    full_env = sandbox_env(policy, host_env, tmpdir=private_tmp or "/tmp")
    caches.apply_env(full_env, cache, chosen=(name for name, _ in policy.extra_env))
    if net_proxy is not None:
        point_at_proxy(full_env, policy, net_proxy.port)
    # A cached filter is trusted by later runs: never cache where this command can write.
    command_writes = writable + ((private_tmp,) if private_tmp else ()) + (
        ("/",) if any(step.kind == "root_writable" for step in steps) else ())
    # Without a network namespace, seccomp is what keeps inet sockets from the host's network.
    seccomp_bpf = seccomp_filter.bpf_for(
        policy, command_writes, deny_inet=policy.network == "none" and not full,
        state_dir=own.state)
    plan = LaunchPlan(
        argv=tuple(os.fsdecode(a) for a in argv), env=full_env, cwd=workdir,
        uid=os.getuid(), gid=os.getgid(), ns_flags=ns_flags, mounts=steps,
        hostname=policy.hostname if "uts" in ns_names else "",
        loopback="net" in ns_names,
        use_mount_api=host.mount_api and os.environ.get("NSBOX_TEST_LEGACY_MOUNTS") != "1",
        last_cap=host.last_cap, policy=policy, namespaces=ns_names, landlock=landlock_rules,
        isolation=iso.mode, isolation_missing=iso.missing,
        isolation_fallback=iso.fallback_reason, private_tmp=private_tmp, limits=limits_plan,
        seccomp_bpf=seccomp_bpf, net_proxy=net_proxy, writable=writable,
        hidden=_landlock_hidden(landlock_rules, guard) if not full else (), overlay=run)
    return Compiled(plan, guard, roots, workspace, cache)


def _overlay_run(policy: Policy, iso, session: bool, state_dir: str, workspace: str, roots):
    """workspace_mode overlay: the run's directories (not made yet), or None when the
    workspace is not writable anyway."""
    if policy.workspace_mode != "overlay" or workspace not in roots:
        return None
    if iso.mode != FULL:
        why = f" ({iso.fallback_reason})" if iso.fallback_reason else ""
        raise UnsupportedKernel(
            "workspace_mode overlay needs a mount namespace for the copy-on-write "
            f"workspace, which Landlock-only isolation does not have{why}. Use --isolation "
            "full on a host that allows user namespaces, or --workspace-mode direct")
    if session:
        raise PolicyError("workspace_mode overlay is not available for sessions yet; use "
                          "nsbox.run or nsbox.Popen, or workspace_mode direct")
    if policy_plan.under(os.path.realpath(state_dir), workspace):
        raise PolicyError(f"workspace_mode overlay keeps a run's layers in nsbox's state "
                          f"directory {state_dir}, which lies inside the workspace: an "
                          "overlay cannot hold its own upper layer. Set XDG_STATE_HOME to a "
                          "directory outside the workspace")
    from nsbox.plan import overlay  # only overlay runs pay for it

    return overlay.plan_run(state_dir, workspace)


def policy_digest(policy: Policy) -> str:
    """The policy's fingerprint with its paths as they take effect (symlinks resolved);
    for records, so computed only when one is written."""
    seccomp = policy.seccomp
    if "/" in seccomp:
        seccomp = os.path.realpath(seccomp)
    return replace(policy, workspace=os.path.realpath(os.path.expanduser(policy.workspace or ".")),
                   writable=tuple(os.path.realpath(os.path.expanduser(p)) for p in policy.writable),
                   seccomp=seccomp).digest()


def _landlock_hidden(ruleset, guard) -> tuple:
    # What Landlock keeps unreadable when no mount hides it.
    return tuple(guard.landlock_hidden) if ruleset is not None else ()


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

    if iso.mode == LANDLOCK:
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


def with_test_switches(steps: tuple) -> tuple:
    """NSBOX_TEST_WRITABLE_ROOT=1 mounts the host root read-write (Landlock stays on),
    so tests can show Landlock confines writes on its own. Never for real use."""
    if os.environ.get("NSBOX_TEST_WRITABLE_ROOT") != "1":
        return steps
    import sys

    sys.stderr.write("nsbox: WARNING: NSBOX_TEST_WRITABLE_ROOT=1: the host root is mounted "
                     "READ-WRITE in the sandbox; only Landlock confines writes. Test use only.\n")
    return tuple(replace(s, kind="root_writable") if s.kind == "root_readonly" else s
                 for s in steps)
