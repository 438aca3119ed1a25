from nsbox.kernel import mounts


def test_kept_flags_repeat_locked_options():
    flags = mounts.kept_flags("rw,nosuid,nodev,noexec,noatime")
    assert flags == mounts.MS_NOSUID | mounts.MS_NODEV | mounts.MS_NOEXEC | mounts.MS_NOATIME


def test_kept_flags_atime():
    assert mounts.kept_flags("rw,relatime") == mounts.MS_RELATIME
    assert mounts.kept_flags("ro,nodiratime") == mounts.MS_NODIRATIME | mounts.MS_STRICTATIME
    assert mounts.kept_flags("rw,nosymfollow,relatime") == mounts.MS_NOSYMFOLLOW | mounts.MS_RELATIME
