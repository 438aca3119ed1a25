"""Supervision shared by the sandbox's PID 1 and the CLI's caller (launch.caller).

Both block the watched signals and take them with sigwaitinfo, so a signal can't
slip in between fork and wait. A signal the terminal sent (SI_KERNEL) already
reached the whole foreground process group, the command included, so only
signals sent by a process are forwarded.
"""

import _signal as signal  # the C module: `signal` would import enum (~4 ms)
import os
import time

SI_KERNEL = 0x80
WALL_TIMEOUT = 124  # as timeout(1): the wall limit ended the command
# Python ignores these at start-up; a command must get the defaults back.
_PYTHON_IGNORED = (signal.SIGPIPE, signal.SIGXFSZ)


def _noop(signum, frame):
    pass


def watch_signals(signals) -> None:
    """Block `signals` and give them a handler (PID 1 drops default-action signals)."""
    for sig in signals:
        signal.signal(sig, _noop)
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)


def reset_signals(signals) -> None:
    """Default dispositions and an empty mask, as a freshly exec'd command expects."""
    for sig in tuple(signals) + _PYTHON_IGNORED:
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, ())


def exit_code(status: int) -> int:
    """Shell convention: a command killed by signal N gives 128+N."""
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def supervise(child: int, forwarded, watched, deadline=None, resume_stopped=False) -> int:
    """Forward signals to `child` and reap everything until `child` ends.

    At `deadline` (time.monotonic()) `child` is killed, and if that is what ended
    it, the result is WALL_TIMEOUT. Killing PID 1 ends its whole PID namespace.
    resume_stopped: `child` (a session's server) is continued whenever it stops.
    """
    killed = False
    while True:
        if deadline is None or killed:
            info = signal.sigwaitinfo(watched)
        else:
            info = signal.sigtimedwait(watched, max(0.0, deadline - time.monotonic()))
            if info is None:
                killed = _kill(child)
                continue
        if info.si_signo == signal.SIGCHLD:
            status = _reap(child, resume_stopped)
            if status is not None:
                if killed and os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
                    return WALL_TIMEOUT
                return exit_code(status)
        elif info.si_signo in forwarded and info.si_code != SI_KERNEL:
            try:
                os.kill(child, info.si_signo)
            except ProcessLookupError:
                pass


def _kill(child: int) -> bool:
    try:
        os.kill(child, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return True


def _reap(child: int, resume_stopped: bool = False):
    """Reap every exited child (orphans are re-parented to PID 1); `child`'s status if it ended."""
    found = None
    flags = os.WNOHANG | (os.WUNTRACED if resume_stopped else 0)
    while True:
        try:
            pid, status = os.waitpid(-1, flags)
        except ChildProcessError:
            return found
        if pid == 0:
            return found
        if os.WIFSTOPPED(status):
            if pid == child:
                resume(child)
        elif pid == child:
            found = status


def resume(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGCONT)
    except ProcessLookupError:
        pass
