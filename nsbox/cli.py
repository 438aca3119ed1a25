"""Command-line entry point. `nsbox exec` takes a typer-free fast path."""

import sys

SETUP_FAILED = 125


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if args and args[0] == "exec":
        code = exec_command(args[1:])
        if argv is None:
            exit_now(code)
        return code
    from nsbox.cli_app import run_app

    return run_app(args)


def exit_now(code: int) -> None:
    """Skip interpreter teardown (~7 ms on the exec path); nothing is left to clean up."""
    import os

    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:  # None when the fd was closed at start-up
                stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def exec_command(args: list) -> int:
    from nsbox.launch import trace

    trace.mark("cli")
    from nsbox import exec_args

    try:
        parsed = exec_args.parse(args)
    except exec_args.UsageError as err:
        sys.stderr.write(f"nsbox: {err}\n")
        return SETUP_FAILED
    if parsed.show_help:
        print(exec_args.help_text())
        return 0
    if not parsed.command:
        sys.stderr.write(f"nsbox: no command given\n{exec_args.USAGE}\n")
        return SETUP_FAILED
    from nsbox.errors import NsboxError
    from nsbox.launch import foreground, isolation, limits, prepare

    values = parsed.values
    status_file = values.get("json_status")
    if status_file:
        from nsbox import run_record

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
    policy_file = []  # the policy file's trust decision, if a file was used
    try:
        policy = policy_from_options(values, on_policy_file=policy_file.append)
        for decision in policy_file:
            sys.stderr.write(f"nsbox: {decision.describe()}\n")
        if policy.preset == "full-access":
            sys.stderr.write(f"nsbox: {FULL_ACCESS_WARNING}\n")
        plan = prepare.prepare(parsed.command, policy, cwd=values.get("cwd"))
        for line in isolation.report(plan) + limits.report(plan.limits):
            sys.stderr.write(f"nsbox: {line}\n")
        if plan.isolation == isolation.LANDLOCK:
            from nsbox.launch import landlock_only

            code = landlock_only.run(plan, on_limit=limit_hits.append)
        else:
            code = foreground.run(plan, on_limit=limit_hits.append, on_network=network.update)
    except NsboxError as err:
        sys.stderr.write(f"nsbox: {err}\n")
        if userns_blocked(err, policy):
            sys.stderr.write(f"nsbox: {USERNS_HINT}\n")
        code, error = SETUP_FAILED, str(err)
    changes = report_changes(plan)
    if status_file:
        try:
            run_record.write(status_target, run_record.record(
                parsed.command, policy, plan, started, code, error, network=network,
                limit_hit=limit_hits[0] if limit_hits else None, changes=changes,
                policy_file=policy_file[0] if policy_file else None))
        except OSError as err:
            sys.stderr.write(f"nsbox: cannot write --json-status {status_file}: {err.strerror}\n")
    return code


def report_changes(plan) -> tuple:
    """After the run: what changed that runs later outside the sandbox, said on stderr."""
    if plan is None or plan.watch is None:
        return ()
    from nsbox.launch import watch

    changes, _ = watch.review(plan.watch)
    line = watch.summary(changes, plan.cwd)
    if line:
        sys.stderr.write(f"nsbox: {line}\n")
    return changes


USERNS_HINT = ("hint: --isolation auto runs the command here with Landlock and seccomp only "
               "(no private /tmp, network or PID namespace); see `nsbox check`")


def userns_blocked(err, policy) -> bool:
    """The error is full isolation failing to create a user namespace."""
    from nsbox.errors import UnsupportedKernel

    return (isinstance(err, UnsupportedKernel) and policy is not None
            and policy.isolation == "full" and "user namespace" in str(err).lower())


FULL_ACCESS_WARNING = ("WARNING: preset full-access: the host filesystem is writable and the "
                       "network is the host's; only processes, IPC and the hostname are contained")


# `nsbox exec` values that are not Policy settings; every other value is one, under
# its field name (see policy.loader.merge), and must have been given on the command line.
NOT_POLICY = ("cwd", "policy", "json_status", "setenv", "limit")


def policy_from_options(values: dict, on_policy_file=None):
    """The one place where `nsbox exec` options become a Policy.

    Layers, lowest first: the preset's defaults, the policy file (narrowed unless
    trusted, see policy_files), then the flags actually given (a flag left out keeps
    the file's value). `on_policy_file` gets the file's trust Decision, if one was used.
    """
    import os

    from nsbox import policy_files
    from nsbox.policy import loader

    try:
        os.getcwd()
    except FileNotFoundError:
        from nsbox.errors import PolicyError

        raise PolicyError("the current directory no longer exists; cd to an existing "
                          "directory and run again") from None

    flags = {key: value for key, value in values.items() if key not in NOT_POLICY}
    if "setenv" in values:
        flags["extra_env"] = loader.parse_setenv(values["setenv"])
    if "limit" in values:
        from nsbox.policy.limits import parse_options

        flags["limits"] = parse_options(values["limit"])
    policy, decision = policy_files.resolve(values.get("policy"), flags)
    if decision is not None and on_policy_file is not None:
        on_policy_file(decision)
    return policy
