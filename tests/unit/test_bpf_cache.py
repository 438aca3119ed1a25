"""The compiled-filter cache: keys, integrity checks, and where it may live."""

import os

from nsbox.launch import bpf_cache

PROGRAM = bytes(range(16)) * 4  # 8 "instructions"


def test_store_then_load(tmp_path):
    key = bpf_cache.key("v1", b"{}", True, "x86_64", "2.5.4")
    bpf_cache.store(str(tmp_path / "c"), key, PROGRAM)
    assert bpf_cache.load(str(tmp_path / "c"), key) == PROGRAM
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


def test_corrupt_or_foreign_entries_are_rejected(tmp_path):
    directory = str(tmp_path)
    key, other = bpf_cache.key("a"), bpf_cache.key("b")
    bpf_cache.store(directory, key, PROGRAM)
    path = tmp_path / (key + ".bpf")
    data = path.read_bytes()
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # flipped bit
    assert bpf_cache.load(directory, key) is None
    path.write_bytes(data[:-3])  # truncated
    assert bpf_cache.load(directory, key) is None
    # An intact entry renamed to another key is not that key's program.
    path.write_bytes(data)
    os.rename(path, tmp_path / (other + ".bpf"))
    assert bpf_cache.load(directory, other) is None
    path.write_bytes(data)
    path.chmod(0o666)
    assert bpf_cache.load(directory, key) is None
    path.chmod(0o600)
    assert bpf_cache.load(directory, key) == PROGRAM
    assert bpf_cache.load(directory, bpf_cache.key("missing")) is None


def test_symlinked_entry_is_not_followed(tmp_path):
    key = bpf_cache.key("a")
    bpf_cache.store(str(tmp_path / "real"), key, PROGRAM)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / (key + ".bpf")).symlink_to(tmp_path / "real" / (key + ".bpf"))
    assert bpf_cache.load(str(tmp_path / "c"), key) is None


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
    bpf_cache.store(str(blocker / "sub"), bpf_cache.key("a"), PROGRAM)  # no exception
