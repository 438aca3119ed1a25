"""Run one sandboxed command from the calling process, as `nsbox exec` does."""

import sys
import time

from nsbox.launch import errorpipe, init, limits, rootfs, sequence, trace


def run(plan, on_limit=None, on_network=None) -> int:
    """Start the sandbox, wait for it, return the exit code. The caller must be single-threaded.

    The calling process itself enters the new user namespace (it only waits there),
    which spares one fork on the CLI's start-up path. `on_limit(hit)` is called with
    the limits.LimitHit when a resource limit ended the command (for run records);
    `on_network(report)` with the allowlist proxy's report of refused requests.
    """
    trace.mark("launch")
    # The cgroup is made with the caller's own credentials, before the user namespace.
    active = limits.start(plan.limits)
    code, timed_out = errorpipe.SETUP_FAILED, False
    net_proxy = channel = None
    try:
        channel = sequence.Channel()
        channel.limits = active
        channel.console = rootfs.host_terminal()
        if plan.net_proxy is not None:
            from nsbox.launch import proxy as net_proxy

            # Before unshare, so that it stays in the host's network namespace.
            channel.proxy = net_proxy.start(plan.net_proxy)
        init.watch_signals(sequence.WATCHED_SIGNALS)
        sequence.enter_namespaces(plan)
        deadline = limits.deadline(plan.limits, time.monotonic())
        pid1 = sequence.fork_init(plan, channel)
        trace.mark("wait for exec")
        failure = errorpipe.read_failure(channel.error_r)
        trace.mark("wait for exit")
        code = init.supervise(pid1, sequence.FORWARDED_SIGNALS, sequence.WATCHED_SIGNALS,
                              deadline=deadline)
        timed_out = (deadline is not None and code == init.WALL_TIMEOUT
                     and time.monotonic() >= deadline)
        trace.mark("exited")
    finally:
        if net_proxy is not None:
            report = net_proxy.stop(channel.proxy)
            if on_network is not None:
                on_network(report)
        hit = limits.finish(active, code, timed_out)
        if active is not None and active.removal_failed:
            sys.stderr.write("nsbox: warning: the sandbox's cgroup could not be removed\n")
    return conclude(plan, code, failure, hit, on_limit)


def conclude(plan, code: int, failure, hit, on_limit=None) -> int:
    """How a run ended, on stderr when nsbox has something to say; the exit code."""
    if failure is not None:
        sys.stderr.write(f"nsbox: {describe(failure, plan.argv[0])}\n")
        return failure.exit_code
    if hit is not None:
        sys.stderr.write(f"nsbox: {hit.message}\n")
        if on_limit is not None:
            on_limit(hit)
    return code


def describe(failure: errorpipe.Failure, command: str) -> str:
    if failure.step != "exec":
        return f"sandbox setup failed at {failure.step}: {failure.message}"
    if failure.exit_code == errorpipe.NOT_FOUND:
        return f"{command}: command not found inside the sandbox"
    return f"{command}: cannot execute: {failure.message}"
