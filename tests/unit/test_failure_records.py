"""The failure record (launch.errorpipe) and the wire records (service.wire), round trips."""

import errno
import os
import signal
import struct

import pytest

from nsbox.launch import errorpipe
from nsbox.launch.errorpipe import Failure
from nsbox.service import wire

FAILURES = [
    Failure("exec", errno.ENOENT, "FileNotFoundError", "[Errno 2] No such file or directory: 'nope'"),
    Failure("mounts", errno.EPERM, "SyscallError", "mount('/tmp'): Operation not permitted"),
    Failure("landlock", 0, "UnsupportedKernel", "Landlock ABI 0"),
    Failure("exec", errno.EACCES, "", "empty kind"),
    Failure("cwd", errno.ENOENT, "FileNotFoundError", "répertoire « introuvable » 目录 🚫"),
    Failure("seccomp", 22, "OSError", ""),
    Failure("", 0, "", ""),
]


@pytest.mark.parametrize("failure", FAILURES, ids=repr)
def test_encode_decode_round_trip(failure):
    data = errorpipe.encode(failure)
    assert isinstance(data, bytes) and len(data) <= 4000
    back = errorpipe.decode(data)
    assert (back.step, back.errno, back.kind, back.message) == (
        failure.step, failure.errno, failure.kind, failure.message)
    assert back == failure
    assert errorpipe.encode(back) == data


def test_record_layout_is_four_nul_separated_fields():
    data = errorpipe.encode(Failure("exec", 13, "PermissionError", "denied"))
    assert data == b"exec\x0013\x00PermissionError\x00denied"


def test_long_message_is_truncated_at_4000_bytes():
    failure = Failure("mounts", 1, "SyscallError", "m" * 10000)
    data = errorpipe.encode(failure)
    assert len(data) == 4000
    back = errorpipe.decode(data)
    assert (back.step, back.errno, back.kind) == ("mounts", 1, "SyscallError")
    assert back.message == "m" * (4000 - len(b"mounts\x001\x00SyscallError\x00"))


def test_truncation_inside_a_multibyte_character_still_decodes():
    prefix = len(b"exec\x002\x00K\x00")
    # "é" is two bytes: the 4000-byte cut lands in the middle of one.
    failure = Failure("exec", 2, "K", "a" * (3999 - prefix) + "é" * 10)
    back = errorpipe.decode(errorpipe.encode(failure))
    assert back.message.startswith("a" * (3999 - prefix))
    assert back.message.endswith("\ufffd")
    assert back.exit_code == errorpipe.NOT_FOUND


def test_a_message_with_nul_keeps_its_fields():
    # decode splits three times only: the message may hold anything after that.
    back = errorpipe.decode(errorpipe.encode(Failure("exec", 2, "K", "a\0b")))
    assert back.message == "a\0b"


def test_decode_of_an_empty_errno_field_is_zero():
    assert errorpipe.decode(b"exec\x00\x00Kind\x00msg").errno == 0


@pytest.mark.parametrize("step, err, code", [
    ("exec", errno.ENOENT, 127),
    ("exec", errno.ENOTDIR, 127),
    ("exec", errno.EACCES, 126),
    ("exec", errno.ENOEXEC, 126),
    ("exec", 0, 126),
    ("mounts", errno.ENOENT, 125),
    ("landlock", errno.EACCES, 125),
    ("", 0, 125),
])
def test_exit_code(step, err, code):
    assert Failure(step, err, "K", "m").exit_code == code


def test_exit_code_constants():
    assert (errorpipe.SETUP_FAILED, errorpipe.CANNOT_EXECUTE, errorpipe.NOT_FOUND) == (125, 126, 127)
    assert errorpipe.EXEC_STEP == "exec"


def test_describe():
    assert errorpipe.describe(Failure("exec", errno.ENOENT, "FileNotFoundError", "x"), "frob") == \
        "frob: command not found inside the sandbox"
    assert errorpipe.describe(Failure("exec", errno.ENOTDIR, "NotADirectoryError", "x"), "a/b") == \
        "a/b: command not found inside the sandbox"
    assert errorpipe.describe(Failure("exec", errno.EACCES, "PermissionError",
                                      "[Errno 13] Permission denied"), "./run.sh") == \
        "./run.sh: cannot execute: [Errno 13] Permission denied"
    assert errorpipe.describe(Failure("mounts", errno.EPERM, "SyscallError",
                                      "mount: Operation not permitted"), "ls") == \
        "sandbox setup failed at mounts: mount: Operation not permitted"


