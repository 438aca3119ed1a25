"""The after-run review of what runs later outside the sandbox, on a real temporary tree."""

import os

from nsbox.plan import gitdirs, watch


def test_appeared_changed_removed_and_quiet(tmp_path):
    (tmp_path / ".vscode").mkdir()
    (tmp_path / ".gitmodules").write_text("x")
    paths = [str(tmp_path / n) for n in (".vscode", ".gitmodules", ".envrc", ".mcp.json")]
    w = watch.start((), paths, (), ())
    assert watch.review(w)[0] == ()
    (tmp_path / ".vscode" / "tasks.json").write_text("{}")
    (tmp_path / ".gitmodules").unlink()
    (tmp_path / ".envrc").write_text("eval")
    changes, fresh = watch.review(w)
    assert {(os.path.basename(c.path), c.what) for c in changes} == {
        (".vscode", "changed"), (".gitmodules", "removed"), (".envrc", "appeared")}
    assert watch.review(fresh)[0] == ()  # the next run compares with the state after this one


def test_planted_git_redirects_are_removed_and_said(tmp_path):
    git = tmp_path / ".git"
    (git / "objects" / "info").mkdir(parents=True)
    undo = [str(git / r) for r in watch.GIT_REDIRECTS]
    w = watch.start((str(tmp_path),), [], gitdirs.find((str(tmp_path),)), undo)
    (git / "commondir").write_text("../evil\n")
    (git / "objects" / "info" / "alternates").write_text("/elsewhere\n")
    changes, _ = watch.review(w)
    assert {c.what for c in changes} == {"removed (planted)"}
    assert not (git / "commondir").exists() and not (git / "objects/info/alternates").exists()


def test_new_repositories_and_pointers_are_found_down_to_the_nesting_depth(tmp_path):
    w = watch.start((str(tmp_path),), [], gitdirs.find((str(tmp_path),)), ())
    (tmp_path / "a" / "b" / ".git").mkdir(parents=True)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / ".git").write_text("gitdir: /home/x\n")
    (tmp_path / "d" / "e" / "f" / ".git").mkdir(parents=True)  # too deep
    (tmp_path / "node_modules" / "m" / ".git").mkdir(parents=True)  # skipped tree
    changes = {(os.path.relpath(c.path, tmp_path), c.what) for c in watch.review(w)[0]}
    assert changes == {("a/b/.git", "new repository"), ("c/.git", "new git pointer")}


def test_summary_is_one_line_relative_to_the_workspace(tmp_path):
    changes = tuple(watch.Change(str(tmp_path / f"f{i}"), "appeared") for i in range(10))
    line = watch.summary(changes, str(tmp_path))
    assert "\n" not in line and "f0 (appeared)" in line and "and 2 more" in line
    assert watch.summary((), str(tmp_path)) == ""


def test_git_config_values_are_read_like_git(tmp_path):
    config = tmp_path / "config"
    config.write_text('[core]\n\tbare = false\n[Core]\n  HooksPath = ".husky/_" ; comment\n'
                      '[remote "origin"]\n\thookspath = no\n')
    assert gitdirs.config_value(str(config), "core", "hookspath") == ".husky/_"
    assert gitdirs.config_value(str(tmp_path / "missing"), "core", "hookspath") == ""
