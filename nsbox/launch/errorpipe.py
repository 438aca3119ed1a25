"""The one failure record: from a forked child to its caller, and on to the runner.

A child reports over a close-on-exec pipe: EOF with no record means the command
was exec'd. A record is `step NUL errno NUL kind NUL message` (kind: the
exception's class name), written once by whichever process failed; the library's
wire carries the same bytes unchanged, and describe() is the one place that
turns a record into words.
"""

import os

SETUP_FAILED = 125
CANNOT_EXECUTE = 126
NOT_FOUND = 127
EXEC_STEP = "exec"


class Failure:
    __slots__ = ("step", "errno", "kind", "message")

    def __init__(self, step: str, errno: int, kind: str, message: str):
        self.step, self.errno, self.kind, self.message = step, errno, kind, message

    @property
    def exit_code(self) -> int:
        if self.step != EXEC_STEP:
            return SETUP_FAILED
        return NOT_FOUND if self.errno in (2, 20) else CANNOT_EXECUTE  # ENOENT, ENOTDIR

    def __eq__(self, other) -> bool:
        return isinstance(other, Failure) and encode(self) == encode(other)

    def __repr__(self) -> str:
        return f"Failure({self.step!r}, {self.errno}, {self.kind!r}, {self.message!r})"


def from_exception(step: str, err: BaseException) -> Failure:
    return Failure(step, getattr(err, "errno", None) or 0, type(err).__name__, str(err))


def encode(failure: Failure) -> bytes:
    text = f"{failure.step}\0{failure.errno}\0{failure.kind}\0{failure.message}"
    return text.encode(errors="replace")[:4000]


def decode(data: bytes) -> Failure:
    step, errno, kind, message = data.decode(errors="replace").split("\0", 3)
    return Failure(step, int(errno or 0), kind, message)


def describe(failure: Failure, command: str) -> str:
    """The failure in words, for the CLI's stderr and the library's errors."""
    if failure.step != EXEC_STEP:
        return f"sandbox setup failed at {failure.step}: {failure.message}"
    if failure.exit_code == NOT_FOUND:
        return f"{command}: command not found inside the sandbox"
    return f"{command}: cannot execute: {failure.message}"


def report(fd: int, step: str, err: BaseException) -> None:
    """Write one failure record; used in a forked child, so it never raises."""
    try:
        os.write(fd, encode(from_exception(step, err)))
    except BaseException:
        pass


def read_failure(fd: int):
    """Block until exec (EOF, returns None) or a failure record arrives."""
    chunks = []
    while True:
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(fd)
    if not chunks:
        return None
    return decode(b"".join(chunks))
