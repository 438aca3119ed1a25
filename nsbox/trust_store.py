"""The files the user trusted with `nsbox trust`: real path -> sha256 of their exact bytes.

Kept as trusted-policies.json in nsbox's state directory, which no sandbox can
read or write. A file whose bytes changed since it was trusted is untrusted again.
"""

import hashlib
import json
import os

from nsbox import state
from nsbox.errors import PolicyError

STORE_FILE = "trusted-policies.json"


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_trusted(real_path: str, sha256: str, env=None) -> bool:
    """Whether the user trusted exactly these bytes at this path. Fails closed."""
    try:
        return entries(env).get(real_path) == sha256
    except PolicyError:
        return False


def check_profile(path: str, data: bytes, writable_roots, env=None) -> None:
    """Refuse a seccomp profile file in a writable root unless the user trusted exactly
    `data`, the bytes that will be compiled (so swapping the file after a check is moot)."""
    real = os.path.realpath(path)
    for root in writable_roots:
        root = os.path.realpath(root)
        if real == root or real.startswith(root.rstrip("/") + "/"):
            break
    else:
        return
    if not is_trusted(real, digest(data), env):
        raise PolicyError(f"seccomp profile {real} is in writable root {root}, where a sandbox "
                          f"could have written it; if you wrote it, run `nsbox trust {real}`, "
                          f"or move it out of {root}")


def entries(env=None) -> dict:
    """{real path: sha256}; PolicyError if the store is unreadable or corrupt."""
    path = os.path.join(state.ensure_state_dir(env), STORE_FILE)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return {}
    except OSError as err:
        raise PolicyError(f"cannot read nsbox's trust store {path}: {err.strerror}") from None
    with open(fd, "rb") as f:
        raw = f.read()
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise PolicyError(f"nsbox's trust store {path} is corrupt; remove it and trust "
                          "your policy files again")
    return data


def add(real_path: str, sha256: str, env=None) -> None:
    _update(lambda data: data.__setitem__(real_path, sha256), env)


def remove(real_path: str, env=None) -> bool:
    """Forget `real_path`; False if it was not trusted."""
    return _update(lambda data: data.pop(real_path, None) is not None, env)


def _update(change, env):
    """Apply `change` to the entries under a lock, then replace the file atomically."""
    import fcntl

    directory = state.ensure_state_dir(env)
    lock = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = entries(env)
        result = change(data)
        _write(directory, data)
        return result
    finally:
        os.close(lock)


def _write(directory: str, data: dict) -> None:
    import tempfile

    temp = None
    try:
        fd, temp = tempfile.mkstemp(dir=directory, prefix=".trusted-", suffix=".tmp")
        with open(fd, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, os.path.join(directory, STORE_FILE))
    except BaseException as err:
        if temp is not None and os.path.lexists(temp):
            os.unlink(temp)
        if isinstance(err, OSError):
            raise PolicyError(f"cannot update nsbox's trust store in {directory}: "
                              f"{err.strerror}") from None
        raise
