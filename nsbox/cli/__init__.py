"""Command-line entry point. `nsbox exec` takes a typer-free fast path (cli.execute);
everything else goes through the typer app (cli.app)."""

import sys


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if args and args[0] == "exec":
        from nsbox.cli import execute

        if argv is None:  # this process is the command's: see execute.collect_from_here
            import gc

            gc.disable()
        code = execute.run(args[1:])
        if argv is None:
            exit_now(code)
        return code
    from nsbox.cli.app import run_app

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
