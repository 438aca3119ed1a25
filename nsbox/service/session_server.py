"""A warm session's server: the sandbox's command process, serving fork+exec requests.

It has been through every restriction of the launch sequence (capabilities,
no_new_privs, Landlock, seccomp), so each command it starts inherits them all
and costs one posix_spawn. A request arrives on the control socket as one
record (see wire.encode_command) with the command's reply socket and stdio
attached; the reply socket gets STARTED or FAILED, then EXITED, and carries
signal requests for the command's process group the other way. EOF on the
control socket ends the server, and with it the sandbox (its PID 1 exits; in
landlock-only isolation the relay kills what is left and removes the TMPDIR).

Each command runs in a Landlock domain of its own, nested in the session's
(Landlock ABI 6): it can neither signal nor trace this server or another
command's processes, nor reach their abstract unix sockets. A spawned child
inherits the credentials of the thread that spawns it, so each request is taken
and its command spawned by a short-lived thread that entered a new domain first;
the main thread never leaves the session's. That thread outlives the command's
exec by a moment: a command that signals it then can stop or kill its own
session's server, nothing more (its parent resumes a stopped server at once).
"""

# C modules only: `signal` and `socket` import enum, in every fork of the fork server.
import _signal as signal
import _socket as socket
import _thread
import os
import select

from nsbox.kernel import landlock
from nsbox.launch import denial_channel, errorpipe, sequence
from nsbox.policy import landlock_rules
from nsbox.service import wire


def server(control_fd: int):
    """The callable the launch sequence runs in place of exec."""
    return lambda plan: serve(control_fd, plan)


def serve(control_fd: int, plan) -> int:
    control = socket.socket(fileno=control_fd)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # a runner may drop a reply socket early
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    taker = _Taker(plan, control)
    poller = select.poll()
    poller.register(wake_r, select.POLLIN)
    poller.register(taker.done_r, select.POLLIN)
    running = {}  # command pid -> its reply socket
    by_reply = {}  # reply socket fd -> command pid
    taking = taker.start()
    while True:
        # No thread (the pids limit, say): retry soon; requests wait in the socket.
        for fd, _ in poller.poll(None if taking else _RETRY_MS):
            if fd == wake_r:
                _drain(wake_r)
                _reap(running, by_reply, poller)
            elif fd == taker.done_r:
                taken = taker.result()
                if taken is None:
                    return 0
                pid, reply = taken
                if pid:
                    running[pid] = reply
                    by_reply[reply.fileno()] = pid
                    poller.register(reply, select.POLLIN)
                    _reap(running, by_reply, poller)  # it may have ended already
                else:
                    reply.close()
                taking = False
            else:
                pid = by_reply.get(fd)
                if pid is None:
                    continue
                request = running[pid].recv(64)
                # EOF: the runner dropped the command, so it must not run on unseen.
                _kill_group(pid, wire.parse_signal(request) if request else signal.SIGKILL)
                if not request:
                    poller.unregister(fd)
        if not taking:
            taking = taker.start()


_RETRY_MS = 50
_STACK_SIZE = 1 << 20  # plenty for a few frames and posix_spawn


class _Taker:
    """Takes one request at a time from the control socket, each in a new thread that
    first enters the next command's own Landlock domain, and spawns its command."""

    def __init__(self, plan, control):
        _thread.stack_size(_STACK_SIZE)
        self.plan, self.control = plan, control
        self.done_r, self.done_w = os.pipe2(os.O_CLOEXEC)
        self._taken = None
        self.domain_fd = self.refusal = None
        abi = plan.landlock.abi if plan.landlock is not None else 0
        domain = landlock_rules.command_domain(abi)
        if domain is not None:
            try:
                self.domain_fd = landlock.create(domain)
            except OSError as err:
                self.refusal = err  # every command is refused: fail closed

    def start(self) -> bool:
        """False if no thread could be started."""
        try:
            _thread.start_new_thread(self._take_one, ())
        except RuntimeError:
            return False
        return True

    def result(self):
        """(pid, or 0 if it did not start; reply socket), or None at EOF."""
        os.read(self.done_r, 1)
        taken, self._taken = self._taken, None
        if isinstance(taken, BaseException):
            raise taken
        return taken

    def _take_one(self) -> None:
        taken = None
        try:
            refusal = self.refusal
            if refusal is None and self.domain_fd is not None:
                try:
                    landlock.enforce(self.domain_fd)
                except OSError as err:
                    refusal = err
            try:
                record, fds = wire.receive(self.control)
            except OSError:
                record, fds = b"", []
            if record:
                reply = socket.socket(fileno=fds[0])
                if refusal is None:
                    taken = (_start(self.plan, record, fds[1:4], reply), reply)
                else:
                    _refuse(refusal, fds[1:4], reply)
                    taken = (0, reply)
        except BaseException as err:
            taken = err
        self._taken = taken
        os.write(self.done_w, b".")


