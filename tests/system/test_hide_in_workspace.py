"""`--hide .env` (README's example): a hidden path inside the workspace hides that path
and, with full isolation, nothing else."""

import pytest

from conftest import needs_landlock

SECRET = "API_KEY=do-not-leak"


@pytest.fixture
def ws_with_env(workspace):
    (workspace / ".env").write_text(SECRET + "\n")
    (workspace / "old.txt").write_text("old\n")
    (workspace / "sub").mkdir()
    return workspace


def test_full_isolation_hides_only_that_path(nsbox_exec, ws_with_env):
    r = nsbox_exec("touch new && mkdir dir && git init -q && echo more >> old.txt"
                   " && rm old.txt && touch sub/x && ls && cat .env", "--hide", ".env")
    assert r.returncode == 0, r.stderr
    assert SECRET.encode() not in r.stdout
    assert b"new" in r.stdout
    for name in ("new", "dir", ".git/HEAD", "sub/x"):
        assert (ws_with_env / name).exists(), name
    assert not (ws_with_env / "old.txt").exists()
    assert (ws_with_env / ".env").read_text() == SECRET + "\n"


@needs_landlock(1)
def test_landlock_only_closes_the_directories_above_it(nsbox_exec, ws_with_env):
    # README's landlock-only limits: Landlock can deny .env only by granting its
    # siblings, so its directory can't be listed or get new entries; the rest stays.
    r = nsbox_exec("cat .env; echo more >> old.txt && touch sub/x && mkdir sub/d"
                   " && echo ok; touch new; ls .", "--isolation", "landlock", "--hide", ".env")
    assert SECRET.encode() not in r.stdout
    assert b"ok" in r.stdout, r.stderr
    assert (ws_with_env / "old.txt").read_text() == "old\nmore\n"
    assert (ws_with_env / "sub" / "x").exists() and (ws_with_env / "sub" / "d").is_dir()
    assert b".env: Permission denied" in r.stderr
    assert not (ws_with_env / "new").exists()
    assert b"cannot open directory" in r.stderr
