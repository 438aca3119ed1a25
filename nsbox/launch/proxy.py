"""The allowlist proxy's life, seen from the caller: start it before unshare, stop it after.

The proxy is a forked child of the caller, so it stays in the host's network
namespace while the sandbox gets an empty one. It dies with the caller
(parent-death signal) and is stopped, and its report collected, when the
sandbox has ended. Nothing of it touches the filesystem: the forwarder hands it
sockets over a socketpair, so there is no socket file to leave behind.
"""

import json
import os
import select
import signal
import socket

from nsbox.launch import forwarder
from nsbox.netproxy import server

STOP_TIMEOUT = 5.0  # for the report; the sandbox is gone by then, so it is quick


class Running:
    """A started proxy; `sandbox_end` goes to PID 1, which gives it to the forwarder."""

    def __init__(self, pid: int, control: socket.socket, sandbox_end: int):
        self.pid, self.control, self.sandbox_end = pid, control, sandbox_end

    def start_forwarder(self, plan) -> None:
        """In PID 1: the forwarder takes (and PID 1 closes) the sandbox end."""
        fd, self.sandbox_end = self.sandbox_end, None
        self.control.close()  # the caller's alone
        forwarder.start(plan, fd)

    def close_sandbox_end(self) -> None:
        """In the caller once PID 1 has its copy: only the forwarder may hold it."""
        if self.sandbox_end is not None:
            os.close(self.sandbox_end)
            self.sandbox_end = None


def start(settings) -> Running:
    """Fork the proxy; the caller must be single-threaded and not yet unshared."""
    ours, sandbox_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    control, control_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        try:
            server.main(settings, ours.fileno(), control_theirs.fileno(), parent)
        finally:
            os._exit(1)
    ours.close()
    control_theirs.close()
    sandbox_end.set_inheritable(False)
    return Running(pid, control, sandbox_end.detach())


def refusals_since(running: Running | None, since: float) -> dict:
    """A running proxy's refusals at or after `since` (time.monotonic()), as stop() reports."""
    if running is None:
        return {}
    data = b""
    try:
        running.control.sendall(f"since {since!r}\n".encode())
        while not data.endswith(b"\n") and \
                select.select([running.control], [], [], STOP_TIMEOUT)[0]:
            chunk = running.control.recv(1 << 16)
            if not chunk:
                break
            data += chunk
        return json.loads(data)
    except (OSError, ValueError):
        return {}


def stop(running: Running | None) -> dict:
    """End the proxy and return its report: {"blocked": [...], "blocked_total": N}."""
    if running is None:
        return {}
    running.close_sandbox_end()
    data = b""
    try:
        running.control.shutdown(socket.SHUT_WR)
        while select.select([running.control], [], [], STOP_TIMEOUT)[0]:
            chunk = running.control.recv(1 << 16)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    running.control.close()
    try:
        os.kill(running.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        os.waitpid(running.pid, 0)
    except ChildProcessError:
        pass  # already reaped by a wait-for-any loop
    try:
        return json.loads(data) if data else {}
    except ValueError:
        return {}
