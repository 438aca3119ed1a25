"""Overlay mode's extra writable roots, without the kernel: how a run names its roots'
layers and manifest paths, and which roots a policy overlays."""

import pytest

from nsbox.errors import PolicyError
from nsbox.plan import apply as applying
from nsbox.plan import overlay
from nsbox.plan import prepare as prepare_mod
from nsbox.plan.watch import Change
from nsbox.policy import plan as policy_plan
from nsbox.policy.model import Policy

RUN = overlay.Run(id="r", dir="/s/runs/r", workspace="/w", roots=("/x", "/x2/deep"))


def test_each_root_has_its_own_layers_in_the_runs_directory():
    assert RUN.layers() == (("/w", "/s/runs/r/upper", "/s/runs/r/work"),
                            ("/x", "/s/runs/r/roots/0/upper", "/s/runs/r/roots/0/work"),
                            ("/x2/deep", "/s/runs/r/roots/1/upper", "/s/runs/r/roots/1/work"))


def test_manifest_paths_name_their_root():
    assert RUN.locate("src/a.py")[::2] == ("", "src/a.py")
    prefix, part, rel = RUN.locate("/x/sub/f")
    assert (prefix, part.workspace, part.upper, rel) == ("/x", "/x", "/s/runs/r/roots/0/upper",
                                                          "sub/f")
    assert RUN.locate("/x2/deep/f")[0] == "/x2/deep"
    with pytest.raises(ValueError):
        RUN.locate("/x2/f")  # no root holds it (nor does /x, a mere prefix of /x2)


def test_user_paths_become_manifest_paths():
    assert RUN.manifest_path("src/a.py") == "src/a.py"
    assert RUN.manifest_path("/w/src/a.py") == "src/a.py"
    assert RUN.manifest_path("/x/f") == "/x/f"


def test_entries_are_grouped_by_root_with_paths_relative_to_it():
    entries = [Change("a", "created"), Change("/x/b", "deleted"), Change("/x2/deep/c", "mode")]
    groups = overlay.by_root(RUN, entries)
    assert [(part.workspace, [(e.path, rel.path) for e, rel in pairs])
            for part, pairs in groups] == [("/w", [("a", "a")]), ("/x", [("/x/b", "b")]),
                                           ("/x2/deep", [("/x2/deep/c", "c")])]


def test_selection_keeps_absolute_paths_and_finds_new_parents():
    entries = [Change("/x/d", "created", kind="dir"), Change("/x/d/f", "created", kind="file")]
    chosen, skipped = applying.select(entries, ["/x/d/f"])
    assert [e.path for e in chosen] == ["/x/d", "/x/d/f"] and skipped == []


def test_mount_steps_overlay_every_root_given():
    steps = policy_plan.mount_steps(Policy(), ("/w", "/x"), overlay=RUN.layers()[:2])
    kinds = {s.target: (s.kind, s.upper) for s in steps if s.target in ("/w", "/x")}
    assert kinds == {"/w": ("overlay", "/s/runs/r/upper"),
                     "/x": ("overlay", "/s/runs/r/roots/0/upper")}


class _Full:
    mode = "full"
    fallback_reason = ""


def _run(roots, workspace="/w", state="/s"):
    return prepare_mod._overlay_run(Policy(workspace_mode="overlay"), _Full(), False, state,
                                    workspace, roots)


def test_roots_inside_another_are_part_of_its_overlay():
    run = _run(("/w", "/w/nested", "/x", "/x/inner"))
    assert run.roots == ("/x",)


def test_a_root_holding_the_workspace_or_the_state_directory_is_refused():
    with pytest.raises(PolicyError, match="holds the workspace"):
        _run(("/w/ws", "/w"), workspace="/w/ws")
    with pytest.raises(PolicyError, match="inside writable root /x"):
        _run(("/w", "/x"), state="/x/state")


def test_metadata_is_json_without_the_json_package_for_plain_strings(tmp_path):
    import json

    data = {"id": "r", "command": ["sh", "-c", 'echo "a\\b"\t\u00e9'], "started_ns": 5,
            "roots": ["/x"]}
    overlay._write_small_json(str(tmp_path), "m.json", data)
    assert json.loads((tmp_path / "m.json").read_text()) == data
