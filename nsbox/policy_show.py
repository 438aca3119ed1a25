"""`nsbox policy show`: the effective policy and what it resolves to on this host, as JSON.

Same options and layering as `nsbox exec`, so what it prints is what exec enforces.
Nothing is started, and nothing is created but nsbox's own state directory.
"""

import os


def effective(args: list) -> dict:
    """The report for `nsbox policy show [exec options]`; raises UsageError or NsboxError."""
    from nsbox import cli, exec_args
    from nsbox.launch import prepare, protect
    from nsbox.policy import env as policy_env
    from nsbox.policy import plan as policy_plan

    parsed = exec_args.parse(list(args))
    values = parsed.values
    decisions = []
    policy = cli.policy_from_options(values, on_policy_file=decisions.append)
    source = decisions[0] if decisions else None
    workspace = prepare.resolve_dir(policy.workspace or os.getcwd(), "workspace")
    extra = tuple(prepare.resolve_dir(p, "writable root") for p in policy.writable)
    writable = policy_plan.writable_roots(policy, workspace, extra)
    guard = protect.resolve(policy, workspace, writable, prepare.homes(dict(os.environ)),
                            create=False, own=prepare.own_dirs(os.environ), envs=(os.environ,))
    writable += guard.extra_writable
    steps = policy_plan.mount_steps(policy, writable, protections=guard.steps())
    return {
        "policy_file": source.path if source else None,
        # {"path", "sha256", "decision": trusted | untrusted, "reason", "ignored": [...]}
        "policy_file_trust": source.as_dict() if source else None,
        "digest": policy.digest(),
        "policy": policy.as_dict(),
        "resolved": {
            "workspace": workspace,
            "writable": list(writable),
            "namespaces": list(policy_plan.namespaces(policy)),
            "pinned": list(guard.pinned),
            "protected": list(guard.readonly),
            "created_on_exec": list(guard.created),
            "hidden": [path for path, _ in guard.hidden],
            "env_dropped": policy_env.dropped_names(policy, dict(os.environ)),
            "mounts": [{"kind": s.kind, "target": s.target} for s in steps],
        },
    }


def main(args: list) -> int:
    """Print the report; 125 with a message if the options or policy file are invalid."""
    import json
    import sys

    from nsbox import exec_args
    from nsbox.errors import NsboxError

    if any(a in ("-h", "--help") for a in args):
        options = exec_args.help_text().split("\n", 3)[3]
        print("usage: nsbox policy show [EXEC OPTIONS]\n\nPrint the policy `nsbox exec` would "
              f"enforce with these options, as JSON.\n\nOptions:\n{options}")
        return 0
    try:
        report = effective(args)
    except (exec_args.UsageError, NsboxError) as err:
        sys.stderr.write(f"nsbox: {err}\n")
        return 125
    if report["policy"]["preset"] == "full-access":
        from nsbox.cli import FULL_ACCESS_WARNING

        sys.stderr.write(f"nsbox: {FULL_ACCESS_WARNING}\n")
    print(json.dumps(report, indent=2))
    return 0
