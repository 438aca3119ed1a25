"""Writing the BPF cache (see bpf_cache): its MAC key on first use, and an entry after
a compile. A run that finds both only reads, and never imports this.
"""

import os

from nsbox.plan.bpf_cache import KEY_BYTES, KEY_FILE, MAGIC, hmac_sha256, read_secret, signed


def make_secret(state_directory: str, path: str) -> bytes | None:
    """A new random key, written whole before it appears under its name (link, never
    replace: when two runs race, both use the one that got there first)."""
    new = os.urandom(KEY_BYTES)
    tmp = os.path.join(state_directory, f".{KEY_FILE}.{os.urandom(8).hex()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
    except OSError:
        return None
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        if os.write(fd, new) != KEY_BYTES:
            return None
        os.link(tmp, path)
        return new
    except FileExistsError:
        try:
            return read_secret(path)
        except OSError:
            return None
    except OSError:
        return None
    finally:
        os.close(fd)
        try:
            os.unlink(tmp)
        except OSError:
            pass


def store(directory: str, cache_key: str, program: bytes, secret: bytes) -> None:
    """Write atomically (temporary file + rename); a cache we cannot write is no error."""
    import tempfile

    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".bpf")
    except OSError:
        return
    mac = hmac_sha256(secret, signed(cache_key, program)).hex().encode()
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(b"%s %s %s\n" % (MAGIC, cache_key.encode(), mac))
            f.write(program)
        os.replace(tmp, os.path.join(directory, cache_key + ".bpf"))
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
