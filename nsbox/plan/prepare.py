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
from nsbox.plan.types import FULL, LaunchPlan
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
            env: dict | None = None, session: bool = False, host=None,
            overlay_meta_later: bool = False) -> LaunchPlan:
    """The plan for one command (or a session's server), with its mount points made and
    its watch started; raises PolicyError / UnsupportedKernel on bad input.
    host: plan.host.HostFacts (probed here when None; `auto` needs its userns verdict).
    overlay_meta_later: the caller writes an overlay run's metadata (overlay.write_meta)."""
    done = compile_plan(argv, policy, cwd, env, session, host)
    # Last, once every check passed: nothing is created for a run that is refused.
    caches.create(done.cache)
    protect.make_mount_points(done.guard.created)
    guard, roots = done.guard, done.roots
    if done.plan.rootfs_layer is not None:
        from nsbox.plan import container

        container.create_layer(done.plan.rootfs_layer, done.plan.policy.rootfs)
    if done.plan.overlay is not None:
        from nsbox.plan import overlay

        overlay.create(done.plan.overlay, done.plan.argv,  # the digest only if kept
                       meta=not overlay_meta_later)
        # The real workspace and extra roots do not change in the run: their changes
        # are the manifest's.
        overlaid = tuple(layer[0] for layer in done.plan.overlay.layers())
        guard, roots = _outside(guard, overlaid), tuple(
            r for r in roots if not any(policy_plan.under(r, o) for o in overlaid))
    if guard.git_layers:  # git dirs copy-on-write: applied after the run (gitapply)
        from nsbox.plan import gitsync

        gitsync.create(guard.git_layers)
    watched = watch.start(roots, guard.watched, guard.repos, guard.undo)
    return replace(done.plan, watch=watched, git_layers=guard.git_layers)


