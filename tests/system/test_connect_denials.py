"""Connections that cannot reach what they name, reported with a hint that points at the
sandbox: a host daemon's socket under the sandbox's own /run, an address off the loopback
with the network closed, and a direct connection that bypasses the allowlist's proxy.
Each attack is made for real; the host's listener must see nothing."""

import contextlib
import os
import socket
import uuid

import pytest

from conftest import needs_landlock

pytestmark = needs_landlock(1)

RUN_HINT = "nsbox: hint: /run inside the sandbox is its own empty directory"
CLOSED_HINT = "nsbox: hint: the network is closed: --network allowlist"
CONNECT = ("import socket, sys\n"
           "family = socket.AF_UNIX if sys.argv[1].startswith('/') else socket.AF_INET\n"
           "s = socket.socket(family); s.settimeout(3)\n"
           "target = sys.argv[1] if family == socket.AF_UNIX else (sys.argv[1], int(sys.argv[2]))\n"
           "print('started', flush=True)\n"
           "try:\n    s.connect(target); print('connected')\n"
           "except OSError as err:\n    print('refused', err.errno)\n")


def host_address() -> str:
    """The host's address on its default route (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))
        return probe.getsockname()[0]


@contextlib.contextmanager
def listening(family, address):
    """A host listener; afterwards asserts that nothing connected to it."""
    server = socket.socket(family)
    server.bind(address)
    if family == socket.AF_UNIX:
        os.chmod(address, 0o777)
    server.listen(4)
    try:
        yield server.getsockname()
        server.setblocking(False)
        with pytest.raises(BlockingIOError):
            server.accept()  # the probe has exited: a connection would be queued
    finally:
        server.close()
        if family == socket.AF_UNIX:
            os.unlink(address)


def connect(nsbox_exec, *target, opts=()):
    return nsbox_exec(["python3", "-c", CONNECT, *map(str, target)], *opts)


def test_a_host_daemon_socket_under_run_is_named_with_the_hint(nsbox_exec):
    # /run/lock is world-writable on Debian: a daemon's socket any test user can make.
    path = f"/run/lock/nsbox-test-{uuid.uuid4().hex[:8]}.sock"
    with listening(socket.AF_UNIX, path):
        r = connect(nsbox_exec, "/var" + path)
    out, err = r.stdout.decode(), r.stderr.decode()
    assert out == "started\nrefused 2\n", err
    assert (f"nsbox: blocked 1 operation: connect /var{path} (the sandbox's own /run: "
            "the host's sockets are not in it)") in err
    assert RUN_HINT in err


def test_the_host_is_not_asked_whether_it_has_the_socket(nsbox_exec):
    """Whatever the host runs, the same line: its /run is hidden, existence included."""
    path = f"/run/nsbox-test-missing-{uuid.uuid4().hex[:8]}.sock"
    r = connect(nsbox_exec, path)
    assert r.stdout.decode() == "started\nrefused 2\n", r.stderr
    assert f"nsbox: blocked 1 operation: connect {path} (the sandbox's own /run" \
        in r.stderr.decode()


def test_a_process_that_runs_a_new_program_is_read_anew(nsbox_exec):
    """The supervisor read this process's memory before its exec (a version manager's
    shim makes a directory that exists: no event), so the connect after it must be
    read from the new program's memory, not lost."""
    path = f"/run/nsbox-test-missing-{uuid.uuid4().hex[:8]}.sock"
    shim = ("import os, sys\ntry:\n    os.mkdir('/etc/ssl')\nexcept FileExistsError:\n"
            "    pass\nos.execvp('python3', ['python3', '-c', *sys.argv[1:]])\n")
    r = nsbox_exec(["python3", "-c", shim, CONNECT, path])
    assert r.stdout.decode() == "started\nrefused 2\n", r.stderr
    assert f"nsbox: blocked 1 operation: connect {path} (the sandbox's own /run" \
        in r.stderr.decode()


