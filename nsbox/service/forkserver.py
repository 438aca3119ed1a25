"""The fork server: a small single-threaded process that forks every sandbox.

A runner may use threads and asyncio; forking there and running Python before
exec is unsafe. So the runner starts this server once (a fresh interpreter, on
first use) and sends it one record per sandbox over a unix socket: the pickled
launch plan plus, by SCM_RIGHTS, the sandbox's stdio and a status socket. The
server only forks; each child (nsbox.service.relay) reports to the runner itself.

When the runner dies the server reads EOF and exits (and, when it was started
from the main thread, gets a parent-death signal too); every sandbox has a
parent-death signal on it, so nothing outlives the runner.

The runner's environment holds its API keys. The server is exec'd with a few
variables Python and nsbox need (SERVER_ENV), never the runner's, so no process
forked from it (PID 1, a session's server, the network forwarder) carries a
copy; and it makes itself non-dumpable first thing, which its forks inherit:
commands can neither trace them nor read their /proc/PID/{environ,mem,fd}.
"""

# C modules only: their Python wrappers import enum, re and selectors, and threading
# runs at-fork hooks; a small server with no hooks forks every sandbox faster.
import _signal as signal
import _socket as socket
import _thread
import gc
import os
import sys

from nsbox.kernel import proc
from nsbox.service import relay, wire

# Loaded once here so a child never imports on its way to exec (the plan's types
# are what unpickling a request needs).
from nsbox.launch import errorpipe, probe, sequence  # noqa: F401
# and denial reporting's (the relay reads its JSON lines), which each sandbox's PID 1
# and relay would otherwise import anew: memory of their own in every session
import json  # noqa: E402,F401
from nsbox.launch import denial_channel, denial_watch  # noqa: F401
from nsbox.plan import types  # noqa: F401
from nsbox.policy import landlock_rules, netallow, plan as policy_plan  # noqa: F401
from nsbox.service import session_server  # noqa: F401


def serve(sock: socket.socket) -> None:
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children report to the runner; let the kernel reap
    # Keep the collector off the objects loaded so far: a child touching them
    # would copy their pages.
    gc.collect()
    gc.freeze()
    me = os.getpid()
    while True:
        try:
            payload, fds = wire.receive(sock)
        except InterruptedError:
            continue
        except OSError:
            payload, fds = b"", []
        if not payload:
            os._exit(0)  # the runner is gone; sandboxes follow through their death signal
        try:
            pid = os.fork()
        except OSError as err:
            if fds:
                wire.send_quietly(socket.socket(fileno=os.dup(fds[0])), wire.failed(errorpipe.from_exception("fork", err)))
            pid = -1
        if pid == 0:
            relay.main(payload, fds, sock.fileno(), me)
        for fd in fds:
            os.close(fd)


def main(argv) -> None:
    proc.set_dumpable(False)
    fd, runner_pid, watch_runner = int(argv[1]), int(argv[2]), argv[3] == "1"
    os.set_inheritable(fd, False)
    sock = socket.socket(fileno=fd)
    if watch_runner:
        proc.set_parent_death_signal(signal.SIGKILL)
        if os.getppid() != runner_pid:
            os._exit(0)
    serve(sock)


# What the server's interpreter needs to start and find nsbox, its locale, and tracing.
SERVER_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "LD_LIBRARY_PATH", "PYTHONHOME",
              "PYTHONPATH", "PYTHONNOUSERSITE", "PYTHONUSERBASE", "NSBOX_TRACE", "NSBOX_TRACE_FD")


def server_env(runner_env, package_root: str) -> dict:
    env = {name: runner_env[name] for name in SERVER_ENV if name in runner_env}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (package_root, env.get("PYTHONPATH"))))
    return env


class Client:
    """The runner's side: starts the server on first use, then submits sandboxes."""

    def __init__(self):
        self._lock = _thread.allocate_lock()
        self._sock = None
        self._process = None
        os.register_at_fork(after_in_child=self._forget)

    @property
    def pid(self):
        return self._process.pid if self._process is not None else None

    def submit(self, payload: bytes, fds) -> None:
        """Hand one sandbox to the server; raises SandboxError if it can't be reached."""
        with self._lock:
            for attempt in (1, 2):
                if self._sock is None:
                    self._start()
                try:
                    wire.send_request(self._sock, payload, fds)
                    return
                except OSError as err:
                    self._close()  # the server died: start a new one, once
                    if attempt == 2:
                        from nsbox.errors import SandboxError

                        raise SandboxError(f"cannot reach the nsbox fork server: {err}") from None

    def _start(self) -> None:
        import subprocess
        import threading

        ours, theirs = wire.socketpair()
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, wire.MAX_RECORD * 2)
        watch = threading.current_thread() is threading.main_thread()
        package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = server_env(os.environ, package_root)
        try:
            # cwd "/": `-m` puts the working directory on sys.path, and a workspace
            # may hold modules that shadow the standard library.
            self._process = subprocess.Popen(
                [sys.executable, "-m", "nsbox.service.forkserver", str(theirs.fileno()),
                 str(os.getpid()), "1" if watch else "0"],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, cwd="/", env=env,
                start_new_session=True)
        finally:
            theirs.close()
        self._sock = ours

    def _close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _forget(self) -> None:
        # A forked copy of the runner gets its own server: sharing one socket
        # would keep this server alive after the runner that started it.
        self._lock = _thread.allocate_lock()
        self._close()
        self._process = None


_client = None
_client_lock = _thread.allocate_lock()


def submit(kind: str, plan, fds):
    """Start one sandbox of `kind` (see relay); returns the runner's status socket."""
    import pickle

    if plan is not None and plan.watch is not None:
        from nsbox.record import replace

        plan = replace(plan, watch=None)  # compared by the runner; the sandbox never needs it

    ours, theirs = wire.socketpair()
    try:
        client().submit(pickle.dumps((kind, plan), pickle.HIGHEST_PROTOCOL),
                        [theirs.fileno(), *fds])
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    return ours


def client() -> Client:
    global _client
    if _client is None:
        with _client_lock:
            if _client is None:
                _client = Client()
    return _client


if __name__ == "__main__":
    main(sys.argv)


_userns_blocker = None


def userns_blocker() -> str:
    """The fork server's verdict on user namespaces ("" when they work), asked once per
    process: the runner itself never forks for a probe."""
    global _userns_blocker
    if _userns_blocker is None:
        status = submit(relay.PROBE, None, ())
        try:
            record = status.recv(wire.MAX_RECORD)
        finally:
            status.close()
        if record[:1] != wire.PROBED:
            from nsbox.errors import SandboxError

            raise SandboxError("the nsbox fork server did not answer its user-namespace probe")
        _userns_blocker = record[1:].decode(errors="replace")
    return _userns_blocker
