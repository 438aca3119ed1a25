"""The benchmark's arithmetic: percentiles, trace breakdowns, import-time parsing."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "bench"))

import report  # noqa: E402


def test_percentile_interpolates_between_ranks():
    assert report.percentile([4, 1, 3, 2], 50) == 2.5
    assert report.percentile([1, 2, 3, 4, 5], 90) == 4.6
    assert report.percentile([7], 99) == 7


def test_breakdown_charges_each_stage_until_the_next_mark():
    runs = [[(0, 0, report.SPAWNED), (10, 50, "cli"), (13, 1, "mounts"), (20, 2, "exec"),
             (30, 0, report.REAPED)]] * 3
    bd = report.breakdown(runs)
    assert bd["runs"] == 3 and bd["total_ns"] == 30
    assert bd["stages"] == [["bench: (spawned)", 10], ["caller: cli", 3], ["pid1: mounts", 7],
                            ["command: exec", 10]]


def test_split_runs_cuts_at_call_and_returned():
    records = [(1, 9, "prepare"), (2, 9, "call"), (3, 9, "unshare"), (5, 9, "returned"),
               (6, 9, "call"), (8, 9, "returned")]
    runs = report.split_runs(records)
    assert [[r[2] for r in run] for run in runs] == [
        [report.SPAWNED, "unshare", report.REAPED], [report.SPAWNED, report.REAPED]]


def test_importtime_keeps_top_level_imports_heaviest_first():
    stderr = ("import time: self [us] | cumulative | imported package\n"
              "import time:       100 |        100 |   posixpath\n"
              "import time:       300 |        400 | os\n"
              "import time:       900 |        900 | nsbox.cli\n")
    parsed = report.parse_importtime(stderr)
    assert parsed == {"total_us": 1300, "top_level": [("nsbox.cli", 900), ("os", 400)]}


def test_overlay_goal_and_table():
    results = {"machine": {"date": "d", "kernel": "k", "cpu": "c", "cores": 1, "python": "3",
                           "bwrap": None, "uid": 1000},
               "runs": 3, "warmup": 1, "baseline": report.BWRAP,
               "cases": [{"name": report.CLI, "note": "", "samples_ns": [10e6, 11e6, 12e6]},
                         {"name": report.CLI_OVERLAY, "note": "",
                          "samples_ns": [11e6, 11.5e6, 13e6]}],
               "overlay": {"empty_exec_ns": [20e6],
                           "files": {"10": {"exec_ns": [21e6], "manifest_ns": [0.5e6],
                                            "apply_ns": [90e6], "entries": 11}}}}
    [row] = [r for r in report.goals(results) if "workspace-mode overlay" in r[0]]
    assert row[1].startswith("+0.50 ms") and row[2] is True
    text = report.markdown(results)
    assert "| 10 | 21.0 | 1.0 | 0.50 | 90.0 |" in text


def test_denial_cost_goals_and_table():
    def case(name, ms):
        return {"name": name, "note": "", "samples_ns": [v * 1e6 for v in ms]}

    results = {"machine": {"date": "d", "kernel": "k", "cpu": "c", "cores": 1, "python": "3",
                           "bwrap": None, "uid": 1000},
               "runs": 3, "warmup": 1, "baseline": report.BWRAP, "cases": [],
               "only": "denials",
               "denial_startup": [case(report.CLI, [10, 10.2, 10.4]),
                                  case(report.CLI_NO_DENIALS, [9.8, 10, 10.2])],
               "denial_builds": [case(report.DENIAL_MAKE, [1030, 1040]),
                                 case(report.DENIAL_MAKE + report.NO_DENIALS, [1000, 1000]),
                                 case(report.DENIAL_PIP, [1200, 1200]),
                                 case(report.DENIAL_PIP + report.NO_DENIALS, [1000, 1000]),
                                 case(report.DENIAL_LOOP, [2600, 2700]),
                                 case(report.DENIAL_LOOP + report.NO_DENIALS, [1400, 1400])],
               "denial_events": {report.DENIAL_MAKE: 0, report.DENIAL_PIP: 0,
                                 report.DENIAL_LOOP: 100000}}
    rows = {r[0]: r for r in report.goals(results) if r[0].startswith("denial reporting")}
    startup = next(r for goal, r in rows.items() if "exec -- true" in goal)
    make = next(r for goal, r in rows.items() if report.DENIAL_MAKE in goal)
    pip = next(r for goal, r in rows.items() if report.DENIAL_PIP in goal)
    assert startup[1].startswith("+0.20 ms") and startup[2] is True
    assert make[1] == "1.03×" and make[2] is True
    assert pip[1] == "1.20×" and pip[2] is False
    loop = next(r for goal, r in rows.items() if report.DENIAL_LOOP in goal)
    assert loop[1] == "1.89×" and loop[2] is True
    text = report.markdown(results)
    assert "3 of 4 goals met." in text  # --only: the goals not measured are left out
    assert f"| {report.DENIAL_MAKE} | 2 | 1035.0 | 1030.0 | 1040.0 | 1.035× | 0 |" in text


def test_image_memory_table_compares_each_kind_with_its_reference():
    def row(kind, total_kb, reference=None, **extra):
        return {"kind": kind, "what": kind, "total_kb": total_kb, "per_sandbox_kb": total_kb / 4,
                "metric": "pss", "reference": reference,
                "processes": [{"comm": "nsbox-init", "kb": 1024}] * 2, **extra}
    results = {"image_memory": {"sandboxes": 4, "measured_by": "root", "image_files": 3,
                                "image_kb": 2048, "kinds": [
                                    row("session-host", 8 * 1024),
                                    row("session-image-writable", 4 * 1024, "session-host",
                                        layer_kb=[0, 0, 0, 0]),
                                    row("session-image-writable-disk", 8 * 1024, "session-host",
                                        layer_kb=None)]}}
    lines = report.image_memory_table(results)
    assert "| session-host | 8.0 | 2.00 |  |  | nsbox-init 2 (2.0) |" in lines
    assert "| session-image-writable | 4.0 | 1.00 | 0.50× | 0 | nsbox-init 2 (2.0) |" in lines
    assert ("| session-image-writable-disk | 8.0 | 2.00 | 1.00× | n/a | nsbox-init 2 (2.0) |"
            in lines)
    assert report.image_memory_table({}) == []
