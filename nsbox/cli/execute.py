"""`nsbox exec`: options -> policy -> plan -> run, and the run record. The fast path:
it imports only what one run needs (typer is never loaded)."""

import sys

SETUP_FAILED = 125


def run(args: list) -> int:
    """`nsbox exec ARGS`: the exit code of the command, or 125 if nsbox refused."""
    from nsbox import trace

    trace.mark("cli")
    from nsbox.cli import exec_args

    try:
        parsed = exec_args.parse(args)
    except exec_args.UsageError as err:
        sys.stderr.write(f"nsbox: {err}\n")
        return SETUP_FAILED
    if parsed.show_help:
        print(exec_args.help_text())
        return 0
    container_config = "image" in parsed.values or "image_config" in parsed.values
    if not parsed.command and not container_config:  # an image's Cmd may give one
        sys.stderr.write(f"nsbox: no command given\n{exec_args.USAGE}\n")
        return SETUP_FAILED
    from nsbox.errors import NsboxError
    from nsbox.launch import caller, errorpipe
    from nsbox.plan import isolation, limits, prepare

    values = parsed.values
    status_file = values.get("json_status")
    if status_file:
        from nsbox.cli import run_record

        started = run_record.now()
        try:  # its directory, held now: after launch this process sees the sandbox's mounts
            status_target = run_record.open_target(status_file)
        except OSError as err:
            sys.stderr.write(f"nsbox: cannot write --json-status {status_file}: {err.strerror}\n")
            return SETUP_FAILED
    policy = plan = None
    error = ""
    network = {}  # the allowlist proxy's report
    limit_hits = []  # the resource limit that ended the command, if one did
    events = []  # what the sandbox's supervisor saw blocked (policy.denials.Denial)
    policy_file = []  # the policy file's trust decision, if a file was used
    held = None  # overlay mode: descriptors of the run's layers, taken before the launch
    starting = None  # overlay mode: what nsbox exec does while the sandbox starts
    layer = None  # rootfs_writable: the sandbox's own layer, removed after the run
    reviewer = None  # --review on a terminal: the helper that asks after the run
    git_held = None  # git dirs copy-on-write: descriptors of their layers (plan/gitsync.py)
    review = values.get("review", False)
    try:
        image_found = None
        if container_config:
            from nsbox.cli import image_options

            image_found = image_options.resolve_image(values)
        policy = exec_args.policy_from_options(values, on_policy_file=policy_file.append)
        if review and policy.workspace_mode != "overlay":
            sys.stderr.write("nsbox: --review needs --workspace-mode overlay (a direct "
                             "workspace is written as the command runs: there is nothing "
                             "to review before it lands)\n")
            return SETUP_FAILED
        for decision in policy_file:
            sys.stderr.write(f"nsbox: {decision.describe()}\n")
        if policy.preset == "full-access":
            sys.stderr.write(f"nsbox: {FULL_ACCESS_WARNING}\n")
        cwd = values.get("cwd")
        if container_config:
            policy, parsed.command, cwd, note = image_options.apply(
                values, policy, parsed.command, image_found)
            if note:
                sys.stderr.write(f"nsbox: {note}\n")
        plan = prepare.prepare(parsed.command, policy, cwd=cwd, host=host_facts(policy),
                               overlay_meta_later=True)
        collect_from_here()  # before any fork: the reviewer's, PID 1's, the command's
        for line in isolation.report(plan) + limits.report(plan.limits):
            sys.stderr.write(f"nsbox: {line}\n")
        failures = []
        if plan.rootfs_layer is not None:
            from nsbox.plan import container

            layer = container.HeldLayer(plan.rootfs_layer)
        if plan.git_layers:
            from nsbox.plan import gitsync

            git_held = gitsync.Held(plan.git_layers)
        if plan.overlay is not None:
            from nsbox.plan import overlay

            held = overlay.Held(plan.overlay)
            starting = _OverlayStart(held, plan.argv)
            if review:
                reviewer = start_review(plan.overlay)
        code = caller.run(plan, on_limit=limit_hits.append, on_network=network.update,
                          on_failure=failures.append, on_denials=events.extend,
                          while_starting=starting)
        if failures and failures[0].step != errorpipe.EXEC_STEP:
            error = errorpipe.describe(failures[0], parsed.command[0])
    except NsboxError as err:
        sys.stderr.write(f"nsbox: {err}\n")
        if userns_blocked(err, policy):
            sys.stderr.write(f"nsbox: {USERNS_HINT}\n")
        code, error = SETUP_FAILED, str(err)
    if layer is not None:
        layer.remove()
    denials = report_denials(network, limit_hits, events, quiet=values.get("quiet_denials"),
                             policy=policy)
    changes = report_changes(plan) + (report_git(git_held, plan.cwd) if git_held is not None
                                       else ())
    kept = report_overlay(held, not error, starting) if held is not None else None
    if review and kept is not None and reviewer is None and kept[1] is not None:
        sys.stderr.write(f"nsbox: --review needs a terminal (stdin and stderr); run {kept[1]} "
                         f"kept: review it with nsbox changes {kept[1]}\n")
    if status_file:
        try:
            run_record.write(status_target, run_record.record(
                parsed.command, policy, plan, started, code, error, network=network,
                limit_hit=limit_hits[0] if limit_hits else None, changes=changes,
                policy_file=policy_file[0] if policy_file else None, overlay=kept,
                denials=denials))
        except OSError as err:
            sys.stderr.write(f"nsbox: cannot write --json-status {status_file}: {err.strerror}\n")
    if reviewer is not None:
        from nsbox.cli import review as reviewing

        reviewing.finish(reviewer, kept[1] if kept is not None else None)
    return code


