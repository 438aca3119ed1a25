"""Host-side file access inside a workspace the sandboxed command controls: links stay inside."""

import os

import pytest

from nsbox.kernel import beneath


@pytest.fixture
def planted(tmp_path):
    """A workspace whose command planted links to a secret outside it."""
    secret = tmp_path / "id_rsa"
    secret.write_text("TOPSECRET\n")
    ws = tmp_path / "ws"
    (ws / "sub").mkdir(parents=True)
    (ws / "sub" / "real.txt").write_text("inside\n")
    os.symlink(secret, ws / "absolute")
    os.symlink("../id_rsa", ws / "relative")
    os.symlink("/sub/real.txt", ws / "absolute_inside")
    os.symlink(tmp_path, ws / "dirlink")
    os.mkfifo(ws / "fifo")
    return ws, secret


def test_reads_never_follow_a_link_out_of_the_workspace(planted):
    ws, _ = planted
    for path in ("absolute", "relative", "dirlink/id_rsa", "../id_rsa", "/../id_rsa"):
        with pytest.raises(FileNotFoundError):
            beneath.read_file(str(ws), path)
    assert beneath.read_file(str(ws), "absolute_inside") == b"inside\n"
    assert beneath.read_file(str(ws), "/sub/../sub/real.txt") == b"inside\n"


def test_writes_never_follow_a_link_out_of_the_workspace(planted):
    ws, secret = planted
    for path in ("absolute", "dirlink/id_rsa", "dirlink/new/file"):
        with pytest.raises(FileNotFoundError):
            beneath.write_file(str(ws), path, b"overwritten")
    beneath.write_file(str(ws), "relative", b"stays inside")  # lands on <ws>/id_rsa
    assert secret.read_text() == "TOPSECRET\n"
    assert (ws / "id_rsa").read_bytes() == b"stays inside"
    assert sorted(os.listdir(secret.parent)) == ["id_rsa", "ws"]


def test_special_files_and_limits(planted):
    ws, _ = planted
    with pytest.raises(OSError, match="not a regular file"):  # and no hang on the FIFO
        beneath.read_file(str(ws), "fifo")
    with pytest.raises(IsADirectoryError):
        beneath.read_file(str(ws), "sub")
    with pytest.raises(beneath.FileTooLarge):
        beneath.read_file(str(ws), "sub/real.txt", max_size=3)


def test_write_creates_parents_and_replaces_contents(planted):
    ws, _ = planted
    beneath.write_file(str(ws), "a/b/c.txt", b"first, longer")
    beneath.write_file(str(ws), "/a/b/c.txt", b"second")
    assert (ws / "a" / "b" / "c.txt").read_bytes() == b"second"
    with pytest.raises(IsADirectoryError):
        beneath.write_file(str(ws), "a/b", b"x")
