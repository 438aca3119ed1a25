"""Opt-in stage timing for the launch sequence (NSBOX_TRACE=1). A no-op otherwise.

Marks happen in the caller, in the sandbox's PID 1 and in the command process,
so each one is a single write of one line to an fd they all inherit: the fd
named by NSBOX_TRACE_FD, else stderr. A line reads

    nsbox-trace <CLOCK_MONOTONIC ns> <pid as seen by the marker> <stage>

and means "`stage` starts now". The command process closes the fd at exec.
"""

import os

PREFIX = "nsbox-trace"
ENABLED = os.environ.get("NSBOX_TRACE", "") not in ("", "0")


def _off(stage: str) -> None:
    pass


def _on(stage: str) -> None:
    try:
        os.write(_fd, f"{PREFIX} {_clock()} {os.getpid()} {stage}\n".encode())
    except OSError:
        pass  # a closed trace fd must never break a launch


def _trace_fd() -> int:
    try:
        return int(os.environ.get("NSBOX_TRACE_FD", "2"))
    except ValueError:
        return 2


if ENABLED:
    import time

    _clock = time.monotonic_ns
    _fd = _trace_fd()
    mark = _on
else:
    mark = _off


def parse(text: str) -> list:
    """Trace lines in `text` as (ns, pid, stage) tuples, in time order; other lines are skipped."""
    records = []
    for line in text.splitlines():
        parts = line.split(" ", 3)
        if len(parts) == 4 and parts[0] == PREFIX and parts[1].isdigit() and parts[2].isdigit():
            records.append((int(parts[1]), int(parts[2]), parts[3]))
    records.sort()
    return records
