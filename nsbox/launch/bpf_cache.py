"""On-disk cache of compiled seccomp programs, so a warm start loads no libseccomp.

A cached program is trusted as-is by the next run, so the cache is never used when
the sandboxed command could write to it, files are written atomically, and a file
is accepted only if it is ours, names its own key and matches its own digest.
"""

import os

# The builtin SHA-256 spares importing hashlib and OpenSSL (~2 ms) on the start-up path.
try:
    from _sha2 import sha256  # Python >= 3.12
except ImportError:
    try:
        from _sha256 import sha256
    except ImportError:
        from hashlib import sha256

_MAGIC = b"nsbox-bpf 1"
_MAX_BYTES = 4096 * 8  # BPF_MAXINSNS instructions of 8 bytes


def default_dir(env) -> str:
    base = env.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):
        base = os.path.join(env.get("HOME") or os.path.expanduser("~"), ".cache")
    return os.path.join(base, "nsbox", "seccomp")


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


def load(directory: str, cache_key: str) -> bytes | None:
    """The cached program, or None if absent, not ours, or not intact."""
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
    if len(fields) != 4 or b" ".join(fields[:2]) != _MAGIC:
        return None
    if fields[2].decode(errors="replace") != cache_key:
        return None
    if not program or len(program) % 8 or len(program) > _MAX_BYTES:
        return None
    if sha256(program).hexdigest().encode() != fields[3]:
        return None
    return program


def store(directory: str, cache_key: str, program: bytes) -> None:
    """Write atomically (temporary file + rename); a cache we cannot write is no error."""
    import tempfile

    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".bpf")
    except OSError:
        return
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(b"%s %s %s\n" % (_MAGIC, cache_key.encode(),
                                     sha256(program).hexdigest().encode()))
            f.write(program)
        os.replace(tmp, os.path.join(directory, cache_key + ".bpf"))
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
