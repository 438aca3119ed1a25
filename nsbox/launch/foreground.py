"""Run one sandboxed command from the calling process, as `nsbox exec` does."""

import sys

from nsbox.launch import errorpipe, init, sequence


def run(plan) -> int:
    """Start the sandbox, wait for it, return the exit code. The caller must be single-threaded.

    The calling process itself enters the new user namespace (it only waits there),
    which spares one fork on the CLI's start-up path.
    """
    channel = sequence.Channel()
    init.watch_signals(sequence.WATCHED_SIGNALS)
    sequence.enter_namespaces(plan)
    pid1 = sequence.fork_init(plan, channel)
    failure = errorpipe.read_failure(channel.error_r)
    code = init.supervise(pid1, sequence.FORWARDED_SIGNALS, sequence.WATCHED_SIGNALS)
    if failure is not None:
        sys.stderr.write(f"nsbox: {describe(failure, plan.argv[0])}\n")
        return failure.exit_code
    return code


def describe(failure: errorpipe.Failure, command: str) -> str:
    if failure.step != "exec":
        return f"sandbox setup failed at {failure.step}: {failure.message}"
    if failure.exit_code == errorpipe.NOT_FOUND:
        return f"{command}: command not found inside the sandbox"
    return f"{command}: cannot execute: {failure.message}"