def test_name_lookups_are_quiet(nsbox_exec):
    """glibc's name services try nscd's and systemd's sockets on every lookup and do
    without them: no event, no hint."""
    r = nsbox_exec(["sh", "-c", "getent passwd root >/dev/null; getent group nsbox-no-such-group; "
                    "python3 -c \"import socket; s = socket.socket(socket.AF_UNIX); "
                    "s.connect('/var/run/nscd/socket')\" 2>/dev/null; echo done"])
    assert r.stdout.decode().endswith("done\n"), r.stderr
    assert b"blocked" not in r.stderr and b"hint" not in r.stderr, r.stderr


def test_an_address_off_the_loopback_with_the_network_closed(nsbox_exec):
    with listening(socket.AF_INET, ("0.0.0.0", 0)) as (_, port):
        address = host_address()
        r = connect(nsbox_exec, address, port)
    out, err = r.stdout.decode(), r.stderr.decode()
    assert out == "started\nrefused 101\n", err  # ENETUNREACH: the sandbox has no route
    assert f"nsbox: blocked 1 operation: connect {address}:{port} (network none)" in err
    assert CLOSED_HINT in err


def test_ipv6_and_the_loopback(nsbox_exec):
    script = ("import socket\n"
              "for family, where in ((socket.AF_INET6, ('2001:db8::1', 443)),"
              " (socket.AF_INET, ('127.0.0.1', 9))):\n"
              "    try:\n        socket.socket(family).connect(where)\n"
              "    except OSError as err:\n        print(err.errno)\n")
    r = nsbox_exec(["python3", "-c", script])
    assert r.stdout.decode() == "101\n111\n", r.stderr
    err = r.stderr.decode()
    # The loopback is the sandbox's own: a refused connection there is no denial.
    assert "nsbox: blocked 1 operation: connect [2001:db8::1]:443 (network none)" in err, err


def test_a_direct_connection_past_the_allowlist_proxy(nsbox_exec):
    with listening(socket.AF_INET, ("0.0.0.0", 0)) as (_, port):
        address = host_address()
        r = connect(nsbox_exec, address, port, opts=("--allow-domain", "allowed.test"))
    out, err = r.stdout.decode(), r.stderr.decode()
    assert out == "started\nrefused 101\n", err
    assert (f"connect {address}:{port} (a direct connection: the allowlist is reached only "
            "through its proxy)") in err
    assert f"nsbox: hint: {address}:{port} was connected to directly" in err


def test_without_denial_events_nothing_is_watched(nsbox_exec):
    r = connect(nsbox_exec, "192.0.2.1", 443, opts=("--no-denial-events",))
    assert r.stdout.decode() == "started\nrefused 101\n", r.stderr
    assert b"blocked" not in r.stderr and b"hint" not in r.stderr, r.stderr


def test_library_results_carry_the_event(workspace):
    import nsbox
    from nsbox.policy.model import Policy

    result = nsbox.run(["python3", "-c", CONNECT, "192.0.2.1", "443"],
                       policy=Policy(workspace=str(workspace)))
    assert result.stdout == b"started\nrefused 101\n", result.stderr
    assert [(d.wall, d.operation, d.target, d.rule) for d in result.denials] == [
        ("network", "connect", "192.0.2.1:443", "network none")]


def test_a_session_names_a_daemon_socket_per_command(workspace):
    import nsbox
    from nsbox.policy.model import Policy

    path = f"/run/lock/nsbox-test-{uuid.uuid4().hex[:8]}.sock"
    with listening(socket.AF_UNIX, path), nsbox.Session(Policy(workspace=str(workspace))) as s:
        daemon = s.run(["python3", "-c", CONNECT, path])
        lookup = s.run(["python3", "-c", CONNECT, "/run/nscd/socket"])
    assert daemon.stdout == lookup.stdout == b"started\nrefused 2\n", daemon.stderr
    assert [(d.wall, d.target) for d in daemon.denials] == [("hidden", path)]
    assert lookup.denials == ()
