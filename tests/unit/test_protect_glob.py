"""protect._glob finds exactly what glob.glob finds, without importing glob for the
default git patterns (whole `*` components)."""

import glob
import os
import subprocess
import sys

import pytest

from nsbox.plan import protect
from nsbox.policy import defaults

PATTERNS = tuple(p.rstrip("/") for p in defaults.GIT_PROTECTED if "*" in p) + (
    "*", "*/hooks", "modules/*", "modules/*/*", "modules/*/*/config", "a//*/config",
    "modules/*/hooks/*", "modules/x?/config", "modules/[a]*/config", "modules/**/config")


@pytest.fixture
def gitdir(tmp_path):
    """A git dir with the shapes glob treats specially: hidden names, links to
    directories and to nothing, files where a directory is expected, empty dirs."""
    root = tmp_path / "repo.git"
    for d in ("modules/a/hooks", "modules/b", "modules/.hidden/hooks", "modules/c/d/hooks",
              "worktrees/w1", "worktrees/w2", "hooks", "a/x"):
        (root / d).mkdir(parents=True)
    for f in ("modules/a/config", "modules/.hidden/config", "modules/file", "worktrees/w1/gitdir",
              "worktrees/w2/commondir", "worktrees/plain", "a/x/config", "modules/c/d/config"):
        (root / f).write_text("x")
    os.symlink(root / "modules/a", root / "modules/link-to-dir")
    os.symlink(root / "nowhere", root / "modules/dangling")
    os.symlink(root / "nowhere", root / "worktrees/w1/commondir")
    return str(root)


@pytest.mark.parametrize("pattern", PATTERNS)
def test_same_matches_as_glob(gitdir, pattern):
    assert sorted(protect._glob(gitdir, pattern)) == sorted(
        glob.glob(glob.escape(gitdir) + "/" + pattern))


@pytest.mark.parametrize("pattern", ("modules/*/config", "worktrees/*/gitdir"))
def test_base_with_wildcard_characters(tmp_path, pattern):
    base = tmp_path / "odd[1]*dir"
    (base / "modules/a").mkdir(parents=True)
    (base / "modules/a/config").write_text("x")
    (base / "worktrees/w").mkdir(parents=True)
    (base / "worktrees/w/gitdir").write_text("x")
    assert protect._glob(str(base), pattern) == glob.glob(glob.escape(str(base)) + "/" + pattern)
    assert protect._glob(str(base), pattern)


def test_missing_base_matches_nothing(tmp_path):
    assert protect._glob(str(tmp_path / "absent"), "modules/*/config") == []


def test_default_git_patterns_do_not_import_glob(gitdir):
    code = ("import sys\nfrom nsbox.plan import protect\n"
            f"assert protect._glob({gitdir!r}, 'modules/*/config')\n"
            "print(sorted({'glob', 're', 'fnmatch'} & set(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
