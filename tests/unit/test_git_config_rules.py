"""Git config from a sandbox: which keys may change, the parser read as git reads, and
the merge that carries only allowed changes into the real file (policy/git_config.py),
and which git dir files are applied at all (plan/gitapply.py, plan/gitsync.py)."""

import shutil
import subprocess

import pytest

from nsbox.plan import gitapply, gitsync
from nsbox.plan.watch import Change
from nsbox.policy import git_config

GIT = shutil.which("git")

REFUSED = [
    ("core", None, "fsmonitor"), ("core", None, "hookspath"), ("core", None, "sshcommand"),
    ("core", None, "pager"), ("core", None, "editor"), ("core", None, "askpass"),
    ("core", None, "gitproxy"), ("core", None, "worktree"), ("core", None, "attributesfile"),
    ("core", None, "sharedrepository"), ("sequence", None, "editor"),
    ("pager", None, "log"), ("filter", "lfs", "clean"), ("filter", "x", "process"),
    ("diff", "x", "textconv"), ("diff", "x", "command"), ("diff", None, "external"),
    ("merge", "x", "driver"), ("credential", None, "helper"),
    ("credential", "https://h", "helper"), ("include", None, "path"),
    ("includeif", "gitdir:/x/", "path"), ("uploadpack", None, "packobjectshook"),
    ("receivepack", None, "x"), ("gpg", None, "program"), ("gpg", "ssh", "program"),
    ("remote", "o", "uploadpack"), ("remote", "o", "receivepack"), ("remote", "o", "vcs"),
    ("remote", "o", "proxy"), ("http", None, "proxy"), ("http", "https://h", "extraheader"),
    ("url", "x", "insteadof"), ("protocol", None, "allow"), ("protocol", "ext", "allow"),
    ("sendemail", None, "smtpserver"), ("difftool", "x", "cmd"), ("mergetool", "x", "cmd"),
    ("safe", None, "directory"), ("branch", "m", "mergeoptions"), ("hook", "x", "command"),
    ("somethingnew", None, "key"), ("user", None, "signingkey"), ("lfs", None, "url"),
]
ALLOWED = [
    ("remote", "up", "url"), ("remote", "up", "fetch"), ("remote", "up", "pushurl"),
    ("remote", None, "pushdefault"), ("branch", "main", "remote"),
    ("branch", "main", "merge"), ("branch", "feature/x", "rebase"),
    ("submodule", "lib", "url"), ("submodule", "lib", "active"), ("user", None, "name"),
    ("user", None, "email"), ("core", None, "bare"), ("core", None, "repositoryformatversion"),
    ("extensions", None, "worktreeconfig"), ("pull", None, "rebase"), ("push", None, "default"),
]


@pytest.mark.parametrize("key", REFUSED, ids=git_config.dotted)
def test_keys_that_run_or_redirect_are_refused(key):
    assert git_config.refusal(key, ("x",))
    assert git_config.refusal(key, ("x",), in_module=key != ("core", None, "worktree")) or \
        key == ("core", None, "worktree")


@pytest.mark.parametrize("key", ALLOWED, ids=git_config.dotted)
def test_ordinary_keys_are_allowed(key):
    assert git_config.refusal(key, ("value",)) == ""
    assert git_config.refusal(key, ()) == ""  # removing it too


def test_values_decide_for_commands_in_disguise():
    assert git_config.refusal(("alias", None, "x"), ("!sh -c 'id'",))
    assert git_config.refusal(("alias", None, "x"), ("  !id",))
    assert git_config.refusal(("alias", None, "x"), ("-c core.pager=id log",))
    assert git_config.refusal(("alias", None, "st"), ("status -sb",)) == ""
    assert git_config.refusal(("submodule", "s", "update"), ("!rm -rf ~",))
    assert git_config.refusal(("submodule", "s", "update"), ("rebase",)) == ""
    assert git_config.refusal(("remote", "o", "url"), ("ext::sh -c id",))
    # core.worktree only where `git submodule` writes it
    assert git_config.refusal(("core", None, "worktree"), ("../../../s",), in_module=True) == ""


