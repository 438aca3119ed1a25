"""Resolving protected and hidden paths on a real (temporary) tree; no root, no namespaces."""

import os

import pytest

from nsbox.errors import PolicyError
from nsbox.launch import protect
from nsbox.policy.model import Policy


def make_repo(root):
    for d in (".git/objects", ".git/refs", ".git/hooks", ".git/modules/sub/hooks"):
        os.makedirs(root / d, exist_ok=True)
    (root / ".git" / "config").write_text("")
    (root / ".git" / "modules" / "sub" / "config").write_text("")


def test_repo_is_pinned_and_its_hooks_config_and_submodules_are_read_only(tmp_path):
    ws = tmp_path / "ws"
    make_repo(ws)
    g = protect.resolve(Policy(), str(ws), (str(ws),), None)
    git = str(ws / ".git")
    assert g.pinned == (git,)
    for sub in ("hooks", "config", "info", "config.worktree", "modules/sub/hooks",
                "modules/sub/config"):
        assert f"{git}/{sub}" in g.readonly
    assert not any(p.startswith((f"{git}/objects", f"{git}/refs")) for p in g.readonly)
    # Missing ones were created so they can be mount points.
    assert (ws / ".git" / "info").is_dir() and (ws / ".git" / "config.worktree").is_file()
    assert (ws / ".nsbox").is_dir() and str(ws / ".nsbox") in g.readonly


def test_report_only_mode_creates_nothing(tmp_path):
    ws = tmp_path / "ws"
    make_repo(ws)
    g = protect.resolve(Policy(), str(ws), (str(ws),), None, create=False)
    assert str(ws / ".git" / "info") in g.created
    assert not (ws / ".git" / "info").exists() and not (ws / ".nsbox").exists()


def test_read_only_preset_creates_nothing_in_the_workspace(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    g = protect.resolve(Policy(preset="read-only"), str(ws), (), None)
    assert g.readonly == () and not (ws / ".nsbox").exists()


def test_worktree_shared_git_dir_becomes_writable_with_its_protections(tmp_path):
    main, ws = tmp_path / "main", tmp_path / "ws"
    make_repo(main)
    gitdir = main / ".git" / "worktrees" / "ws"
    gitdir.mkdir(parents=True)
    (gitdir / "commondir").write_text("../..\n")
    ws.mkdir()
    (ws / ".git").write_text(f"gitdir: {gitdir}\n")
    g = protect.resolve(Policy(), str(ws), (str(ws),), None)
    assert g.extra_writable == (str(main / ".git"),)
    assert str(gitdir) in g.pinned
    assert str(ws / ".git") in g.readonly  # the pointer itself
    assert str(main / ".git" / "hooks") in g.readonly
    assert str(gitdir / "config.worktree") in g.readonly


def test_symlinked_git_dir_or_hooks_fail_closed(tmp_path):
    ws = tmp_path / "ws"
    make_repo(tmp_path / "real")
    ws.mkdir()
    os.symlink(tmp_path / "real" / ".git", ws / ".git")
    with pytest.raises(PolicyError, match="symlink"):
        protect.resolve(Policy(), str(ws), (str(ws),), None)
    os.unlink(ws / ".git")
    make_repo(ws)
    os.rmdir(ws / ".git" / "hooks")
    os.symlink("/tmp", ws / ".git" / "hooks")
    with pytest.raises(PolicyError, match="hooks is a symlink"):
        protect.resolve(Policy(), str(ws), (str(ws),), None)


def test_hidden_paths_resolve_under_home_and_skip_missing(tmp_path):
    home, ws = tmp_path / "home", tmp_path / "ws"
    (home / ".ssh").mkdir(parents=True)
    (home / ".netrc").write_text("")
    ws.mkdir()
    g = protect.resolve(Policy(), str(ws), (str(ws), str(home)), str(home))
    assert (str(home / ".ssh"), True) in g.hidden and (str(home / ".netrc"), False) in g.hidden
    assert not any(".aws" in p for p, _ in g.hidden)
    assert str(home / ".ssh") in g.landlock_hidden
    none = protect.resolve(Policy(), str(ws), (str(ws), str(home)), None)
    assert none.hidden == ()
    # Under the sandbox's private /tmp and in no writable root: invisible anyway, no mask.
    private = protect.resolve(Policy(), str(ws), (str(ws),), str(home))
    assert private.hidden == () and str(home / ".ssh") in private.landlock_hidden


def test_a_writable_root_inside_a_hidden_path_is_an_error(tmp_path):
    home = tmp_path / "home"
    ws = home / ".ssh" / "project"
    ws.mkdir(parents=True)
    with pytest.raises(PolicyError, match="--unhide"):
        protect.resolve(Policy(), str(ws), (str(ws),), str(home))
