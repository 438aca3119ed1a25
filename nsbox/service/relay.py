"""One sandbox, forked by the fork server: the caller's part of the launch sequence.

It enters the namespaces, forks the sandbox's PID 1, and then only relays: the
start (or setup failure) and the exit go to the runner over the status socket,
signal requests come back the other way. The runner going away (EOF on the
status socket) or the fork server dying (parent-death signal) ends the sandbox.

Landlock-only isolation (plan.isolation "landlock"; one-shot runs and sessions):
no namespaces and no PID 1. This process becomes a child subreaper, creates the
per-run TMPDIR and forks the command itself (nsbox.launch.scope), or in
a session the restricted session server; it reaps the orphans re-parented to it,
and once that process has exited it kills whatever is left and removes the
TMPDIR before reporting the exit. The fork server dying is a catchable signal
here, so that cleanup still happens.
"""

# C modules only: this process is a fork of the fork server, which stays small.
import _pickle as pickle
import _signal as signal
import _socket as socket
import os
import select
import time

from nsbox import trace
from nsbox.kernel import proc
from nsbox.launch import errorpipe, limits, pid1, probe, scope, sequence
from nsbox.plan.types import LANDLOCK
from nsbox.record import replace
from nsbox.service import wire

ONE_SHOT = "run"
SESSION = "session"
# A one-shot sandbox built ahead of its command: the command process, fully
# restricted, waits on the control socket for argv, cwd, env and stdio, then execs.
SPARE = "spare"
# Not a sandbox: can user namespaces be made here? (see forkserver.userns_blocker)
PROBE = "probe"


def main(payload: bytes, fds: list, server_fd: int, server_pid: int):
    """Runs in the fork server's child; never returns. fds: status, stdin, stdout, stderr[, control]."""
    status = None
    active = channel = opened = wake_r = None
    step = "relay"
    trace.mark("relay start")
    try:
        os.close(server_fd)  # requests to the fork server are the runner's alone
        status = socket.socket(fileno=fds[0])
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the fork server ignores it
        proc.set_parent_death_signal(signal.SIGKILL)
        if os.getppid() != server_pid:
            os._exit(1)  # the fork server died before we could watch it
        kind, plan = pickle.loads(payload)
        if kind == PROBE:
            step = "probe"
            wire.send(status, wire.PROBED + probe.userns_blocker().encode())
            os._exit(0)
        for target, fd in enumerate(fds[1:4]):
            os.dup2(fd, target)
            os.close(fd)
        channel = sequence.Channel()
        if kind == SESSION:
            from nsbox.service import session_server

            channel.serve = session_server.server(fds[4])
        elif kind == SPARE:
            channel.await_command = _command_from(fds[4])
        step = "cgroup"
        # The cgroup is made with the runner's own credentials, before the user namespace.
        channel.limits = active = limits.start(plan.limits)
        if plan.net_proxy is not None:
            from nsbox.launch import proxy as net_proxy

            step = "network proxy"
            # Before unshare, so that it stays in the host's network namespace; forked
            # after stdio is in place, so its refusal lines go to the command's stderr.
            channel.proxy = net_proxy.start(plan.net_proxy)
        if plan.isolation == LANDLOCK:
            if kind == SPARE:
                raise ValueError("a spare sandbox needs full isolation")
            step = "signals"
            wake_r = _watch_server_and_orphans(server_pid)
            step = "TMPDIR"
            opened = scope.open_scope(plan)
            # A session lives across commands: the wall limit is the per-command timeout there.
            deadline = None if kind == SESSION else limits.deadline(plan.limits, time.monotonic())
            step = "fork command"
            os.close(channel.lifeline_r)
            os.close(channel.lifeline_w)
            top = scope.fork_command(plan, channel.error_r, channel.error_w, active,
                                              serve=channel.serve, denials=opened.denials)
            step = "denial reporting"
            scope.watch_denials(opened, plan, top, session=kind == SESSION)
            channel.denials = opened.denials  # its events go to the runner as PID 1's do
        else:
            step = "namespaces"
            sequence.enter_namespaces(plan)
            # A session lives across commands: the wall limit is the per-command timeout there.
            deadline = None if kind == SESSION else limits.deadline(plan.limits, time.monotonic())
            step = "fork init"
            top = sequence.fork_init(plan, channel)
        if kind in (SESSION, SPARE):
            os.close(fds[4])
    except BaseException as err:
        _stop_proxy(channel)
        if status is not None:
            wire.send_quietly(status, wire.failed(errorpipe.from_exception(step, err)))
        try:
            if opened is not None:
                scope.close_scope(opened)
            limits.finish(active, errorpipe.SETUP_FAILED)
        finally:
            os._exit(errorpipe.SETUP_FAILED)
    try:
        _relay(top, channel, status, deadline, opened, wake_r, resume_stopped=kind == SESSION)
    finally:
        os._exit(0)


