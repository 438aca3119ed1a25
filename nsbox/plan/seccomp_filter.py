"""The seccomp program for a run: from the on-disk cache, or compiled on a miss.

Runs in the parent before fork. A cache hit reads the cache key and one entry;
only a miss parses the profile and imports the libseccomp binding.
"""

import os
import sys

from nsbox import state
from nsbox.errors import PolicyError
from nsbox.plan import bpf_cache
from nsbox.policy import profiles

# Bump when the way a profile becomes BPF changes, to retire old cache entries.
COMPILER_VERSION = "3"  # 2: entries carry an HMAC; 3: the reporting variant's table as lines


def bpf_for(policy, writable_roots, env=None, deny_inet: bool = False,
            state_dir: str | None = None, report=None):
    """The BPF program for the policy's profile; PolicyError if the profile is bad, or
    is a file in a writable root whose bytes the user did not trust.

    env: nsbox's own environment (default os.environ), which places its cache and
    state directories; never the command's.
    state_dir: nsbox's state directory when the caller has already made it.
    deny_inet: also fail AF_INET/AF_INET6 sockets (for runs without their own
    network namespace; an empty namespace already cuts the network and keeps
    its loopback usable).
    report: the reporting variant (see kernel.seccomp_compile.compile_bpf and
    plan.denial_rules): returns (program, {syscall number: (name, errno)}) then.
    """
    path = profiles.find(policy.seccomp)
    data = profiles.read(path)
    if profiles.is_path(policy.seccomp):
        from nsbox import trust_store

        trust_store.check_profile(path, data, writable_roots)
    network_off = deny_inet
    version = libseccomp_version()
    env = os.environ if env is None else env
    directory = secret = None
    if version is not None:
        directory = bpf_cache.usable_dir(bpf_cache.default_dir(env), writable_roots)
    if directory is not None:
        secret = cache_secret(env, state_dir)
    # The reporting variant is another program: its own cache entry.
    variant = () if report is None else ("report", repr(tuple(report)))
    cache_key = bpf_cache.key(COMPILER_VERSION, data, network_off, os.uname().machine,
                              version, os.uname().release, *variant)
    if secret is not None:
        cached = bpf_cache.load(directory, cache_key, secret)
        if cached is not None:
            return cached if report is None else _unpack(cached)
    from nsbox.plan import profile_compiler  # a cache miss only

    program = profile_compiler.compile_profile(data, path, network_off, report)
    if secret is not None:
        from nsbox.plan import bpf_cache_write

        bpf_cache_write.store(directory, cache_key,
                              program if report is None else _pack(*program), secret)
    return program


_LENGTH = 4  # the reporting variant's cache entry: program length, program, table


def _pack(program: bytes, table: dict) -> bytes:
    """The table as `nr name errno` lines: read on every launch, so no json import."""
    lines = "\n".join(f"{nr} {name} {errno}" for nr, (name, errno) in table.items())
    blob = len(program).to_bytes(_LENGTH, "little") + program + lines.encode()
    return blob + b" " * (-len(blob) % 8)  # the cache holds whole BPF instructions only


def _unpack(blob: bytes) -> tuple:
    size = int.from_bytes(blob[:_LENGTH], "little")
    table = {}
    for line in blob[_LENGTH + size:].decode().split("\n"):
        fields = line.split()
        if len(fields) == 3:
            table[int(fields[0])] = (fields[1], int(fields[2]))
    return blob[_LENGTH:_LENGTH + size], table


def cache_secret(env, state_dir: str | None = None) -> bytes | None:
    """The cache's MAC key from nsbox's state directory; None (no cache) if unusable."""
    try:
        return bpf_cache.cache_secret(state_dir or state.ensure_state_dir(env))
    except PolicyError:
        return None


_UNREAD = object()
_libseccomp_version = _UNREAD


def libseccomp_version() -> str | None:
    """Version of the libseccomp.so.2 the binding would load (read once per process)."""
    global _libseccomp_version
    if _libseccomp_version is _UNREAD:
        _libseccomp_version = _read_libseccomp_version()
    return _libseccomp_version


def _read_libseccomp_version() -> str | None:
    for directory in _library_dirs():
        candidate = os.path.join(directory, "libseccomp.so.2")
        if os.path.exists(candidate):
            name = os.path.basename(os.path.realpath(candidate))
            prefix = "libseccomp.so."
            if name.startswith(prefix) and name != "libseccomp.so.2":
                return name[len(prefix):]
            return None  # unversioned file name: no safe cache key
    return None


def _library_dirs() -> list:
    multiarch = getattr(sys.implementation, "_multiarch", "") or ""
    dirs = [d for d in os.environ.get("LD_LIBRARY_PATH", "").split(":") if d]
    for prefix in ("/usr/local/lib", "/usr/lib", "/lib"):
        if multiarch:
            dirs.append(os.path.join(prefix, multiarch))
    dirs += ["/usr/lib64", "/lib64", "/usr/local/lib", "/usr/lib", "/lib"]
    return dirs
