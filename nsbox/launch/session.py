"""A warm session's server: the sandbox's command process, serving fork+exec requests.

It has been through every restriction of the launch sequence (capabilities,
no_new_privs, Landlock, seccomp), so each command it forks inherits them all
and costs one fork and one exec. A request arrives on the control socket as one
record (see wire.encode_command) with the command's reply socket and stdio
attached; the reply socket gets STARTED or FAILED, then EXITED, and carries
signal requests for the command's process group the other way. EOF on the
control socket ends the server, and with it the sandbox (its PID 1 exits; in
landlock-only isolation the launcher kills what is left and removes the TMPDIR).
"""

# C modules only: `signal` and `socket` import enum, in every fork of the fork server.
import _signal as signal
import _socket as socket
import os
import select

from nsbox.launch import errorpipe, sequence, wire


def server(control_fd: int):
    """The callable the launch sequence runs in place of exec."""
    return lambda plan: serve(control_fd, plan)


def serve(control_fd: int, plan) -> int:
    control = socket.socket(fileno=control_fd)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # a runner may drop a reply socket early
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    poller = select.poll()
    poller.register(control, select.POLLIN)
    poller.register(wake_r, select.POLLIN)
    running = {}  # command pid -> its reply socket
    by_reply = {}  # reply socket fd -> command pid
    while True:
        for fd, _ in poller.poll():
            if fd == wake_r:
                _drain(wake_r)
                _reap(running, by_reply, poller)
            elif fd == control.fileno():
                try:
                    record, fds = wire.receive(control)
                except OSError:
                    record, fds = b"", []
                if not record:
                    return 0
                reply = socket.socket(fileno=fds[0])
                pid = _start(plan, record, fds[1:4], reply)
                if pid:
                    running[pid] = reply
                    by_reply[reply.fileno()] = pid
                    poller.register(reply, select.POLLIN)
                else:
                    reply.close()
            else:
                pid = by_reply.get(fd)
                if pid is None:
                    continue
                request = running[pid].recv(64)
                # EOF: the runner dropped the command, so it must not run on unseen.
                _kill_group(pid, wire.parse_signal(request) if request else signal.SIGKILL)
                if not request:
                    poller.unregister(fd)


def _start(plan, record: bytes, stdio, reply) -> int:
    """Start one command; 0 if it never started (the reply says why).

    posix_spawn (a vfork underneath) instead of fork: no page tables to copy,
    and an exec failure comes back as its errno.
    """
    argv, cwd, env = wire.decode_command(record)
    if env is None:
        env = plan.env
    step = "chdir"
    try:
        os.chdir(cwd)  # the spawned command inherits it; this process needs no particular one
        step = "exec"
        path = sequence.find_executable(argv[0], env.get("PATH", os.defpath))
        # A process group of its own: a per-command timeout kills the group, not the session.
        pid = os.posix_spawn(path, argv, env, file_actions=_stdio_actions(stdio),
                             setpgroup=0, setsigdef=_DEFAULT_SIGNALS)
    except OSError as err:
        failure = errorpipe.Failure(step, err.errno or 0, str(err))
        wire.send_quietly(reply, wire.failed_from(failure))
        wire.send_quietly(reply, wire.exited(failure.exit_code, None))
        return 0
    finally:
        for fd in stdio:
            os.close(fd)
    wire.send_quietly(reply, wire.STARTED)
    return pid


# The command gets the defaults back for what this server ignores or handles.
_DEFAULT_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGCHLD)


def _stdio_actions(stdio):
    return [(os.POSIX_SPAWN_DUP2, fd, target) for target, fd in enumerate(stdio)]


def _reap(running: dict, by_reply: dict, poller) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        reply = running.pop(pid, None)
        if reply is None:
            continue
        fd = reply.fileno()
        if by_reply.pop(fd, None) is not None:
            try:
                poller.unregister(fd)
            except KeyError:
                pass
        wire.send_quietly(reply, wire.exited_from_status(status))
        reply.close()


def _kill_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass
