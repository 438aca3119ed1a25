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
    from nsbox.launch import foreground, isolation, prepare

    values = parsed.values
    status_file = values.get("json_status")
    if status_file:
        from nsbox import run_record

        started = run_record.now()
        try:  # opened now: after launch this process sees the sandbox's mounts, not the host's
            status_out = open(status_file, "w")
        except OSError as err:
            sys.stderr.write(f"nsbox: cannot write --json-status {status_file}: {err.strerror}\n")
            return SETUP_FAILED
    policy = plan = None
    error = ""
    network = {}  # the allowlist proxy's report
    limit_hits = []  # the resource limit that ended the command, if one did
    try:
        policy = policy_from_options(values)
        if policy.preset == "full-access":
            sys.stderr.write(f"nsbox: {FULL_ACCESS_WARNING}\n")
        plan = prepare.prepare(parsed.command, policy, cwd=values.get("cwd"))
        for line in isolation.report(plan):
            sys.stderr.write(f"nsbox: {line}\n")
        if plan.isolation == isolation.LANDLOCK:
            from nsbox.launch import landlock_only

            code = landlock_only.run(plan, on_limit=limit_hits.append)
        else:
            code = foreground.run(plan, on_limit=limit_hits.append, on_network=network.update)
    except NsboxError as err:
        sys.stderr.write(f"nsbox: {err}\n")
        code, error = SETUP_FAILED, str(err)
    if status_file:
        with status_out:
            run_record.write(status_out, run_record.record(
                parsed.command, policy, plan, started, code, error, network=network,
                limit_hit=limit_hits[0] if limit_hits else None))
    return code


FULL_ACCESS_WARNING = ("WARNING: preset full-access: the host filesystem is writable and the "
                       "network is the host's; only processes, IPC and the hostname are contained")


# `nsbox exec` values that are not Policy settings; every other value is one, under
# its field name (see policy.loader.merge), and must have been given on the command line.
NOT_POLICY = ("cwd", "policy", "json_status", "setenv", "limit")


def policy_from_options(values: dict):
    """The one place where `nsbox exec` options become a Policy.

    Layers, lowest first: the preset's defaults, the policy file, then the flags
    actually given (a flag left out keeps the file's value).
    """
    from nsbox import policy_files
    from nsbox.policy import loader

    flags = {key: value for key, value in values.items() if key not in NOT_POLICY}
    if "setenv" in values:
        flags["extra_env"] = loader.parse_setenv(values["setenv"])
    if "limit" in values:
        from nsbox.policy.limits import parse_options

        flags["limits"] = parse_options(values["limit"])
    layers = []
    path = policy_files.find(values.get("policy"), values.get("workspace"))
    if path:
        layers.append(policy_files.load(path, values.get("workspace")))
    layers.append(flags)
    return loader.merge(layers)
