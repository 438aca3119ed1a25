"""The compiled-filter cache: keys, MACs, the secret key, and where the cache may live."""

import hmac
import os
import stat

import pytest

from nsbox.plan import bpf_cache, bpf_cache_write, seccomp_filter
from nsbox.plan.bpf_cache import sha256
from nsbox.policy.model import Policy

PROGRAM = bytes(range(16)) * 4  # 8 "instructions"
ALLOW_ALL = bytes.fromhex("060000000000ff7f")  # BPF_RET|BPF_K SECCOMP_RET_ALLOW
SECRET = bytes(range(32))


def _store(directory, key, program=PROGRAM, secret=SECRET):
    bpf_cache_write.store(str(directory), key, program, secret)


def _load(directory, key, secret=SECRET):
    return bpf_cache.load(str(directory), key, secret)


def test_store_then_load(tmp_path):
    key = bpf_cache.key("v1", b"{}", True, "x86_64", "2.5.4")
    _store(tmp_path / "c", key)
    assert _load(tmp_path / "c", key) == PROGRAM
    assert oct((tmp_path / "c").stat().st_mode & 0o777) == "0o700"
    assert [p.name for p in (tmp_path / "c").iterdir()] == [key + ".bpf"]  # no temp files left


def test_key_depends_on_every_part():
    base = ("v1", b"{}", True, "x86_64", "2.5.4")
    keys = {bpf_cache.key(*base)}
    for i, other in enumerate(("v2", b"{ }", False, "aarch64", "2.5.5")):
        parts = list(base)
        parts[i] = other
        keys.add(bpf_cache.key(*parts))
    assert len(keys) == 6
    assert bpf_cache.key("ab", "c") != bpf_cache.key("a", "bc")


@pytest.mark.parametrize("secret", [b"", b"k", bytes(range(32)), bytes(64), bytes(range(65)),
                                    os.urandom(200)])
@pytest.mark.parametrize("message", [b"", b"abc", os.urandom(1000)])
def test_hmac_matches_the_hmac_module(secret, message):
    assert bpf_cache.hmac_sha256(secret, message) == hmac.digest(secret, message, "sha256")


def test_corrupt_or_foreign_entries_are_rejected(tmp_path):
    directory = tmp_path
    key, other = bpf_cache.key("a"), bpf_cache.key("b")
    _store(directory, key)
    path = tmp_path / (key + ".bpf")
    data = path.read_bytes()
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # flipped bit
    assert _load(directory, key) is None
    path.write_bytes(data[:-3])  # truncated
    assert _load(directory, key) is None
    # An intact entry renamed to another key is not that key's program.
    path.write_bytes(data)
    os.rename(path, tmp_path / (other + ".bpf"))
    assert _load(directory, other) is None
    path.write_bytes(data)
    path.chmod(0o666)
    assert _load(directory, key) is None
    path.chmod(0o600)
    assert _load(directory, key) == PROGRAM
    assert _load(directory, bpf_cache.key("missing")) is None


def test_forged_entry_with_a_plain_sha256_is_rejected(tmp_path):
    """What a sandbox that can write the cache but not read the key would plant."""
    key = bpf_cache.key("a")
    _store(tmp_path, key)
    path = tmp_path / (key + ".bpf")
    path.write_bytes(b"nsbox-bpf 2 %s %s\n" % (key.encode(), sha256(ALLOW_ALL).hexdigest().encode())
                     + ALLOW_ALL)
    assert _load(tmp_path, key) is None
    path.write_bytes(b"nsbox-bpf 1 %s %s\n" % (key.encode(), sha256(ALLOW_ALL).hexdigest().encode())
                     + ALLOW_ALL)  # the old, unauthenticated format
    assert _load(tmp_path, key) is None


def test_entry_made_under_another_key_is_rejected(tmp_path):
    key = bpf_cache.key("a")
    _store(tmp_path, key, ALLOW_ALL, secret=os.urandom(32))
    assert _load(tmp_path, key) is None
    _store(tmp_path, key, ALLOW_ALL)
    assert _load(tmp_path, key) == ALLOW_ALL


def test_symlinked_entry_is_not_followed(tmp_path):
    key = bpf_cache.key("a")
    _store(tmp_path / "real", key)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / (key + ".bpf")).symlink_to(tmp_path / "real" / (key + ".bpf"))
    assert _load(tmp_path / "c", key) is None


