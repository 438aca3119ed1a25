"""Command-line entry point. `nsbox exec` takes a typer-free fast path."""

import sys

SETUP_FAILED = 125


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if args and args[0] == "exec":
        return exec_command(args[1:])
    from nsbox.cli_app import run_app

    return run_app(args)


def exec_command(args: list) -> int:
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
    from nsbox.launch import foreground, prepare

    values = parsed.values
    try:
        policy = policy_from_options(values)
        plan = prepare.prepare(parsed.command, policy, cwd=values.get("cwd"))
        return foreground.run(plan)
    except NsboxError as err:
        sys.stderr.write(f"nsbox: {err}\n")
        return SETUP_FAILED


def policy_from_options(values: dict):
    """The one place where `nsbox exec` options become a Policy."""
    from nsbox.policy.model import Policy

    return Policy(
        preset=values.get("preset", "workspace-write"),
        workspace=values.get("workspace"),
        writable=tuple(values.get("writable", ())),
        network=values.get("network", "none"),
    )