def collect_from_here() -> None:
    """Start-up ran with the cyclic GC off (cli.main): it only made objects that live until
    exit, and collecting them cost 1-2 ms. They are frozen out of later collections (which
    also spares PID 1 and the command process copying their pages to update GC headers);
    the long wait for the command collects as usual."""
    import gc

    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def start_review(run):
    """--review: fork the reviewer now, in the host's namespaces (None without a terminal)."""
    import os

    from nsbox.cli import review as reviewing

    if not reviewing.interactive():
        return None
    return reviewing.start(os.path.dirname(os.path.dirname(run.dir)))


def report_denials(network: dict, limit_hits: list, events: list, quiet=False,
                   policy=None) -> tuple:
    """After the run: what the walls stopped, as one stderr line and a hint per kind
    naming the policy knob (policy/hints.py), unless `quiet`."""
    if not (events or network.get("blocked") or limit_hits):
        return ()
    from nsbox.policy import denials

    found = denials.gather(network.get("blocked", ()),
                           limit_hits[0].as_dict() if limit_hits else None, events)
    if not quiet:
        sys.stderr.write(denials.summary_line(found))
        from nsbox.policy.hints import hints

        for hint in hints(found, policy):
            sys.stderr.write(f"nsbox: hint: {hint}\n")
    return found


def report_changes(plan) -> tuple:
    """After the run: what changed that runs later outside the sandbox, said on stderr."""
    if plan is None or plan.watch is None:
        return ()
    from nsbox.plan import watch

    changes, _ = watch.review(plan.watch)
    line = watch.summary(changes, plan.cwd)
    if line:
        sys.stderr.write(f"nsbox: {line}\n")
    return changes


def report_git(held, cwd: str) -> tuple:
    """After the run: the git dirs' changes applied; what was refused, on one line."""
    from nsbox.plan import gitsync

    if gitsync.drop_if_unchanged(held):
        return ()
    from nsbox.plan import gitapply

    refused = gitapply.conclude(held)
    line = gitapply.summary(refused, cwd)
    if line:
        sys.stderr.write(f"nsbox: {line}\n")
    return refused


class _OverlayStart:
    """Overlay mode, while the sandbox starts (time nsbox exec would only wait): the
    run's metadata is written and earlier runs' leftovers are removed."""

    def __init__(self, held, argv):
        self.held, self.argv, self.meta_written = held, argv, False

    def __call__(self) -> None:
        from nsbox.plan import overlay

        try:
            overlay.write_meta(self.held, self.argv)
            self.meta_written = True
        except OSError:
            pass  # tried again after the run (report_overlay)
        overlay.sweep(self.held.runs_fd)


def report_overlay(held, ran: bool, starting=None) -> tuple:
    """After an overlay run: (manifest, run id or None), said in one stderr line."""
    from nsbox.plan import overlay

    if ran and starting is not None and not starting.meta_written:
        try:
            overlay.write_meta(held, starting.argv)
        except OSError:
            pass
    try:
        entries, run_id = overlay.conclude(held, ran, defer_removal=True)
    except OSError as err:
        sys.stderr.write(f"nsbox: cannot read the run's changes in {held.run.dir}: {err}\n")
        return (), held.run.id
    if run_id is not None:
        sys.stderr.write(f"nsbox: {overlay.summary(entries)} \u2014 kept as run {run_id} "
                         f"(nsbox changes {run_id})\n")
    elif ran:
        sys.stderr.write("nsbox: no changes in the workspace (overlay)\n")
    return entries, run_id


USERNS_HINT = ("hint: --isolation auto runs the command here with Landlock and seccomp only "
               "(a private $TMPDIR, but no mount, network or PID namespace); see `nsbox check`")


def userns_blocked(err, policy) -> bool:
    """The error is full isolation failing to create a user namespace."""
    from nsbox.errors import UnsupportedKernel

    return (isinstance(err, UnsupportedKernel) and policy is not None
            and policy.isolation == "full" and "user namespace" in str(err).lower())


FULL_ACCESS_WARNING = ("WARNING: preset full-access: the host filesystem is writable and the "
                       "network is the host's; only processes, IPC and the hostname are contained")


def host_facts(policy):
    """This host's facts; `auto` also needs to know whether user namespaces work, which
    the CLI (single-threaded) probes itself."""
    from nsbox.plan import host

    if policy.isolation != "auto":
        return host.facts()
    from nsbox.launch import probe

    return host.facts(userns_blocker=probe.userns_blocker())