def _watch_server_and_orphans(server_pid: int) -> int:
    """Landlock-only: SIGHUP for the fork server's death and SIGCHLD for orphans, both
    as bytes on the returned pipe, which the relay polls. Without a PID namespace,
    dying with the fork server would leave the command's background processes behind."""
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    for sig in (signal.SIGHUP, signal.SIGCHLD):
        signal.signal(sig, _ignore)
    signal.set_wakeup_fd(wake_w)
    proc.set_parent_death_signal(signal.SIGHUP)
    if os.getppid() != server_pid:
        os._exit(1)  # the fork server died before the new signal was set
    return wake_r


def _ignore(signum, frame):
    pass


def _command_from(control_fd: int):
    """A spare's wait for its command, run in the command process right before exec."""

    def await_command(plan, error_w: int):
        step = "spare"
        try:
            control = socket.socket(fileno=control_fd)
            wire.send(control, wire.READY)
            record, fds = wire.receive(control)
            if not record:
                os._exit(0)  # the runner dropped this spare unused
            argv, cwd, env = wire.decode_command(record)
            step = "fds"
            for target, fd in enumerate(fds[:3]):
                os.dup2(fd, target)
                os.close(fd)
            control.close()
            # The fresh path's chdir, with this command's directory.
            step = "chdir"
            os.chdir(cwd)
            trace.mark("spare exec")
        except BaseException as err:
            errorpipe.report(error_w, step, err)
            os._exit(errorpipe.SETUP_FAILED)
        return replace(plan, argv=tuple(argv), env=env, cwd=cwd)

    return await_command


def _relay(top: int, channel, status, deadline, opened=None, wake_r=None,
           resume_stopped=False) -> None:
    """Report start and exit of `top` (the sandbox's PID 1, or in landlock-only isolation
    the command or session server itself, where the `opened` scope is cleaned up before the exit
    is reported; a session server that stops is continued)."""
    # The sandbox owns its stdio now; EOF for the runner must not wait for us.
    # A copy of stderr stays, for the message when a resource limit ended the run.
    stderr = os.dup(2)
    devnull = os.open(os.devnull, os.O_RDWR)
    for target in (0, 1, 2):
        os.dup2(devnull, target)
    os.close(devnull)
    pidfd = os.pidfd_open(top)
    poller = select.poll()
    poller.register(channel.error_r, select.POLLIN)
    poller.register(status, select.POLLIN)
    poller.register(pidfd, select.POLLIN)
    if wake_r is not None:
        poller.register(wake_r, select.POLLIN)
    reaped = {}  # landlock-only: the command's wait status, if the orphan reaper got it
    started = wall_killed = False
    feed = None
    if channel.denials is not None:
        feed = _DenialFeed(channel.denials.events_r, status, session=resume_stopped)
        poller.register(feed.fd, select.POLLIN)
    while True:
        wait = None if deadline is None else max(0, (deadline - time.monotonic()) * 1000)
        events = poller.poll(wait)
        if not events and deadline is not None and time.monotonic() >= deadline:
            _kill(pidfd, signal.SIGKILL)  # the policy's wall-clock limit
            wall_killed, deadline = True, None
        for fd, _ in events:
            if fd == channel.error_r and not started:
                poller.unregister(channel.error_r)
                started = _report_start(channel, status)
            elif fd == status.fileno():
                request = status.recv(64)
                since = wire.parse_network_query(request) if request else None
                denials_since = wire.parse_denials_query(request) if request else None
                if since is not None:  # a session command has ended: its refusals
                    wire.send_quietly(status, wire.network_report(_proxy_refusals(channel, since)))
                elif denials_since is not None:  # ... and what the walls stopped
                    if feed is not None:
                        feed.pump()
                    wire.send_quietly(status, wire.DENIALS + (
                        feed.since(denials_since) if feed is not None else b'{"since": []}'))
                elif request:
                    _kill(pidfd, wire.parse_signal(request))
                else:  # the runner is gone: nothing may outlive it
                    poller.unregister(status)
                    _kill(pidfd, signal.SIGKILL)
            elif feed is not None and fd == feed.fd:
                if not feed.pump():
                    poller.unregister(feed.fd)
            elif fd == wake_r:
                if signal.SIGHUP in _drain(wake_r):  # the fork server died
                    _kill(pidfd, signal.SIGKILL)
                _reap(top, reaped, resume_stopped)
            elif fd == pidfd:
                raw = reaped.pop(top) if top in reaped else os.waitpid(top, 0)[1]
                if not started:  # the whole sandbox is gone, so the error pipe is at EOF
                    _report_start(channel, status)
                if opened is None:
                    record = _exit_record(raw)
                else:
                    # The command itself, not a PID 1: its status is the plain one.
                    record = wire.exited_from_status(raw)
                    problem = scope.close_scope(opened)
                    if problem:
                        _write_quietly(stderr, f"nsbox: {problem}\n")
                if wall_killed:
                    record = wire.exited(pid1.WALL_TIMEOUT, None)
                if feed is not None:
                    feed.pump()  # PID 1 is gone: its last lines are all in the pipe
                hit = limits.finish(channel.limits, wire.parse_exited(record)[0], wall_killed)
                if hit is not None:
                    _write_quietly(stderr, f"nsbox: {hit.message}\n")
                    wire.send_quietly(status, wire.limit_report(hit.as_dict()))
                os.close(stderr)
                report = _stop_proxy(channel)
                if report:
                    wire.send_quietly(status, wire.network_report(report))
                wire.send_quietly(status, record)
                return


