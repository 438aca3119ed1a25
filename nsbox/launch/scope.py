"""Landlock-only confinement: no namespaces at all.

For hosts where user namespaces are unavailable (containers, AppArmor's userns
restriction, WSL). Landlock confines writes to the workspace and a per-run
TMPDIR and denies TCP; seccomp (when compiled) denies inet sockets; the caller
is a child subreaper, so whatever the command leaves behind is re-parented to it
and killed when the command returns.

caller:   cgroup -> open_scope (subreaper, create TMPDIR) -> fork_command
          -> watch_denials (the denial supervisor's thread) -> wait
          -> close_scope (kill leftovers, final denial events, remove TMPDIR) -> remove cgroup
command:  join the cgroup -> chdir -> fds -> rlimits -> drop capabilities (root only)
          -> no_new_privs
          -> parent-death signal -> Landlock -> seccomp -> exec (or serve a session)

The CLI's caller (launch.caller) and the library's (nsbox.service.relay) both use
open_scope / fork_command / close_scope. In a library session the command
process is the session server (nsbox.service.session_server): its commands share the
TMPDIR, and everything is killed and the TMPDIR removed when the session ends.
"""

import _signal as signal  # the C module: `signal` imports enum, in every relay
import os
import stat

from nsbox.errors import SandboxError
from nsbox.kernel import proc
from nsbox.launch import errorpipe, limits, sequence


def error_pipe() -> tuple:
    """(read end, write end) for the command's failure record."""
    return os.pipe2(os.O_CLOEXEC)


class Scope:
    """What a landlock-only run changed in its caller, for close_scope to undo."""

    __slots__ = ("tmp", "was_subreaper", "earlier_children", "denials", "finish_denials")

    def __init__(self, was_subreaper: bool, earlier_children: frozenset):
        self.tmp = None  # set once created: only a TMPDIR we made is ever removed
        self.was_subreaper = was_subreaper
        self.earlier_children = earlier_children
        # denial_channel.Channel when the plan reports denials; its supervisor runs here.
        self.denials = None
        self.finish_denials = None  # denial_channel.start_supervisor's `finish`


def open_scope(plan) -> Scope:
    """Become a child subreaper and create the per-run TMPDIR (plan.private_tmp).

    A library caller may have children and a subreaper flag of its own: both are
    left be (close_scope spares the children that exist now).
    """
    scope = Scope(proc.is_child_subreaper(), frozenset(_children()))
    proc.set_child_subreaper()
    try:
        os.mkdir(plan.private_tmp, 0o700)
    except BaseException:
        close_scope(scope)
        raise
    scope.tmp = plan.private_tmp
    if plan.denial_watch is not None:
        from nsbox.launch import denial_channel

        scope.denials = denial_channel.Channel()
    return scope


def fork_command(plan, error_r: int, error_w: int, active, serve=None, denials=None) -> int:
    """Fork the command process (restrict, then exec, or `serve(plan)` in its place);
    closes the error pipe's write end here. denials: the open scope's denial channel,
    whose listener the command sends back here (then call watch_denials)."""
    parent = os.getpid()
    if denials is not None:
        # The command and what it forks before exec: no ptrace, no /proc/PID/mem of
        # this process for a same-uid process without CAP_SYS_PTRACE (Landlock already
        # keeps a confined process from tracing an unconfined one).
        proc.set_dumpable(False)
    pid = os.fork()
    if pid == 0:
        try:
            os.close(error_r)
            if denials is not None:
                denials.sandbox_side()
                denials.command_side()
            _command_main(plan, error_w, parent, active, serve, denials)
        finally:
            os._exit(errorpipe.SETUP_FAILED)
    os.close(error_w)
    return pid


def watch_denials(scope: Scope, plan, command: int, session: bool = False) -> None:
    """Start the denial supervisor in this process, outside the command's Landlock
    domain, after the last fork (it is a thread). If it cannot start, the command is
    killed and the error raised: its notified calls must never wait for nobody."""
    if scope.denials is None:
        return
    from nsbox.launch import denial_channel

    try:
        scope.finish_denials = denial_channel.start_supervisor(
            plan.denial_watch, scope.denials, plan.policy.seccomp, session=session)
    except BaseException as err:
        try:
            os.kill(command, signal.SIGKILL)
        except ProcessLookupError:
            pass
        raise SandboxError(
            f"denial reporting could not start ({err}); the command was stopped. "
            "--no-denial-events (report_denials = false) runs without it") from None


def close_scope(scope: Scope) -> str:
    """Kill everything the command left behind, undo open_scope; a warning, or "".
    The denial supervisor, if any, writes its final events then (every process under
    its filter is gone)."""
    kill_leftovers(spare=scope.earlier_children)
    if not scope.was_subreaper:
        proc.clear_child_subreaper()
    problems = []
    if scope.finish_denials is not None:
        finish, scope.finish_denials = scope.finish_denials, None
        finish()
        if finish.stopped:
            problems.append(
                f"denial reporting stopped during the run ({finish.stopped[0]!r}); from then "
                "on the command's write-intent and refused system calls failed with ENOSYS")
    if scope.tmp is not None:
        try:
            remove_tree(scope.tmp)
        except OSError as err:
            problems.append(f"could not remove the sandbox's TMPDIR: {err}")
    return "; ".join(problems)


def _command_main(plan, error_w: int, parent: int, active, serve, denials) -> None:
    try:
        # Into the limits' cgroup before anything runs (or forks).
        limits.join(active)
    except BaseException as err:
        errorpipe.report(error_w, "cgroup", err)
        os._exit(errorpipe.SETUP_FAILED)
    # Without a user namespace, capabilities would be real ones on the host: only root has any.
    sequence.restrict_command(plan, error_w, drop_caps=plan.uid == 0, expected_parent=parent,
                              own_files=serve is None, report_to=denials)
    if serve is not None:
        os.close(error_w)  # EOF: the session is ready
        os._exit(serve(plan))
    sequence.exec_command(plan, error_w)


def kill_leftovers(spare=frozenset()) -> None:
    """SIGKILL every remaining descendant but `spare`; as subreaper, orphans are our children."""
    while True:
        children = [pid for pid in _children() if pid not in spare]
        if not children:
            return
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in children:
            # A killed child's own children are re-parented to us: the next round gets them.
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass


def _children() -> list:
    pids = []
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/children") as f:
                pids += [int(p) for p in f.read().split()]
        except FileNotFoundError:
            continue
    return pids


def remove_tree(top: str) -> None:
    """Remove the per-run TMPDIR, whatever modes the command left on it.

    Every sandboxed process is dead by now, so nothing can swap a directory for a
    symlink under us; symlinks are unlinked, never followed.
    """
    try:
        os.chmod(top, 0o700)
    except FileNotFoundError:
        return
    for path, dirs, _ in os.walk(top):
        for name in dirs:
            sub = os.path.join(path, name)
            if not os.path.islink(sub):
                os.chmod(sub, 0o700)
    for path, dirs, files in os.walk(top, topdown=False):
        for name in files:
            os.unlink(os.path.join(path, name))
        for name in dirs:
            sub = os.path.join(path, name)
            if stat.S_ISDIR(os.lstat(sub).st_mode):
                os.rmdir(sub)
            else:
                os.unlink(sub)
    os.rmdir(top)
