"""The in-sandbox forwarder: accepts on the sandbox's loopback, hands sockets to the proxy.

PID 1 makes the listening socket (so connections queue from the start) and forks
this process, which confines itself as the command will be (no capabilities,
no_new_privs, the same Landlock ruleset in a domain of its own, the same seccomp
filter) before serving: the command can neither borrow its privileges nor, with
Landlock's scoping, signal or trace it. It dies with the PID namespace.
"""

import os
import socket
import struct
import time

from nsbox.kernel import proc
from nsbox.launch import errorpipe, pid1, sequence

_BACKLOG = 512


def start(plan, channel_fd: int) -> None:
    """In PID 1, after the new root and loopback exist; returns once the forwarder is confined."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.bind(("127.0.0.1", plan.net_proxy.port))
        listener.listen(_BACKLOG)
        ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:
            try:
                os.close(ready_r)
                _main(plan, listener, channel_fd, ready_w)
            finally:
                os._exit(errorpipe.SETUP_FAILED)
        os.close(ready_w)
    finally:
        listener.close()
        os.close(channel_fd)  # the command must not inherit the way to the proxy
    failure = errorpipe.read_failure(ready_r)
    if failure is not None:
        raise OSError(failure.errno, f"network forwarder: {failure.step}: {failure.message}")


def _main(plan, listener: socket.socket, channel_fd: int, ready_w: int) -> None:
    step = ["signals"]
    try:
        pid1.reset_signals(sequence.WATCHED_SIGNALS)
        proc.set_name("nsbox-netfwd")
        step[0] = "fds"
        devnull = os.open("/dev/null", os.O_RDWR)
        for target in (0, 1, 2):
            os.dup2(devnull, target)
        os.close(devnull)
        # PID 1's fds include the error pipe: holding it would hide the command's exec.
        _close_all_but(listener.fileno(), channel_fd, ready_w)
        # The command's own restrictions, in the same order.
        sequence.confine(plan, step)
    except BaseException as err:
        errorpipe.report(ready_w, step[0], err)
        os._exit(errorpipe.SETUP_FAILED)
    os.close(ready_w)
    channel = socket.socket(fileno=channel_fd)
    _serve(listener, channel)
    os._exit(0)


def _serve(listener: socket.socket, channel: socket.socket) -> None:
    while True:
        try:
            fd, _ = listener._accept()
        except InterruptedError:
            continue
        except OSError:
            time.sleep(0.05)  # e.g. EMFILE, or the client gave up before accept
            continue
        try:
            channel.sendmsg([b"c"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                      struct.pack("=i", fd))])
        except OSError:
            return  # the proxy is gone: nothing left to forward to
        finally:
            os.close(fd)


def _close_all_but(*keep: int) -> None:
    start = 3
    for fd in sorted(keep):
        os.closerange(start, fd)
        start = fd + 1
    os.closerange(start, os.sysconf("SC_OPEN_MAX"))
