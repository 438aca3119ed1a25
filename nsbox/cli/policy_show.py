"""`nsbox policy show`: the effective policy and what it resolves to on this host, as JSON.

Same options and layering as `nsbox exec`, so what it prints is what exec enforces.
It compiles the same plan as exec (nsbox.plan), so it also says which isolation
exec would get. Nothing is started, and nothing is created but nsbox's own state
directory.
"""

import json
import os
import sys

from nsbox.cli import exec_args, execute
from nsbox.errors import NsboxError
from nsbox.plan import prepare, summary
from nsbox.plan.types import FULL
from nsbox.policy import env as policy_env


def effective(args: list) -> dict:
    """The report for `nsbox policy show [exec options]`; raises UsageError or NsboxError."""
    parsed = exec_args.parse(list(args))
    values = parsed.values
    decisions = []
    policy = exec_args.policy_from_options(values, on_policy_file=decisions.append)
    source = decisions[0] if decisions else None
    # The plan exec would compile, minus what exec creates for a run.
    done = prepare.compile_plan(parsed.command or ("true",), policy, cwd=values.get("cwd"),
                                host=execute.host_facts(policy))
    plan, guard = done.plan, done.guard
    full = plan.isolation == FULL
    return {
        "policy_file": source.path if source else None,
        # {"path", "sha256", "decision": trusted | untrusted, "reason", "ignored": [...]}
        "policy_file_trust": source.as_dict() if source else None,
        "digest": prepare.policy_digest(policy),
        "policy": policy.as_dict(),
        "resolved": {
            "workspace": done.workspace,
            "isolation": plan.isolation,
            "isolation_fallback": plan.isolation_fallback or None,
            "writable": list(plan.writable),
            "namespaces": list(plan.namespaces),
            "pinned": list(guard.pinned) if full else [],
            "protected": list(guard.readonly) if full else [],
            "created_on_exec": list(guard.created) if full else [],
            "hidden": [path for path, _ in guard.hidden] if full else list(plan.hidden),
            "private_tmp": plan.private_tmp is not None,
            "env_dropped": policy_env.dropped_names(policy, dict(os.environ)),
            "mounts": [{"kind": s.kind, "target": s.target} for s in plan.mounts],
            "protections": summary.protections(plan),
            # The package managers' area and the variables that point at it (None: off).
            "cache": {"mode": done.cache.mode, "path": done.cache.path,
                      "env": dict(done.cache.env())} if done.cache else None,
        },
    }


def main(args: list) -> int:
    """Print the report; 125 with a message if the options or policy file are invalid."""
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
        sys.stderr.write(f"nsbox: {execute.FULL_ACCESS_WARNING}\n")
    print(json.dumps(report, indent=2))
    return 0