def _outside(guard: protect.Protections, overlaid: tuple) -> protect.Protections:
    def keep(paths):
        return tuple(p for p in paths if not any(policy_plan.under(p, o) for o in overlaid))

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
    if cwd and policy.rootfs and _in_image(cwd, (workspace,) + extra):
        workdir = os.path.normpath(cwd)  # the image's own directory, made if it lacks it
    else:
        workdir = resolve_dir(cwd, "working directory") if cwd else workspace
    roots = policy_plan.writable_roots(policy, workspace, extra)
    host_env = dict(os.environ if env is None else env)
    iso = isolation.resolve(policy, host, session=session)
    full = iso.mode == FULL
    seccomp_filter.profiles.find(policy.seccomp)  # a bad profile name fails before anything
    limits_plan = limits.plan(policy.limits, host, policy.best_effort, namespaced=full,
                              nested_namespaces=policy.seccomp not in PROFILES_WITHOUT_NAMESPACES)
    net_proxy = None
    if policy.network == "allowlist":
        from nsbox.plan import proxy_settings

        net_proxy = proxy_settings.settings(policy, iso, host_env)
    own = own_dirs(os.environ)
    guard = protect.resolve(policy, workspace, roots, homes(host_env), create=False,
                            own=own, landlock_only=not full, envs=(os.environ, host_env))
    if guard.repos and not getattr(policy, "rootfs", None):
        from nsbox.plan import gitsync  # only runs with a git dir in a writable root pay

        guard = gitsync.protections_with(guard, gitsync.plan(
            guard.repos, roots, own.state, copy_on_write=full,
            skip_under=roots if policy.workspace_mode == "overlay" else ()))
    writable = roots + guard.extra_writable
    parents = _hidden_parents(policy, writable)
    # The cache area is writable but no project: kept out of `roots` (no broad-root
    # check, git scan, watch or protected names there).
    cache = caches.locate(policy.cache, workspace, own)
    if caches.left_out(cache, [p for p, _ in guard.hidden] + list(guard.landlock_hidden),
                       writable):
        cache = None
    run = _overlay_run(policy, iso, session, own.state, workspace, roots)
    if run is not None:  # a root inside an overlaid one is part of that one's overlay
        overlaid = run.layers()
        writable = tuple(w for w in writable if w not in roots or not any(
            policy_plan.under(w, o[0]) and w != o[0] for o in overlaid))
    steps, ns_names, private_tmp = (), (), None
    container = None
    if policy.rootfs_writable and not policy.rootfs:
        raise PolicyError("rootfs_writable needs a rootfs (--rootfs DIR or --image NAME)")
    if policy.root_inside and not full and not policy.rootfs:
        from nsbox.plan import container as container_plan

        container_plan.refuse_without_namespaces(iso, "--root-inside")
    if policy.rootfs:
        from nsbox.plan import container as container_plan  # only container mode pays for it

        if not full:
            container_plan.refuse_without_namespaces(iso, "container mode (--rootfs or --image)")
        container = container_plan.plan_root(
            policy, writable, caches.with_mount(guard.steps(), cache), guard.hidden,
            guard.denied, homes(host_env), own.state, overlay=run.layers() if run else (),
            workdir=workdir, workspace=workspace)
    if container is not None:
        if policy.private_dirs or policy.read_only_binds or policy.hidden_parents:
            raise PolicyError("private_dirs, read_only_binds and hidden_parents do not work "
                              "with a rootfs "
                              "(container mode) yet; remove them or the rootfs")
        steps = container.steps
        ns_names = tuple(policy_plan.namespaces(policy))
    elif full:
        steps = with_test_switches(policy_plan.mount_steps(
            policy, writable,
            var_run_is_dir=os.path.isdir("/var/run") and not os.path.islink("/var/run"),
            protections=caches.with_mount(guard.steps(), cache),
            overlay=run.layers() if run else (), read_only_binds=_mount_points(policy),
            hidden_parents=tuple(p for p in parents if not any(
                policy_plan.under(p, t) for t in policy_plan.PRIVATE_TREES))))
        ns_names = tuple(policy_plan.namespaces(policy))
    else:
        if policy.private_dirs or policy.read_only_binds:
            raise PolicyError("private_dirs and read_only_binds need full isolation (a mount "
                              "namespace), and this run has landlock-only isolation; remove "
                              "them or run where user namespaces work")
        private_tmp = isolation.private_tmp_path()
    if cache is not None:
        writable += (cache.path,)
    ns_flags = 0
    for name in ns_names:
        ns_flags |= _NS_FLAGS[name]
    # PID 1 makes the mount namespace: the caller's view stays the host's, where its
    # own lazy imports come from (nsbox installed under /tmp, which PID 1 covers).
    own_mount_ns = "mount" in ns_names
    if own_mount_ns:
        ns_flags &= ~namespaces.CLONE_NEWNS
    # hidden: paths Landlock must make unreadable too (e.g. the policy's hidden list).
    # rootfs_writable: all of / is the sandbox's own copy-on-write layer.
    # Landlock-only: a hidden parent is denied as hidden paths are, while each writable
    # root inside keeps its own rule.
    landlock_hidden = guard.landlock_hidden + (tuple(parents) if not full else ())
    landlock_rules = isolation.ruleset(
        iso, policy, writable + (("/",) if container and policy.rootfs_writable else ()),
        private_tmp, hidden=landlock_hidden)
    full_env = sandbox_env(policy, host_env, tmpdir=private_tmp or "/tmp")
    caches.apply_env(full_env, cache, chosen=(name for name, _ in policy.extra_env))
    if net_proxy is not None:
        proxy_settings.point_at_proxy(full_env, policy, net_proxy.port)
    # A cached filter is trusted by later runs: never cache where this command can write.
    command_writes = writable + ((private_tmp,) if private_tmp else ()) + (
        ("/",) if any(step.kind == "root_writable" for step in steps) else ())
    denial_watch = _denial_watch(policy, full, steps, landlock_rules, writable,
                                 command_writes, own.state,
                                 landlock_hidden=() if full else landlock_hidden)
    # The plain filter, for what does not report: every process when nothing does, else
    # the network forwarder (the command loads the reporting variant instead).
    seccomp_bpf = None
    if denial_watch is None or net_proxy is not None:
        # Without a network namespace, seccomp keeps inet sockets from the host's network.
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
        denial_watch=denial_watch,
        hidden=_landlock_hidden(landlock_rules, landlock_hidden) if not full else (),
        overlay=run,
        rootfs_layer=container.layer if container is not None else None,
        own_mount_ns=own_mount_ns)
    return Compiled(plan, guard, roots, workspace, cache)


