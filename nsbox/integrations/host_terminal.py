"""A command of an nsbox Session on a terminal made here, on the host.

The sandbox gets only the pty's secondary end, as the command's stdin, stdout and
stderr, and `setsid -c` makes it the command's controlling terminal (so ^C and job
control work). Nothing of the host's /dev/pts is opened to the sandbox, so this
works under landlock-only isolation too. The primary end stays here: closing it
hangs the terminal up for everything on it.
"""

import os
import termios

# $@ in a session of its own with stdin (the pty) as its controlling terminal, and its
# exit status as the shell reports it (128 + N for signal N). Run as the shell's child,
# setsid is no process group leader and need not fork (the `exit` keeps the shell from
# exec'ing it in its place).
ON_TERMINAL = ["sh", "-c", 'setsid -c "$@"; exit $?', "nsbox-pty"]


def start(sandbox, argv, *, cwd=None, extra_env=None, plain: bool = False):
    """Start `argv` in `sandbox` (an nsbox Session) on a new terminal; returns (its
    Popen, the terminal's primary end). Blocks until the command started.
    `plain`: a terminal that neither echoes what is typed, nor collects it into lines,
    nor turns "\\n" into "\\r\\n" (for output read back as text)."""
    primary, secondary = os.openpty()
    try:
        if plain:
            attrs = termios.tcgetattr(secondary)
            attrs[1] &= ~termios.OPOST
            attrs[3] &= ~(termios.ECHO | termios.ECHONL | termios.ICANON)
            termios.tcsetattr(secondary, termios.TCSANOW, attrs)
        proc = sandbox.popen([*ON_TERMINAL, *argv], cwd=cwd, extra_env=extra_env,
                             stdin=secondary, stdout=secondary, stderr=secondary)
    except BaseException:
        os.close(primary)
        raise
    finally:
        os.close(secondary)
    return proc, primary
