"""Child -> parent failure records over a close-on-exec pipe.

EOF with no record means the command was exec'd. A record is
`step NUL errno NUL message`, written once by whichever child failed.
"""

import os

SETUP_FAILED = 125
CANNOT_EXECUTE = 126
NOT_FOUND = 127


class Failure:
    __slots__ = ("step", "errno", "message")

    def __init__(self, step: str, errno: int, message: str):
        self.step, self.errno, self.message = step, errno, message

    @property
    def exit_code(self) -> int:
        if self.step != "exec":
            return SETUP_FAILED
        return NOT_FOUND if self.errno in (2, 20) else CANNOT_EXECUTE  # ENOENT, ENOTDIR


def report(fd: int, step: str, err: BaseException) -> None:
    """Write one failure record; used in a forked child, so it never raises."""
    try:
        errno = getattr(err, "errno", None) or 0
        text = f"{step}\0{errno}\0{err}".encode(errors="replace")
        os.write(fd, text[:4000])
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
    step, errno, message = b"".join(chunks).decode(errors="replace").split("\0", 2)
    return Failure(step, int(errno or 0), message)