def _denial_watch(policy: Policy, full: bool, steps, landlock_rules, writable, command_writes,
                  state_dir: str, landlock_hidden=()):
    """The reporting variant of the seccomp filter (plan/denial_rules.py), or None.
    Full isolation: the sandbox's PID 1 supervises it; landlock-only: the caller
    (launch/scope.py). In container mode the rules are the image root's mounts and
    Landlock grants. landlock_hidden: landlock-only's hidden paths (no mounts say them)."""
    if not policy.report_denials:
        return None
    from nsbox.plan import denial_rules

    program, syscalls = seccomp_filter.bpf_for(
        policy, command_writes, state_dir=state_dir, report=denial_rules.notified(full),
        # As the plain filter: without a network namespace, inet sockets are denied.
        deny_inet=policy.network == "none" and not full)
    rules = denial_rules.rules_for(steps, landlock_rules, writable)
    if full:
        rules = replace(rules, network=policy.network, private_run=True)
    if landlock_hidden:
        hidden = (os.path.realpath(os.path.expanduser(h)) for h in landlock_hidden)
        rules = replace(rules, hidden=tuple(dict.fromkeys(rules.hidden + tuple(hidden))))
    return denial_rules.DenialWatch(
        program, tuple(sorted((nr, name, errno) for nr, (name, errno) in syscalls.items())),
        rules)


def _in_image(cwd: str, host_trees: tuple) -> bool:
    """Container mode: an absolute cwd outside the trees bound from the host names a
    directory of the image."""
    return os.path.isabs(cwd) and not any(
        policy_plan.under(os.path.normpath(cwd), t) for t in host_trees)


def _overlay_run(policy: Policy, iso, session: bool, state_dir: str, workspace: str, roots):
    """workspace_mode overlay: the run's directories (not made yet), or None when
    nothing is writable anyway. The workspace and the policy's extra writable roots are
    overlaid; a root inside another is part of that one's overlay."""
    if policy.workspace_mode != "overlay" or not roots:
        return None
    if workspace not in roots:
        raise PolicyError(f"workspace_mode overlay with a read-only workspace would leave the "
                          f"writable root {roots[0]} written directly; make the workspace "
                          "writable, or use --workspace-mode direct")
    extra = [r for r in roots if r != workspace]
    holding = [r for r in extra if policy_plan.under(workspace, r)]
    if holding:
        raise PolicyError(f"workspace_mode overlay: writable root {holding[0]} holds the "
                          f"workspace {workspace}; the workspace's copy-on-write layer cannot "
                          "lie inside another root's. Make that directory the workspace, or "
                          "leave it out of --writable")
    extra = [r for r in extra if not policy_plan.under(r, workspace) and not any(
        policy_plan.under(r, o) and r != o for o in extra)]
    if iso.mode != FULL:
        why = f" ({iso.fallback_reason})" if iso.fallback_reason else ""
        raise UnsupportedKernel(
            "workspace_mode overlay needs a mount namespace for the copy-on-write "
            f"workspace, which Landlock-only isolation does not have{why}. Use --isolation "
            "full on a host that allows user namespaces, or --workspace-mode direct")
    real_state = os.path.realpath(state_dir)
    for root in [workspace] + extra:
        if policy_plan.under(real_state, root):
            what = "the workspace" if root == workspace else f"writable root {root}"
            raise PolicyError(f"workspace_mode overlay keeps a run's layers in nsbox's state "
                              f"directory {state_dir}, which lies inside {what}: an overlay "
                              "cannot hold its own upper layer. Set XDG_STATE_HOME to a "
                              "directory outside the workspace and writable roots")
    from nsbox.plan import overlay  # only overlay runs pay for it

    return overlay.plan_run(state_dir, workspace, policy, tuple(extra))


