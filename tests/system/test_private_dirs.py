"""Policy.private_dirs and read_only_binds for real: each session's own /var/tmp, and a
host directory shown read-only in it that nothing inside can change, move or unmount."""

import os

import pytest

from nsbox.api import Session
from nsbox.errors import PolicyError
from nsbox.policy.model import Policy


@pytest.fixture
def place(var_tmp):
    (var_tmp / "ws").mkdir()
    (var_tmp / "tools").mkdir()
    (var_tmp / "tools" / "tool").write_text("original\n")
    return var_tmp


def _policy(place, **changes):
    return Policy(workspace=str(place / "ws"), private_dirs=("/var/tmp",),
                  read_only_binds=(f"{place / 'tools'}:/var/tmp/tools",), **changes)


def test_each_session_has_its_own_var_tmp_with_the_bind_read_only(place):
    host_before = sorted(os.listdir("/var/tmp"))
    with Session(_policy(place)) as first, Session(_policy(place)) as second:
        made = first.run(["sh", "-c", "echo mine > /var/tmp/note && cat /var/tmp/note"])
        assert made.returncode == 0 and made.stdout == b"mine\n", made.stderr
        # (the workspace, under /var/tmp here, shows through: it is mounted on top)
        unseen = second.run(["sh", "-c", "test -e /var/tmp/note || echo absent; ls /var/tmp"])
        assert unseen.stdout.split()[0] == b"absent"
        assert sorted(unseen.stdout.split()[1:]) == sorted([place.name.encode(), b"tools"])
        assert first.run(["cat", "/var/tmp/tools/tool"]).stdout == b"original\n"
        attacks = {
            "write": "echo pwned >> /var/tmp/tools/tool",
            "create": "touch /var/tmp/tools/new",
            "remove": "rm -f /var/tmp/tools/tool",
            "move": "mv /var/tmp/tools /var/tmp/moved",
            "unmount": "umount /var/tmp/tools",
            "unmount lazily": "umount -l /var/tmp/tools",
        }
        for what, script in attacks.items():
            result = first.run(["sh", "-c", f"echo started; {script}"])
            assert result.stdout == b"started\n", (what, result.stderr)
            assert result.returncode != 0, (what, result.stderr)
        shown = first.run(["sh", "-c", "cat /var/tmp/tools/tool; ls /var/tmp"])
        assert shown.stdout.split()[0] == b"original"
        assert sorted(shown.stdout.split()[1:]) == sorted([place.name.encode(), b"note",
                                                           b"tools"])
    assert (place / "tools" / "tool").read_text() == "original\n"
    assert sorted(os.listdir(place / "tools")) == ["tool"]
    assert sorted(os.listdir("/var/tmp")) == host_before  # nothing reached the host's


def test_landlock_only_isolation_refuses_them(place):
    with pytest.raises(PolicyError, match="need full isolation"):
        Session(_policy(place, isolation="landlock"))


def test_a_hidden_path_in_a_private_dir_needs_no_mask(place):
    # The private tmpfs is fresh: the host's file is not in it, so nothing is masked
    # there (a mask would need a mount point the tmpfs does not have).
    (place / "secret").write_text("host secret\n")
    policy = _policy(place).with_changes(hidden=_policy(place).hidden + (str(place / "secret"),))
    with Session(policy) as session:
        seen = session.run(["sh", "-c", f"cat {place / 'secret'}; echo rc=$?"])
        assert b"host secret" not in seen.stdout + seen.stderr
        assert seen.stdout.endswith(b"rc=1\n"), seen.stderr
        wrote = session.run(["sh", "-c", f"echo pwned > {place / 'secret'}; echo done"])
        assert wrote.stdout == b"done\n"  # its own tmpfs: the host's file is another
    assert (place / "secret").read_text() == "host secret\n"