def test_from_exception():
    got = errorpipe.from_exception("exec", FileNotFoundError(errno.ENOENT, "No such file", "x"))
    assert (got.step, got.errno, got.kind) == ("exec", errno.ENOENT, "FileNotFoundError")
    assert got.message == "[Errno 2] No such file: 'x'"
    plain = errorpipe.from_exception("landlock", ValueError("bad ruleset"))
    assert (plain.errno, plain.kind, plain.message) == (0, "ValueError", "bad ruleset")


def test_report_into_a_pipe_then_read_failure():
    r, w = os.pipe()
    errorpipe.report(w, "exec", PermissionError(errno.EACCES, "Permission denied"))
    os.close(w)
    got = errorpipe.read_failure(r)  # closes r
    assert got == Failure("exec", errno.EACCES, "PermissionError", "[Errno 13] Permission denied")
    assert got.exit_code == 126
    with pytest.raises(OSError):
        os.fstat(r)


def test_report_of_a_long_unicode_message_reads_back_whole_record():
    r, w = os.pipe()
    err = OSError(errno.EIO, "ü" * 3000)  # 6000 bytes before truncation
    errorpipe.report(w, "mounts", err)
    os.close(w)
    got = errorpipe.read_failure(r)
    assert got == errorpipe.decode(errorpipe.encode(errorpipe.from_exception("mounts", err)))
    assert got.exit_code == 125 and got.errno == errno.EIO


def test_eof_only_pipe_means_exec_succeeded():
    r, w = os.pipe()
    os.close(w)
    assert errorpipe.read_failure(r) is None


def test_report_never_raises():
    r, w = os.pipe()
    os.close(r)
    old = signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    try:
        errorpipe.report(w, "exec", OSError(2, "x"))  # EPIPE, swallowed
        errorpipe.report(-1, "exec", OSError(2, "x"))  # EBADF, swallowed
    finally:
        signal.signal(signal.SIGPIPE, old)
        os.close(w)


# ---------------------------------------------------------------- wire


@pytest.mark.parametrize("failure", FAILURES, ids=repr)
def test_failed_keeps_the_record_byte_for_byte(failure):
    record = wire.failed(failure)
    assert record[:1] == wire.FAILED
    assert record[1:] == errorpipe.encode(failure)
    back = wire.parse_failed(record)
    assert back == failure
    assert wire.failed(back) == record


def test_a_child_record_cut_inside_a_character_reaches_the_library_as_read():
    # The relay decodes the child's record (read_failure) and sends wire.failed() of it:
    # a record cut at 4000 bytes inside a character then differs in bytes (U+FFFD),
    # but the library parses the very failure the relay read.
    raw = errorpipe.encode(Failure("exec", 2, "FileNotFoundError", "ß" * 2500))
    assert len(raw) == 4000
    r, w = os.pipe()
    os.write(w, raw)
    os.close(w)
    relayed = errorpipe.read_failure(r)
    assert relayed.message.endswith("\ufffd")
    assert wire.parse_failed(wire.failed(relayed)) == relayed
    assert wire.parse_failed(wire.failed(relayed)).exit_code == 127


@pytest.mark.parametrize("code, sig", [(0, None), (1, None), (255, None), (137, 9), (143, 15)])
def test_exited_round_trip(code, sig):
    record = wire.exited(code, sig)
    assert record[:1] == wire.EXITED and len(record) == 1 + struct.calcsize("=ii")
    assert wire.parse_exited(record) == (code, sig)


def test_exited_signal_zero_reads_as_none():
    assert wire.parse_exited(wire.exited(3, 0)) == (3, None)


def _status_of(script: str) -> int:
    pid = os.posix_spawnp("sh", ["sh", "-c", script], dict(os.environ))
    _, status = os.waitpid(pid, 0)
    return status


def test_exited_from_status_of_a_signalled_child():
    status = _status_of("kill -TERM $$")
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM
    assert wire.parse_exited(wire.exited_from_status(status)) == (
        128 + signal.SIGTERM, signal.SIGTERM)


def test_exited_from_status_of_a_killed_child():
    status = _status_of("kill -KILL $$")
    assert wire.parse_exited(wire.exited_from_status(status)) == (137, signal.SIGKILL)