def test_parser_reads_git_syntax():
    text = (b'# comment\n[core]\n\tbare = false ; trailing\n[remote "o\\"q"] url = "a b" # c\n'
            b'\tfetch = x\\\n  y\n[Branch.Main]\n\tRebase\n[alias]\n\tx = "  !sp"\n')
    entries = git_config.parse(text).entries
    got = [(e.section, e.subsection, e.name, e.value) for e in entries]
    assert got == [("core", None, "bare", "false"), ("remote", 'o"q', "url", "a b"),
                   ("remote", 'o"q', "fetch", "x  y"), ("branch", "main", "rebase", None),
                   ("alias", None, "x", "  !sp")]


@pytest.mark.parametrize("bad", [b"[core\n", b"key = 1\n", b"[a]\nk = \"open\n",
                                 b"[a]\nk = \\q\n", b"[a]\n1k = v\n", b"[a]\nk v\n",
                                 b"\xff\xfe", b"[a]\nk = \0\n"])
def test_parser_refuses_what_it_cannot_read_as_git_does(bad):
    with pytest.raises(git_config.ConfigSyntaxError):
        git_config.parse(bad)


@pytest.mark.skipif(GIT is None, reason="git is not installed")
@pytest.mark.parametrize("text", [
    b'[core]\n\tbare = false ; c\n[remote "o\\"q\\\\"] url = "a  b" # c\n',
    b'[a "B c"]\n\tk = x\\\n\ty\n\tk2\n\tk3 = "#not" # yes\n[A.B]\nK = \\t\\n\\" v \n',
    b"[s]\n\tk = one  two\t three   \n",
])
def test_parser_agrees_with_git(tmp_path, text):
    # `git config --file F --list -z` reads F only (includes are off for --file).
    path = tmp_path / "config"
    path.write_bytes(text)
    out = subprocess.run([GIT, "config", "--file", str(path), "--list", "-z"],
                         capture_output=True, check=True).stdout
    theirs = []
    for item in out.split(b"\0")[:-1]:
        key, _, value = item.decode().partition("\n")
        theirs.append((key, value if "\n" in item.decode() else None))
    ours = [(git_config.dotted(e.key) if e.subsection is None else
             f"{e.section}.{e.subsection}.{e.name}", e.value)
            for e in git_config.parse(text).entries]
    assert ours == theirs


BASE = b"[core]\n\tbare = false\n# the user's note\n[remote \"origin\"]\n\turl = /o\n"


def test_merge_carries_allowed_changes_and_refuses_the_rest():
    sandbox = BASE + (b'[remote "up"]\n\turl = /up\n[core]\n\tfsmonitor = touch /tmp/x\n'
                      b'[alias]\n\tx = !id\n\tl = log\n[include]\n\tpath = /tmp/i\n'
                      b'[user]\n\tname = Someone\n')
    out = git_config.merge(BASE, BASE, sandbox)
    assert set(out.applied) == {"remote.up.url", "alias.l", "user.name"}
    assert {k for k, _ in out.refused} == {"core.fsmonitor", "alias.x", "include.path"}
    merged = git_config.parse(out.text)
    values = git_config.values_by_key(merged.entries)
    assert values[("remote", "up", "url")] == ("/up",)
    assert ("core", None, "fsmonitor") not in values and ("include", None, "path") not in values
    assert b"# the user's note" in out.text  # the rest of the file as it was


def test_merge_keeps_the_hosts_own_changes_made_during_the_run():
    real = BASE + b"[user]\n\temail = me@host\n"
    sandbox = BASE.replace(b"url = /o", b"url = /moved") + b"[user]\n\tname = S\n"
    out = git_config.merge(BASE, real, sandbox)
    values = git_config.values_by_key(git_config.parse(out.text).entries)
    assert values[("user", None, "email")] == ("me@host",)
    assert values[("user", None, "name")] == ("S",)
    assert values[("remote", "origin", "url")] == ("/moved",)


def test_merge_applies_removals_of_allowed_keys_only():
    real = BASE + b"[core]\n\tfsmonitor = mine\n[remote \"gone\"]\n\turl = /g\n"
    sandbox = BASE
    out = git_config.merge(real, real, sandbox)
    values = git_config.values_by_key(git_config.parse(out.text).entries)
    assert ("remote", "gone", "url") not in values
    assert values[("core", None, "fsmonitor")] == ("mine",)  # the user's own stays
    assert [k for k, _ in out.refused] == ["core.fsmonitor"]


