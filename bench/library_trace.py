"""Traced library launches, for bench.py: `library_trace.py run|fresh|session RUNS`.

Runs with NSBOX_TRACE=1 and NSBOX_TRACE_FD=1 in the workspace, so every mark,
including the "call"/"returned" pair around each launch, lands on stdout; the marks
made after the sandbox took over stdio arrive in the command's output and are copied.
Exits 3 with a reason on stderr when the library API is not there yet.
"""

import os
import sys

import nsbox  # the install bench.py runs with (not the source tree: see bench/run.sh)
from nsbox import trace

WARMUP = 3


def main(mode: str, runs: int) -> int:
    if not trace.ENABLED:
        sys.stderr.write("set NSBOX_TRACE=1\n")
        return 2
    if mode in ("run", "fresh"):
        if not hasattr(nsbox, "run"):
            sys.stderr.write("nsbox.run does not exist yet\n")
            return 3
        prewarm = mode == "run"
        launch, close = (lambda: nsbox.run(["true"], prewarm=prewarm)), (lambda: None)
    else:
        if not hasattr(nsbox, "Session"):
            sys.stderr.write("nsbox.Session does not exist yet\n")
            return 3
        session = nsbox.Session()
        if hasattr(session, "__enter__"):
            session = session.__enter__() or session
        launch = lambda: session.run(["true"])  # noqa: E731
        close = getattr(session, "close", None) or (lambda: session.__exit__(None, None, None))
    try:
        for i in range(WARMUP + runs):
            if i >= WARMUP:
                trace.mark("call")
            result = launch()
            if i >= WARMUP:
                # Marks made in the launcher and the sandbox after stdio was handed over
                # went to the command's own output.
                output = (result.stdout or b"") + (result.stderr or b"")
                for line in output.splitlines(keepends=True):
                    if line.startswith(b"nsbox-trace "):
                        os.write(1, line)
                trace.mark("returned")
            code = getattr(result, "returncode", 0)
            if code != 0:
                sys.stderr.write(f"true exited {code}\n")
                return 1
    finally:
        close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2])))