def test_secret_is_made_once_and_kept(tmp_path):
    made = bpf_cache.cache_secret(str(tmp_path))
    assert made is not None and len(made) == 32
    info = (tmp_path / bpf_cache.KEY_FILE).stat()
    assert stat.S_IMODE(info.st_mode) == 0o600 and info.st_uid == os.geteuid()
    assert bpf_cache.cache_secret(str(tmp_path)) == made
    assert [p.name for p in tmp_path.iterdir()] == [bpf_cache.KEY_FILE]  # no temp files left
    other = tmp_path / "other"
    other.mkdir()
    assert bpf_cache.cache_secret(str(other)) != made


def test_unfit_secret_files_are_not_used(tmp_path):
    path = tmp_path / bpf_cache.KEY_FILE
    bpf_cache.cache_secret(str(tmp_path))
    path.chmod(0o640)  # group-readable
    assert bpf_cache.cache_secret(str(tmp_path)) is None
    path.chmod(0o600)
    path.write_bytes(bytes(31))  # wrong size
    assert bpf_cache.cache_secret(str(tmp_path)) is None
    path.unlink()
    (tmp_path / "elsewhere").write_bytes(bytes(32))
    (tmp_path / "elsewhere").chmod(0o600)
    path.symlink_to(tmp_path / "elsewhere")
    assert bpf_cache.cache_secret(str(tmp_path)) is None
    path.unlink()
    path.mkdir()
    assert bpf_cache.cache_secret(str(tmp_path)) is None


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the file away")
def test_secret_file_of_another_user_is_not_used(tmp_path):
    bpf_cache.cache_secret(str(tmp_path))
    os.chown(tmp_path / bpf_cache.KEY_FILE, 65534, 65534)
    assert bpf_cache.cache_secret(str(tmp_path)) is None


def test_no_secret_where_it_cannot_be_made(tmp_path):
    assert bpf_cache.cache_secret(str(tmp_path / "missing")) is None


@pytest.mark.skipif(seccomp_filter.libseccomp_version() is None, reason="no versioned libseccomp")
def test_bpf_for_keys_the_cache_from_the_state_directory(tmp_path):
    env = {"HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache"),
           "XDG_STATE_HOME": str(tmp_path / "state")}
    program = seccomp_filter.bpf_for(Policy(), (), env)
    key_file = tmp_path / "state" / "nsbox" / bpf_cache.KEY_FILE
    [entry] = (tmp_path / "cache" / "nsbox" / "seccomp").glob("*.bpf")
    assert bpf_cache.load(str(entry.parent), entry.stem, key_file.read_bytes()) == program
    assert seccomp_filter.bpf_for(Policy(), (), env) == program  # a hit
    # A key nsbox cannot trust: the cache is neither read nor written.
    entry.unlink()
    key_file.chmod(0o644)
    assert seccomp_filter.bpf_for(Policy(), (), env) == program
    assert not list(entry.parent.glob("*.bpf"))


def test_cache_inside_a_writable_root_is_not_used(tmp_path):
    cache = tmp_path / "home" / ".cache" / "nsbox" / "seccomp"
    assert bpf_cache.usable_dir(str(cache), [str(tmp_path / "elsewhere")]) == str(cache)
    assert bpf_cache.usable_dir(str(cache), [str(tmp_path / "home")]) is None
    assert bpf_cache.usable_dir(str(cache), [str(cache)]) is None
    assert bpf_cache.usable_dir(str(cache), ["/"]) is None
    assert bpf_cache.usable_dir(str(cache), [str(tmp_path / "ho")]) == str(cache)
    # Through a symlink too: the real location counts.
    (tmp_path / "ws").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "ws")
    assert bpf_cache.usable_dir(str(tmp_path / "link" / "c"), [str(tmp_path / "ws")]) is None


def test_default_dir_follows_xdg():
    assert bpf_cache.default_dir({"XDG_CACHE_HOME": "/c", "HOME": "/h"}) == "/c/nsbox/seccomp"
    assert bpf_cache.default_dir({"XDG_CACHE_HOME": "rel", "HOME": "/h"}) == "/h/.cache/nsbox/seccomp"
    assert bpf_cache.default_dir({"HOME": "/h"}) == "/h/.cache/nsbox/seccomp"


def test_unwritable_cache_is_no_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    _store(blocker / "sub", bpf_cache.key("a"))  # no exception
