"""Run one sandboxed command from the calling process, as `nsbox exec` does.

Full isolation: the calling process itself enters the new namespaces (it only
waits there), which spares one fork on the CLI's start-up path, and forks the
sandbox's PID 1. Landlock-only isolation: it becomes a child subreaper, forks the
command and kills whatever the command leaves behind (launch.scope). The library's
caller is nsbox.service.relay, which uses the same steps.
"""

import os
import sys
import time

from nsbox import trace
from nsbox.launch import errorpipe, limits, pid1, rootfs, sequence
from nsbox.plan.types import LANDLOCK


def run(plan, on_limit=None, on_network=None, on_failure=None, on_denials=None,
        while_starting=None) -> int:
    """Start the sandbox, wait for it, return the exit code. The caller must be single-threaded.

    `on_limit(hit)` is called with the limits.LimitHit when a resource limit ended the
    command (for run records); `on_network(report)` with the allowlist proxy's report;
    `on_failure(failure)` with the errorpipe.Failure when the command never ran;
    `on_denials(events)` with what the denial supervisor saw blocked (policy.denials.Denial).
    `while_starting()` is called once PID 1 is forked, while the sandbox sets itself up
    (full isolation only): the caller's own housekeeping, in time it would spend waiting.
    """
    trace.mark("launch")
    if plan.isolation == LANDLOCK:
        return _run_landlock_only(plan, on_limit, on_failure, on_denials)
    # The cgroup is made with the caller's own credentials, before the user namespace.
    active = limits.start(plan.limits)
    code, timed_out, failure = errorpipe.SETUP_FAILED, False, None
    net_proxy = channel = None
    try:
        channel = sequence.Channel()
        channel.limits = active
        channel.console = rootfs.host_terminal()
        if plan.net_proxy is not None:
            from nsbox.launch import proxy as net_proxy

            # Before unshare, so that it stays in the host's network namespace.
            channel.proxy = net_proxy.start(plan.net_proxy)
        pid1.watch_signals(sequence.WATCHED_SIGNALS)
        sequence.enter_namespaces(plan)
        deadline = limits.deadline(plan.limits, time.monotonic())
        init_pid = sequence.fork_init(plan, channel)
        if while_starting is not None:
            while_starting()
        trace.mark("wait for exec")
        failure = errorpipe.read_failure(channel.error_r)
        trace.mark("wait for exit")
        code = pid1.supervise(init_pid, sequence.FORWARDED_SIGNALS, sequence.WATCHED_SIGNALS,
                              deadline=deadline)
        timed_out = _wall_expired(deadline, code)
        trace.mark("exited")
    finally:
        if channel is not None and channel.denials is not None:
            events = _denials(channel.denials.events_r)
            if on_denials is not None and events:
                on_denials(events)
        if net_proxy is not None:
            report = net_proxy.stop(channel.proxy)
            if on_network is not None:
                on_network(report)
        hit = limits.finish(active, code, timed_out)
        if active is not None and active.removal_failed:
            sys.stderr.write("nsbox: warning: the sandbox's cgroup could not be removed\n")
    return _conclude(plan, code, failure, hit, on_limit, on_failure)


def _run_landlock_only(plan, on_limit, on_failure, on_denials) -> int:
    from nsbox.launch import scope  # only this mode's runs pay for it

    pid1.watch_signals(sequence.WATCHED_SIGNALS)
    active = limits.start(plan.limits)
    code, timed_out, failure, opened = errorpipe.SETUP_FAILED, False, None, None
    try:
        opened = scope.open_scope(plan)
        error_r, error_w = scope.error_pipe()
        deadline = limits.deadline(plan.limits, time.monotonic())
        pid = scope.fork_command(plan, error_r, error_w, active, denials=opened.denials)
        # After the last fork: this process has a second thread from here on.
        scope.watch_denials(opened, plan, pid)
        failure = errorpipe.read_failure(error_r)
        code = pid1.supervise(pid, sequence.FORWARDED_SIGNALS, sequence.WATCHED_SIGNALS,
                              deadline=deadline)
        timed_out = _wall_expired(deadline, code)
    finally:
        problem = scope.close_scope(opened) if opened is not None else ""
        if opened is not None and opened.denials is not None:
            events = _denials(opened.denials.events_r)
            if on_denials is not None and events:
                on_denials(events)
        hit = limits.finish(active, code, timed_out)
        if problem:
            sys.stderr.write(f"nsbox: {problem}\n")
    return _conclude(plan, code, failure, hit, on_limit, on_failure)


def _denials(events_r: int) -> tuple:
    """What the denial supervisor (PID 1's, or this process's) reported; the pipe is
    closed here."""
    try:
        first = os.read(events_r, 1 << 16)
    except BlockingIOError:
        first = b""
    if not first:  # the usual case: nothing was blocked
        os.close(events_r)
        return ()
    from nsbox.launch import denial_watch

    collector = denial_watch.Collector()
    collector.feed(first)
    collector.feed(denial_watch.drain(events_r))
    os.close(events_r)
    return collector.result()[0]


def _wall_expired(deadline, code: int) -> bool:
    return deadline is not None and code == pid1.WALL_TIMEOUT and time.monotonic() >= deadline


def _conclude(plan, code: int, failure, hit, on_limit=None, on_failure=None) -> int:
    """How a run ended, on stderr when nsbox has something to say; the exit code."""
    if failure is not None:
        sys.stderr.write(f"nsbox: {errorpipe.describe(failure, plan.argv[0])}\n")
        if on_failure is not None:
            on_failure(failure)
        return failure.exit_code
    if hit is not None:
        sys.stderr.write(f"nsbox: {hit.message}\n")
        if on_limit is not None:
            on_limit(hit)
    return code
