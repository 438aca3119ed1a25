"""Resolving protected and hidden paths on a real (temporary) tree; no root, no namespaces."""

import os

import pytest

from nsbox.errors import PolicyError
from nsbox.plan import protect
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
    for sub in ("hooks", "config", "info", "modules/sub/hooks", "modules/sub/config"):
        assert f"{git}/{sub}" in g.readonly
    assert not any(p.startswith((f"{git}/objects", f"{git}/refs")) for p in g.readonly)
    # Missing directories inside the git dir are made as mount points; files never are,
    # and nothing appears in the work tree.
    assert (ws / ".git" / "info").is_dir() and not (ws / ".git" / "config.worktree").exists()
    assert not (ws / ".nsbox").exists()
    # Redirects git would obey, absent now: removed if a run plants them.
    for name in ("commondir", "gitdir", "objects/info/alternates", "config.worktree"):
        assert f"{git}/{name}" in g.undo


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


def make_worktree(main, ws, name="ws", back=None):
    make_repo(main)
    (main / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    gitdir = main / ".git" / "worktrees" / name
    gitdir.mkdir(parents=True)
    (gitdir / "commondir").write_text("../..\n")
    (gitdir / "gitdir").write_text(f"{back or ws / '.git'}\n")
    ws.mkdir(exist_ok=True)
    (ws / ".git").write_text(f"gitdir: {gitdir}\n")
    return gitdir


def test_worktree_shared_git_dir_becomes_writable_with_its_protections(tmp_path):
    main, ws = tmp_path / "main", tmp_path / "ws"
    gitdir = make_worktree(main, ws)
    g = protect.resolve(Policy(), str(ws), (str(ws),), None)
    assert set(g.extra_writable) == {str(main / ".git"), str(gitdir)}
    assert str(ws / ".git") in g.readonly  # the pointer itself
    assert str(main / ".git" / "hooks") in g.readonly
    for name in ("commondir", "gitdir"):
        assert str(gitdir / name) in g.readonly


def test_git_pointer_outside_the_roots_without_a_worktree_is_refused(tmp_path):
    home, ws = tmp_path / "home", tmp_path / "ws"
    home.mkdir()
    ws.mkdir()
    (ws / ".git").write_text(f"gitdir: {home}\n")
    with pytest.raises(PolicyError, match="outside the writable roots"):
        protect.resolve(Policy(), str(ws), (str(ws),), None)
    assert sorted(os.listdir(home)) == []  # nothing made there


def test_worktree_that_does_not_name_this_checkout_is_refused(tmp_path):
    main, ws, other = tmp_path / "main", tmp_path / "ws", tmp_path / "other"
    make_worktree(main, ws, back=other / ".git")
    with pytest.raises(PolicyError, match="does not vouch"):
        protect.resolve(Policy(), str(ws), (str(ws),), None)


def test_submodule_checkout_outside_its_superproject_is_vouched_by_core_worktree(tmp_path):
    sup = tmp_path / "super"
    make_repo(sup)
    mod = sup / ".git" / "modules" / "sub"
    (mod / "config").write_text("[core]\n\tworktree = ../../../sub\n")
    ws = sup / "sub"
    ws.mkdir()
    (ws / ".git").write_text("gitdir: ../.git/modules/sub\n")
    g = protect.resolve(Policy(), str(ws), (str(ws),), None)
    assert g.extra_writable == (str(mod),)
    (mod / "config").write_text("[core]\n\tworktree = ../../../elsewhere\n")
    with pytest.raises(PolicyError, match="does not vouch"):
        protect.resolve(Policy(), str(ws), (str(ws),), None)


def test_commondir_in_a_plain_git_dir_pointing_outside_is_refused(tmp_path):
    ws, evil = tmp_path / "ws", tmp_path / "evil"
    make_repo(ws)
    make_repo(evil)
    (ws / ".git" / "commondir").write_text(f"{evil / '.git'}\n")
    with pytest.raises(PolicyError, match="commondir"):
        protect.resolve(Policy(), str(ws), (str(ws),), None)


def test_nested_repositories_get_the_same_protection(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    make_repo(ws / "vendor" / "lib")
    make_repo(ws / "app")
    make_repo(ws / "a" / "b" / "c")  # deeper than NESTED_DEPTH
    make_repo(ws / "node_modules" / "x")
    g = protect.resolve(Policy(), str(ws), (str(ws),), None)
    assert str(ws / "vendor" / "lib" / ".git" / "hooks") in g.readonly
    assert str(ws / "app" / ".git" / "config") in g.readonly
    assert not any("/a/b/c/" in p or "node_modules" in p for p in g.readonly)


def test_hooks_path_inside_a_root_is_protected(tmp_path):
    ws = tmp_path / "ws"
    make_repo(ws)
    (ws / ".git" / "config").write_text('[core]\n\thooksPath = ".husky/_"  # husky\n')
    (ws / ".husky" / "_").mkdir(parents=True)
    g = protect.resolve(Policy(), str(ws), (str(ws),), None)
    assert str(ws / ".husky" / "_") in g.readonly


def test_execution_sensitive_files_are_read_only_in_every_root_and_never_created(tmp_path):
    ws, extra = tmp_path / "ws", tmp_path / "extra"
    ws.mkdir()
    extra.mkdir()
    (ws / ".vscode").mkdir()
    (extra / ".envrc").write_text("")
    g = protect.resolve(Policy(), str(ws), (str(ws), str(extra)), None)
    assert str(ws / ".vscode") in g.readonly and str(extra / ".envrc") in g.readonly
    assert not (ws / ".envrc").exists() and not (ws / ".mcp.json").exists()
    assert str(ws / ".mcp.json") in g.watched and str(extra / ".claude") in g.watched


def test_broad_workspace_is_refused_unless_allowed(tmp_path):
    home = tmp_path / "home"
    (home / "project").mkdir(parents=True)
    (home / ".bashrc").write_text("")
    for root in (home, tmp_path, "/"):
        with pytest.raises(PolicyError, match="--allow-broad-workspace"):
            protect.resolve(Policy(), str(home / "project"), (str(root),), (str(home),))
    g = protect.resolve(Policy(allow_broad_workspace=True), str(home), (str(home),), (str(home),))
    assert str(home / ".bashrc") in g.readonly
    assert str(home / ".profile") in g.watched
    # A project inside the home is fine.
    protect.resolve(Policy(), str(home / "project"), (str(home / "project"),), (str(home),))


def test_hidden_paths_follow_every_home(tmp_path):
    pw, env_home, ws = tmp_path / "pw", tmp_path / "env", tmp_path / "ws"
    (pw / ".ssh").mkdir(parents=True)
    (env_home / ".aws").mkdir(parents=True)
    ws.mkdir()
    g = protect.resolve(Policy(), str(ws), (str(ws),), (str(pw), str(env_home)), landlock_only=True)
    assert str(pw / ".ssh") in g.landlock_hidden and str(env_home / ".aws") in g.landlock_hidden


def test_nsbox_state_is_hidden_and_its_config_read_only_inside_a_root(tmp_path):
    home = tmp_path / "home"
    for d in (".local/state/nsbox", ".config/nsbox", ".cache/nsbox"):
        (home / d).mkdir(parents=True)
    own = protect.OwnDirs(state=str(home / ".local/state/nsbox"),
                          config=str(home / ".config/nsbox"), cache=str(home / ".cache/nsbox"))
    ws = tmp_path / "ws"
    ws.mkdir()
    g = protect.resolve(Policy(), str(ws), (str(ws), str(home / ".config"), str(home / ".cache"),
                                            str(home / ".local")), None, own=own)
    assert (own.state, True) in g.hidden and own.state not in g.landlock_hidden
    assert own.config in g.readonly and own.cache in g.readonly
    landlock = protect.resolve(Policy(), str(ws), (str(ws), str(home / ".config")), None, own=own,
                               landlock_only=True)
    assert own.config in landlock.landlock_hidden and own.state in landlock.landlock_hidden


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
    g = protect.resolve(Policy(allow_broad_workspace=True), str(ws), (str(ws), str(home)),
                        str(home))
    assert (str(home / ".ssh"), True) in g.hidden and (str(home / ".netrc"), False) in g.hidden
    assert not any(".aws" in p for p, _ in g.hidden)
    assert str(home / ".ssh") not in g.landlock_hidden  # in a writable root: the mask hides it
    none = protect.resolve(Policy(allow_broad_workspace=True), str(ws), (str(ws), str(home)), None)
    assert none.hidden == ()
    # Under the sandbox's private /tmp and in no writable root: invisible anyway, no mask
    # and no Landlock rule (which would take the sandbox's own /tmp away).
    private = protect.resolve(Policy(), str(ws), (str(ws),), str(home))
    assert private.hidden == () and private.landlock_hidden == ()


def test_a_writable_root_inside_a_hidden_path_is_an_error(tmp_path):
    home = tmp_path / "home"
    ws = home / ".ssh" / "project"
    ws.mkdir(parents=True)
    with pytest.raises(PolicyError, match="--unhide"):
        protect.resolve(Policy(), str(ws), (str(ws),), str(home))