def _start(plan, record: bytes, stdio, reply) -> int:
    """Start one command; 0 if it never started (the reply says why).

    posix_spawn (a vfork underneath) instead of fork: no page tables to copy,
    and an exec failure comes back as its errno.
    """
    python = record[:1] == wire.PYTHON
    argv, cwd, env = wire.decode_command(record[1:] if python else record)
    if env is None:
        env = plan.env
    # The denial supervisor's tally before the command: the same at its end means it
    # was stopped nowhere, and its exit record says so (no query for its events).
    tally = denial_channel.flush() if plan.denial_watch is not None else None
    step = "chdir"
    try:
        os.chdir(cwd)  # the spawned command inherits it; this process needs no particular one
        if python:
            step = "fork"
            pid = run_python(argv, stdio)
        else:
            step = "exec"
            path = sequence.find_executable(argv[0], env.get("PATH", os.defpath))
            # A process group of its own: a per-command timeout kills the group, not the
            # session.
            pid = os.posix_spawn(path, argv, env, file_actions=_stdio_actions(stdio),
                                 setpgroup=0, setsigdef=_DEFAULT_SIGNALS)
    except OSError as err:
        _report_failure(errorpipe.from_exception(step, err), reply)
        return 0
    finally:
        for fd in stdio:
            os.close(fd)
    if tally is not None:
        _TALLIES[reply.fileno()] = tally
    wire.send_quietly(reply, wire.STARTED)
    return pid


_TALLIES = {}  # a running command's reply socket fd -> the denial tally at its start


def run_python(argv, stdio) -> int:
    """Run the source argv[0] (sys.argv: argv) in a fork of this server, for nsbox's own
    work inside the sandbox (plan/session_overlay.RESTORER): an image may have no Python
    of its own. The child is as a spawned command would be: this thread's Landlock
    domain, a process group of its own, the given stdio and no other descriptor. It can
    import only what this process has loaded."""
    pid = os.fork()
    if pid:
        return pid
    status = 1
    try:
        os.setpgid(0, 0)
        signal.set_wakeup_fd(-1)  # the fork's thread is its main one: this is allowed
        for sig in _DEFAULT_SIGNALS + (signal.SIGINT,):
            signal.signal(sig, signal.SIG_DFL)
        for target, fd in enumerate(stdio):
            os.dup2(fd, target)
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))
        import sys

        sys.argv = list(argv)
        exec(compile(argv[0], "<nsbox>", "exec"), {"__name__": "__main__"})
        status = 0
    except SystemExit as done:
        status = done.code if isinstance(done.code, int) else (done.code is not None)
    except BaseException as err:
        try:
            os.write(2, f"{type(err).__name__}: {err}\n".encode(errors="replace"))
        except BaseException:
            pass
    finally:
        os._exit(status)


def _refuse(err: OSError, stdio, reply) -> None:
    """A command whose own Landlock domain could not be made never starts."""
    for fd in stdio:
        os.close(fd)
    _report_failure(errorpipe.from_exception("landlock", err), reply)


def _report_failure(failure: errorpipe.Failure, reply) -> None:
    wire.send_quietly(reply, wire.failed(failure))
    wire.send_quietly(reply, wire.exited(failure.exit_code, None))


# The command gets the defaults back for what this server ignores or handles.
_DEFAULT_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGCHLD)


def _stdio_actions(stdio):
    return [(os.POSIX_SPAWN_DUP2, fd, target) for target, fd in enumerate(stdio)]


def _reap(running: dict, by_reply: dict, poller) -> None:
    """Report every registered command that has exited. Only those are waited for:
    glibc reaps a child whose exec failed itself."""
    for pid in list(running):
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done, status = pid, None  # never reaped here: the runner is told nothing
        if not done:
            continue
        reply = running.pop(pid)
        fd = reply.fileno()
        if by_reply.pop(fd, None) is not None:
            try:
                poller.unregister(fd)
            except KeyError:
                pass
        before = _TALLIES.pop(fd, None)
        if status is not None:
            tally = denial_channel.flush()  # its repeated denials reach the relay first
            wire.send_quietly(reply, wire.exited_from_status(
                status, no_denials=before is not None and tally == before))
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