class _DenialFeed:
    """The denial supervisor's lines (launch/denial_watch.py): passed on to a one-shot
    runner as they come; kept with their time for a session, whose runner asks per
    command."""

    _KEPT = 4096  # a session's lines kept (the oldest go first)

    def __init__(self, fd: int, status, session: bool):
        self.fd, self.status, self.session = fd, status, session
        self.partial = b""
        self.timeline = []  # session: (time.monotonic(), line)

    def pump(self) -> bool:
        """Take what is in the pipe; False at its end."""
        data, open_ = b"", True
        while True:
            try:
                chunk = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                break
            if not chunk:
                open_ = False
                break
            data += chunk
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        now = time.monotonic()
        for line in lines:
            if not line:
                continue
            if self.session:
                self.timeline.append((now, line))
                del self.timeline[:-self._KEPT]
            else:
                wire.send_quietly(self.status, wire.DENIALS + line)
        return open_

    def since(self, since: float) -> bytes:
        """A session command's events: new ones and repeats seen from `since` on, as
        JSON {"since": [event with its count, ...]}."""
        import json

        first, counts = {}, {}
        for when, line in self.timeline:
            message = json.loads(line)
            item = message.get("new")
            if item is not None:
                key = (item["wall"], item["operation"], item["target"], item["rule"])
                first.setdefault(key, item)
                if when >= since:
                    counts[key] = counts.get(key, 0) + 1
            elif when >= since:
                for *key, count in message.get("more", ()):
                    key = tuple(key)
                    counts[key] = counts.get(key, 0) + count
        events = [dict(first[key], count=count) for key, count in counts.items()
                  if key in first]
        return json.dumps({"since": events}).encode()


def _drain(fd: int) -> bytes:
    try:
        return os.read(fd, 512)
    except BlockingIOError:
        return b""


def _reap(command: int, reaped: dict, resume_stopped: bool = False) -> None:
    """Reap the orphans re-parented to this subreaper, keeping the command's status."""
    flags = os.WNOHANG | (os.WUNTRACED if resume_stopped else 0)
    while True:
        try:
            pid, raw = os.waitpid(-1, flags)
        except ChildProcessError:
            return
        if pid == 0:
            return
        if os.WIFSTOPPED(raw):
            if pid == command:
                pid1.resume(command)
        elif pid == command:
            reaped[pid] = raw


def _stop_proxy(channel) -> dict:
    """The allowlist proxy's report once the sandbox is gone; {} without a proxy."""
    if channel is None or channel.proxy is None:
        return {}
    from nsbox.launch import proxy as net_proxy

    running, channel.proxy = channel.proxy, None
    return net_proxy.stop(running)


def _proxy_refusals(channel, since: float) -> dict:
    if channel.proxy is None:
        return {}
    from nsbox.launch import proxy as net_proxy

    return net_proxy.refusals_since(channel.proxy, since)


def _write_quietly(fd: int, text: str) -> None:
    try:
        os.write(fd, text.encode())
    except OSError:
        pass


def _report_start(channel, status) -> bool:
    # EOF: the command was exec'd (or the sandbox died); a record: the step that failed.
    failure = errorpipe.read_failure(channel.error_r)
    wire.send_quietly(status, wire.STARTED if failure is None else wire.failed(failure))
    return True


def _exit_record(raw: int) -> bytes:
    """PID 1 passes on the command's status as 128+N when a signal ended it."""
    if os.WIFEXITED(raw):
        code = os.WEXITSTATUS(raw)
        sig = code - 128 if 128 < code < 128 + signal.NSIG else None
        return wire.exited(code, sig)
    return wire.exited_from_status(raw)


def _kill(pidfd: int, sig: int) -> None:
    # Through the pidfd: the pid may already be reaped (and reused) by the orphan reaper.
    try:
        signal.pidfd_send_signal(pidfd, sig)
    except ProcessLookupError:
        pass