def policy_digest(policy: Policy) -> str:
    """The policy's fingerprint with its paths as they take effect (symlinks resolved);
    for records, so computed only when one is written."""
    seccomp = policy.seccomp
    if "/" in seccomp:
        seccomp = os.path.realpath(seccomp)
    return replace(policy, workspace=os.path.realpath(os.path.expanduser(policy.workspace or ".")),
                   writable=tuple(os.path.realpath(os.path.expanduser(p)) for p in policy.writable),
                   seccomp=seccomp).digest()


def _landlock_hidden(ruleset, hidden) -> tuple:
    # What Landlock keeps unreadable when no mount hides it.
    return tuple(hidden) if ruleset is not None else ()


def _hidden_parents(policy: Policy, writable: tuple) -> tuple:
    """The policy's hidden parents that exist, resolved, and the other mounts that show
    them; one inside a writable root is refused (hiding a path there is `hidden`'s job)."""
    found = []
    for path in policy.hidden_parents:
        real = os.path.realpath(path)
        if not os.path.isdir(real):
            continue  # nothing there to hide
        inside = [r for r in writable if policy_plan.under(real, r) and real != r]
        if inside:
            raise PolicyError(f"hidden_parents: {path!r} lies inside writable root {inside[0]}; "
                              "hide it with `hidden` instead, or choose another directory")
        found.append(real)
    if found:  # another mount of one (a second bind of /var/tmp) would show it too
        from nsbox.kernel import mountinfo

        try:
            found += [alias for alias, _, _ in mountinfo.elsewhere([(p, True) for p in found])]
        except OSError as err:
            if not policy.best_effort:
                raise UnsupportedKernel(f"cannot check where else hidden_parents are mounted "
                                        f"({err}). Pass --best-effort to run without that "
                                        "check") from None
    return tuple(dict.fromkeys(found))


def homes(env: dict) -> tuple:
    """The user's home directories: the password database's, nsbox's $HOME and the
    command's, where they differ."""
    return (state.password_home(), os.environ.get("HOME", ""), env.get("HOME", ""))


def own_dirs(env) -> protect.OwnDirs:
    """nsbox's own directories (of this process's environment, not the command's); the
    state directory is made first so that every run hides it."""
    return protect.OwnDirs(state=state.ensure_state_dir(env), config=state.config_dir(env),
                           cache=state.cache_dir(env))


def _mount_points(policy: Policy) -> tuple:
    """The checked (host dir, path) pairs of read_only_binds. Private dirs and bind
    targets must be real directories of the host (no link to follow while mounting),
    or lie in a private dir, where the mount point is made."""
    private = tuple(os.path.normpath(p) for p in policy.private_dirs)
    for path in private:
        if os.path.realpath(path) != path or not os.path.isdir(path):
            raise PolicyError(f"private_dirs: {path!r} must be an existing directory (not a "
                              "link or under one)")
    binds = []
    for entry in policy.read_only_binds:
        source, _, target = entry.partition(":")
        target = os.path.normpath(target)
        in_private = any(policy_plan.under(target, p) and target != p for p in private)
        if not in_private and (os.path.realpath(target) != target or not os.path.isdir(target)):
            raise PolicyError(f"read_only_binds: {target!r} must be an existing directory (not "
                              "a link or under one), or lie in one of private_dirs")
        binds.append((resolve_dir(source, "read_only_binds source"), target))
    return tuple(binds)


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
