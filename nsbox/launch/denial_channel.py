"""The pipes of denial reporting, made by the caller before PID 1 is forked (kept
apart from the supervisor, launch/denial_watch.py, which only PID 1 imports)."""

import _socket as socket
import os

from nsbox.kernel import proc

_PIPE_SIZE = 1 << 20


class Channel:
    """The sockets and pipe that link the command, PID 1 and the caller (made by the
    caller before PID 1 is forked; every end close-on-exec)."""

    def __init__(self):
        self.listener_r, self.listener_w = socket.socketpair(
            socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        self.events_r, self.events_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        try:
            proc.set_pipe_size(self.events_w, _PIPE_SIZE)
        except OSError:
            pass  # a smaller pipe: live events beyond it are dropped, the final list is cut

    def caller_side(self) -> None:
        """After PID 1 is forked: the caller keeps only the events' read end."""
        for sock in (self.listener_r, self.listener_w):
            sock.close()
        os.close(self.events_w)

    def sandbox_side(self) -> None:
        os.close(self.events_r)

    @staticmethod
    def preload(stage: str, built: bool) -> None:
        """PID 1, called before the new root is assembled at `stage` and again once it is
        built: when the sandbox will not see nsbox's own files (installed under /tmp, in
        a hidden path, an image as root), read the supervisor's code while the host's
        files are still there. Its C modules are loaded now unless built in; its Python
        modules run later, in the supervisor's thread, while the command starts
        (importing them here cost 1.3 ms of start-up, reading them 0.3 ms)."""
        here = os.path.dirname(os.path.abspath(__file__))
        under_stage = here.startswith(stage.rstrip("/") + "/")
        if built == under_stage or (built and os.path.exists(f"{stage}{here}/denial_watch.py")):
            return  # (under the stage: read before it was covered)
        import sys

        for name in _SUPERVISOR_C_MODULES:  # built in, as a rule: nothing to load then
            if name not in sys.builtin_module_names:
                __import__(name)
        _read_supervisor_code(os.path.dirname(here))

    def command_side(self) -> None:
        """In the command process: only the end that carries the listener to PID 1."""
        self.listener_r.close()
        os.close(self.events_w)


def start_supervisor(watch, channel: Channel, profile: str, session: bool = False):
    """In PID 1 after its last fork (landlock-only: in the caller, launch/scope.py): the
    supervising thread (launch/denial_watch.py), which imports its module itself, so
    that the main thread supervises at once (a short command must not wait for that
    import). Returns `finish`, for PID 1's last step: it
    reports every event with its count. A supervisor not yet made has seen nothing (it
    answers every notification, so none was answered before it existed)."""
    import _thread
    import select

    made = []
    stopped = []  # why the thread ended early, if it did: the listener is closed then

    def run():
        try:
            serve()
        except BaseException as err:
            stopped.append(err)

    def serve():
        listener = _receive_listener(channel)
        if listener is None:
            return  # the command failed before loading its filter
        poller = select.poll()
        poller.register(listener, select.POLLIN)
        # The supervisor's module only once there is something to answer: a command
        # that writes nothing (or exits at once) never pays for it.
        if not any(events & select.POLLIN for _, events in poller.poll()):
            return  # hung up: every process under the filter is gone
        try:
            _run_read_code()
            from nsbox.launch import denial_watch

            made.append(denial_watch.Supervisor(watch, channel, profile, session))
        except BaseException:
            os.close(listener)  # the command's notified calls fail (ENOSYS), never hang
            raise
        made[0].run(listener)

    channel.listener_w.close()
    _thread.start_new_thread(run, ())

    def finish():
        if made:
            made[0].finish()

    finish.stopped = stopped
    return finish


# The supervisor's C modules, and its Python modules in import order, as preload()
# reads them.
_SUPERVISOR_C_MODULES = ("fcntl", "select", "_struct")
_SUPERVISOR_MODULES = ("nsbox.policy.denials", "nsbox.kernel.seccomp_notify",
                       "nsbox.launch.denial_watch")
_read_code = {}  # module name -> (source path, its code: bytecode or else source)


def _read_supervisor_code(package_dir: str) -> None:
    import sys

    magic = sys.modules["_frozen_importlib_external"].MAGIC_NUMBER
    for name in _SUPERVISOR_MODULES:
        if name in sys.modules:
            continue
        if name.rpartition(".")[0] not in sys.modules:  # not so in PID 1: import it now
            __import__(name)
            continue
        *parents, leaf = name.split(".")[1:]
        path = os.path.join(package_dir, *parents, leaf + ".py")
        cached = os.path.join(package_dir, *parents, "__pycache__",
                              f"{leaf}.{sys.implementation.cache_tag}.pyc")
        info = os.stat(path)
        # A timestamp-checked pyc for this very source, as the import system checks it.
        header = magic + bytes(4) + (int(info.st_mtime) & 0xFFFFFFFF).to_bytes(4, "little") \
            + (info.st_size & 0xFFFFFFFF).to_bytes(4, "little")
        try:
            with open(cached, "rb") as f:
                bytecode = f.read()
        except OSError:
            bytecode = b""
        if bytecode[:16] == header:
            _read_code[name] = (path, bytecode)
        else:
            with open(path, "rb") as f:
                _read_code[name] = (path, f.read())


def _run_read_code() -> None:
    """The modules preload() read, made as an import would make them."""
    import marshal
    import sys

    magic = sys.modules["_frozen_importlib_external"].MAGIC_NUMBER
    for name in _SUPERVISOR_MODULES:
        found = _read_code.pop(name, None)
        if found is None or name in sys.modules:
            continue
        path, read = found
        code = marshal.loads(memoryview(read)[16:]) if read[:4] == magic \
            else compile(read, path, "exec", dont_inherit=True)
        package, _, leaf = name.rpartition(".")
        module = type(sys)(name)
        module.__file__, module.__package__ = path, package
        sys.modules[name] = module
        try:
            exec(code, module.__dict__)
        except BaseException:
            del sys.modules[name]
            raise
        setattr(sys.modules[package], leaf, module)


def _receive_listener(channel: Channel):
    """PID 1's end: the listener the command sent, or None if it never did."""
    sock = channel.listener_r
    try:
        _, ancdata, _, _ = sock.recvmsg(1, socket.CMSG_SPACE(4), socket.MSG_CMSG_CLOEXEC)
    except OSError:
        return None
    finally:
        sock.close()
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS and len(data) >= 4:
            return int.from_bytes(data[:4], "little", signed=True)
    return None


def send_listener(channel: Channel, listener: int) -> None:
    """In the command process, right after loading the filter: hand the listener to
    PID 1 and close it here."""
    try:
        channel.listener_w.sendmsg([b"L"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                             listener.to_bytes(4, "little", signed=True))])
    finally:
        os.close(listener)
        channel.listener_w.close()


# The session server's "tell the repeats now": fchmod of fd -1 with this mode, the only
# fchmod the reporting filter notifies (plan/denial_rules.py). The supervisor answers it
# with its tally of denied calls so far, without running it.
FLUSH_MODE = 0xF1A5


def flush():
    """The supervisor's tally of denied calls, once it has passed on what it holds; None
    without a supervisor (the call fails)."""
    from nsbox.kernel import seccomp_notify

    tally = seccomp_notify.fchmod_answer(-1, FLUSH_MODE)
    return tally if tally >= 0 else None