def test_merge_nothing_to_write_when_only_refused_changes():
    out = git_config.merge(BASE, BASE, BASE + b"[core]\n\thooksPath = /tmp/h\n")
    assert out.text is None and out.applied == ()
    assert out.refused == (("core.hookspath", "chooses the hooks git runs"),)


def test_merge_key_on_header_line_and_quoting_round_trip():
    real = b'[branch "m"] remote = origin\n'
    sandbox = b'[branch "m"]\n\tremote = "up; #x"\n\tmerge = refs/heads/m\n'
    out = git_config.merge(real, real, sandbox)
    values = git_config.values_by_key(git_config.parse(out.text).entries)
    assert values[("branch", "m", "remote")] == ("up; #x",)
    assert values[("branch", "m", "merge")] == ("refs/heads/m",)


def change(path, what="created", kind="file"):
    return Change(path, what, kind=kind)


@pytest.mark.parametrize("path,kind,what", [
    ("hooks/pre-commit", "file", "created"), ("hooks", "dir", "created"),
    ("commondir", "file", "created"), ("gitdir", "file", "created"),
    ("objects/info/alternates", "file", "created"), ("info/attributes", "file", "created"),
    ("worktrees/w/gitdir", "file", "created"), ("modules/s/hooks/post-checkout", "file", "created"),
    ("modules/a/b/commondir", "file", "created"), ("refs/heads/x", "symlink", "created"),
    ("index.lock", "file", "created"), ("config", "file", "deleted"),
])
def test_git_dir_files_never_applied(path, kind, what):
    assert gitapply.refusal(change(path, what, kind))


@pytest.mark.parametrize("path", ["objects/ab/cdef", "refs/heads/gitdir", "refs/heads/hooks",
                                  "HEAD", "index", "logs/HEAD", "packed-refs", "info/exclude",
                                  "modules/s/objects/pack/p.pack", "modules/s/refs/heads/m",
                                  "FETCH_HEAD", "description"])
def test_git_dir_data_is_applied(path):
    assert gitapply.refusal(change(path)) == ""


def test_apply_order_objects_before_refs_deletions_last():
    entries = [change("refs/heads/m"), change("HEAD"), change("objects/ab/c"),
               change("objects/ab", kind="dir"), change("index"),
               change("objects/old", what="deleted"), change("modules/s", kind="dir")]
    order = [e.path for e in gitapply.ordered(entries)]
    assert order == ["modules/s", "objects/ab", "objects/ab/c", "index", "HEAD",
                     "refs/heads/m", "objects/old"]


def test_config_files_become_writable_hooks_stay_read_only():
    layer = gitsync.Layer(gitdir="/w/.git", dir="/s/git/1")
    paths = ("/w/.git/config", "/w/.git/hooks", "/w/.git/info", "/w/.git/config.worktree",
             "/w/.git/modules/s/config", "/w/.git/modules/s/hooks", "/w/.git/commondir",
             "/w/sub/.git", "/w/.envrc")
    assert gitsync.readonly_kept(paths, [layer]) == (
        "/w/.git/hooks", "/w/.git/modules/s/hooks", "/w/.git/commondir", "/w/sub/.git",
        "/w/.envrc")


def test_sweep_removes_only_old_unheld_empty_layers(tmp_path):
    import os
    import time

    top = tmp_path / "git"
    old = time.time() - gitsync.STALE_S - 60
    for name, content in (("left", False), ("kept-changes", True), ("young", False)):
        (top / name / "upper").mkdir(parents=True)
        (top / name / "work" / "work").mkdir(parents=True)
        if content:
            (top / name / "upper" / "HEAD").write_text("x\n")
        if name != "young":
            os.utime(top / name, (old, old))
    repo = tmp_path / "repo" / ".git"
    repo.mkdir(parents=True)
    held = gitsync.Layer(gitdir=str(repo), dir=str(top / "mine"))
    gitsync.create([held])  # sweeps its siblings; its own layer is locked meanwhile
    assert sorted(os.listdir(top)) == ["kept-changes", "mine", "young"]
    os.utime(top / "mine", (old, old))
    gitsync.create([gitsync.Layer(gitdir=str(repo), dir=str(top / "next"))])
    assert "mine" in os.listdir(top)  # still held by this process
    gitsync.Held([held]).close()  # applied: released
    gitsync.create([gitsync.Layer(gitdir=str(repo), dir=str(top / "third"))])
    assert "mine" not in os.listdir(top)
