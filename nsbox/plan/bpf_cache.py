"""On-disk cache of compiled seccomp programs, so a warm start loads no libseccomp.

A cached program is trusted as-is by the next run, so every entry carries an
HMAC-SHA256 under a secret key kept in nsbox's state directory, which no sandbox
can read or write: a sandbox that can write the cache (a `--writable ~/.cache`)
cannot forge an entry a later run accepts. The cache is also never used when
the sandboxed command could write to it, and files are written atomically
(bpf_cache_write: imported only when the key or an entry is missing).
"""

import os

from nsbox import state

# The builtin SHA-256 spares importing hashlib, hmac and OpenSSL (~2 ms) on the start-up path.
try:
    from _sha2 import sha256  # Python >= 3.12
except ImportError:
    try:
        from _sha256 import sha256
    except ImportError:
        from hashlib import sha256
from _operator import _compare_digest as same_digest  # what hmac.compare_digest is

MAGIC = b"nsbox-bpf 2"  # 2: entries carry an HMAC; unauthenticated "1" entries are ignored
_MAX_BYTES = 4096 * 8  # BPF_MAXINSNS instructions of 8 bytes
_BLOCK = 64  # SHA-256's block size, for HMAC
KEY_FILE = "cache.key"
KEY_BYTES = 32


def default_dir(env) -> str:
    return os.path.join(state.cache_dir(env), "seccomp")


def usable_dir(directory: str, writable_roots) -> str | None:
    """The cache directory, or None when a writable root of the run contains it."""
    real = os.path.realpath(directory)
    for root in writable_roots:
        root = os.path.realpath(root)
        if real == root or real.startswith(root.rstrip("/") + "/"):
            return None
    return real


def key(*parts) -> str:
    digest = sha256()
    for part in parts:
        raw = part if isinstance(part, bytes) else str(part).encode()
        digest.update(len(raw).to_bytes(8, "little") + raw)
    return digest.hexdigest()


def hmac_sha256(secret: bytes, message: bytes) -> bytes:
    """HMAC-SHA256 (RFC 2104), the same as hmac.digest(secret, message, "sha256")."""
    if len(secret) > _BLOCK:
        secret = sha256(secret).digest()
    secret = secret.ljust(_BLOCK, b"\0")
    inner = sha256(bytes(b ^ 0x36 for b in secret) + message).digest()
    return sha256(bytes(b ^ 0x5C for b in secret) + inner).digest()


def cache_secret(state_directory: str) -> bytes | None:
    """The cache's MAC key from `state_directory`, made on first use; None if unusable."""
    path = os.path.join(state_directory, KEY_FILE)
    try:
        return read_secret(path)
    except FileNotFoundError:
        from nsbox.plan import bpf_cache_write  # first use only

        return bpf_cache_write.make_secret(state_directory, path)
    except OSError:
        return None


def read_secret(path: str) -> bytes | None:
    """The key, if the file is ours, a regular file, closed to others and of the right size."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if (info.st_mode & 0o170000 != 0o100000 or info.st_uid != os.geteuid()
                or info.st_mode & 0o077 or info.st_size != KEY_BYTES):
            return None
        data = os.read(fd, KEY_BYTES + 1)
    finally:
        os.close(fd)
    return data if len(data) == KEY_BYTES else None


def signed(cache_key: str, program: bytes) -> bytes:
    """What an entry's MAC covers: its header's magic and key, and the program."""
    return b"%s %s\n" % (MAGIC, cache_key.encode()) + program


def load(directory: str, cache_key: str, secret: bytes) -> bytes | None:
    """The cached program, or None if absent, not ours, or its MAC does not verify."""
    try:
        fd = os.open(os.path.join(directory, cache_key + ".bpf"),
                     os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if info.st_uid != os.geteuid() or info.st_mode & 0o022 or info.st_size > 4096 + _MAX_BYTES:
            return None
        data = os.read(fd, info.st_size + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    header, _, program = data.partition(b"\n")
    fields = header.split(b" ")
    if len(fields) != 4 or b" ".join(fields[:2]) != MAGIC:
        return None
    if fields[2].decode(errors="replace") != cache_key:
        return None
    if not program or len(program) % 8 or len(program) > _MAX_BYTES:
        return None
    expected = hmac_sha256(secret, signed(cache_key, program)).hex().encode()
    if not same_digest(expected, fields[3]):
        return None
    return program
