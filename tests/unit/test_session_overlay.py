"""A Session's restore plan (plan/session_overlay.actions): which paths are rewritten,
from where, in what order, from two manifests alone."""

import json
import os

from nsbox.plan import overlay, session_overlay
from nsbox.plan.watch import Change


def c(path, what, kind="file", **more):
    if kind == "file" and what not in ("deleted",):
        more.setdefault("sha256", "h-" + path)
        more.setdefault("size", 1)
        more.setdefault("mode", 0o644)
    if kind == "dir" and what != "deleted":
        more.setdefault("mode", 0o755)
    return Change(path, what, kind=kind, **more)


def plan(current, target):
    return session_overlay.actions(current, {e.path: e for e in target})


def test_the_same_change_on_both_sides_is_left_alone():
    same = [c("a", "created"), c("d", "created", "dir"), c("d/x", "created")]
    assert plan(same, same) == []


def test_a_change_made_after_the_snapshot_goes_back_to_the_real_tree():
    assert plan([c("a", "modified"), c("b", "created"), c("gone", "deleted")], []) == [
        ("rm", "a"), ("real", "a"), ("rm", "b"), ("real", "b"), ("rm", "gone"),
        ("real", "gone")]


def test_a_snapshot_change_is_written_from_the_snapshot():
    assert plan([], [c("a", "modified"), c("old", "deleted")]) == [
        ("rm", "a"), ("snapshot", "a"), ("rm", "old")]


def test_a_rewritten_directory_takes_its_children_from_the_target_only():
    # The real tree's `d` comes back whole; the snapshot's change inside it is applied
    # on top, and the current view's changes inside it are gone with the old `d`.
    current = [c("d", "deleted", "dir")]
    target = [c("d/x", "modified"), c("d/sub", "mode", "dir", mode=0o500)]
    assert plan(current + [c("d/y", "created")], target) == [
        ("rm", "d"), ("real", "d"), ("chmod", "d/sub", 0o500), ("rm", "d/x"),
        ("snapshot", "d/x")]


def test_a_new_directory_in_the_snapshot_is_made_with_all_it_holds():
    target = [c("n", "created", "dir"), c("n/a", "created"), c("n/b", "created")]
    current = [c("n", "created", "dir", mode=0o700), c("n/a", "created")]
    assert plan(current, target) == [
        ("rm", "n"), ("snapshot", "n"), ("rm", "n/a"), ("snapshot", "n/a"), ("rm", "n/b"),
        ("snapshot", "n/b")]


def test_mode_changes_are_chmods():
    assert plan([c("f", "mode", mode=0o600)], []) == [("chmod", "f", None)]
    assert plan([], [c("f", "mode", mode=0o600)]) == [("chmod", "f", 0o600)]
    assert plan([c("f", "modified")], [c("f", "mode", mode=0o600)]) == [
        ("rm", "f"), ("real", "f"), ("chmod", "f", 0o600)]


def test_parents_come_first_whatever_the_names():
    found = plan([c("a-b", "created"), c("a/b", "created"), c("a", "created", "dir")], [])
    assert [step[1] for step in found] == ["a", "a", "a-b", "a-b"]  # a/b went with a


def test_meta_is_written_without_the_json_package(tmp_path):
    meta = {"id": "x", "workspace": '/w"s', "command": ["sh", "-c", "\u00e9 \udcff\n"],
            "started_ns": 12}
    overlay._write_small_json(str(tmp_path), "meta.json", meta)
    assert json.loads((tmp_path / "meta.json").read_text()) == meta
    assert os.stat(tmp_path / "meta.json").st_mode & 0o777 == 0o600


def ops(data: bytes) -> list:
    out, at = [], 0
    while at < len(data):
        size = int.from_bytes(data[at:at + 4], "big")
        op = [os.fsdecode(f) for f in data[at + 4:at + 4 + size].split(b"\0")]
        at += 4 + size
        if op[0] == "file":
            op.append(data[at:at + int(op[4])])
            at += int(op[4])
        out.append(op)
    return out


def test_the_real_tree_is_sent_without_what_the_sandbox_may_not_see(tmp_path):
    import io

    ws = tmp_path / "ws"
    (ws / "sub").mkdir(parents=True)
    (ws / "sub" / ".env").write_text("API_KEY=secret\n")
    (ws / "sub" / "code.py").write_text("print(1)\n")
    os.symlink("code.py", ws / "sub" / "link")
    run = overlay.Run(id="r", dir=str(tmp_path / "run"), workspace=str(ws))
    out = io.BytesIO()
    session_overlay.write_stream(run, [("rm", "sub"), ("real", "sub")],
                                 session_overlay.empty(), out, hidden=(str(ws / "sub/.env"),))
    found = ops(out.getvalue())
    assert [op[:2] for op in found] == [["rm", "sub"], ["dir", "sub"], ["file", "sub/code.py"],
                                        ["link", "sub/link"], ["end"]]
    assert found[2][-1] == b"print(1)\n" and b"secret" not in out.getvalue()