@pytest.mark.parametrize("code", [0, 3, 125, 255])
def test_exited_from_status_of_an_exiting_child(code):
    status = _status_of(f"exit {code}")
    assert wire.parse_exited(wire.exited_from_status(status)) == (code, None)


COMMANDS = [
    (["sh", "-c", "echo hi"], "/work", None),
    (["true"], "/", {}),
    (["printf", "%s\\n", "a b", "", "ünï"], "/tmp/dir with space",
     {"PATH": "/usr/bin:/bin", "EMPTY": "", "EQ": "a=b=c", "UNI": "ö"}),
    ([], "/x", {"A": "1"}),
]


@pytest.mark.parametrize("argv, cwd, env", COMMANDS)
def test_command_round_trip(argv, cwd, env):
    record = wire.encode_command(argv, cwd, env)
    assert wire.decode_command(record) == (argv, cwd, env)


def test_command_with_env_none_means_the_sessions_env():
    record = wire.encode_command(["ls"], "/", None)
    assert record.split(b"\0")[2] == b"-1"
    assert wire.decode_command(record)[2] is None


def test_command_with_undecodable_bytes_survives():
    # surrogateescape: bytes that are not UTF-8 come back as the same bytes
    name = os.fsdecode(b"caf\xe9")
    argv, cwd, env = wire.decode_command(wire.encode_command([name], "/", {"V": name}))
    assert os.fsencode(argv[0]) == b"caf\xe9" and os.fsencode(env["V"]) == b"caf\xe9"


def test_network_report_round_trip():
    report = {"denied": [{"host": "evil.example", "port": 443, "count": 2}],
              "allowed": ["pypi.org"], "note": "ünï", "none": None}
    record = wire.network_report(report)
    assert record[:1] == wire.NETWORK
    assert wire.parse_network_report(record) == report


def test_limit_report_round_trip():
    hit = {"limit": "memory", "value": "512M", "mechanism": "cgroup", "used": 536870912}
    record = wire.limit_report(hit)
    assert record[:1] == wire.LIMIT
    assert wire.parse_limit_report(record) == hit


@pytest.mark.parametrize("sig", [1, 2, 9, 15, 19, 64])
def test_signal_request_round_trip(sig):
    record = wire.signal_request(sig)
    assert len(record) == 4
    assert wire.parse_signal(record) == sig
    assert wire.parse_network_query(record) is None  # not mistaken for a query


@pytest.mark.parametrize("since", [0.0, 1.5, 123456.789012345, 1e-9])
def test_network_query_round_trip(since):
    record = wire.network_query(since)
    assert record[:1] == wire.NETWORK and len(record) == 9
    assert wire.parse_network_query(record) == since


def test_network_query_rejects_other_records():
    assert wire.parse_network_query(wire.network_report({})) is None
    assert wire.parse_network_query(wire.LIMIT + b"\0" * 8) is None


def test_record_tags_are_distinct_single_bytes():
    tags = [wire.STARTED, wire.FAILED, wire.EXITED, wire.NETWORK, wire.READY, wire.PROBED,
            wire.LIMIT]
    assert all(isinstance(t, bytes) and len(t) == 1 for t in tags)
    assert len(set(tags)) == len(tags)
    assert wire.PROBED == b"P"


def test_probed_record_carries_the_blocker_text():
    # PROBED + why user namespaces cannot be made (empty: they can).
    why = "user namespaces are disabled (kernel.unprivileged_userns_clone=0)"
    assert (wire.PROBED + why.encode())[1:].decode() == why
    assert (wire.PROBED + b"")[1:].decode() == ""


def test_records_cross_a_seqpacket_socket_whole():
    a, b = wire.socketpair()
    try:
        failure = Failure("exec", 2, "FileNotFoundError", "x" * 3000)
        wire.send(a, wire.failed(failure))
        wire.send(a, wire.exited(127, None))
        record, fds = wire.receive(b)
        assert fds == [] and wire.parse_failed(record) == failure
        record, _ = wire.receive(b)
        assert wire.parse_exited(record) == (127, None)
        r, w = os.pipe()
        try:
            wire.send(a, wire.STARTED, fds=[r])
            record, fds = wire.receive(b)
            assert record == wire.STARTED and len(fds) == 1
            os.write(w, b"ok")
            assert os.read(fds[0], 2) == b"ok"
            os.close(fds[0])
        finally:
            os.close(r)
            os.close(w)
    finally:
        a.close()
        b.close()
