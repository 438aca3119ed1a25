import pytest

from nsbox.cli import exec_args


def test_command_after_double_dash():
    parsed = exec_args.parse(["--workspace", "/w", "--", "ls", "-l"])
    assert parsed.values["workspace"] == "/w"
    assert parsed.command == ["ls", "-l"]


def test_command_starts_at_first_non_option():
    parsed = exec_args.parse(["--cwd=/x", "make", "--jobs", "2"])
    assert parsed.values["cwd"] == "/x"
    assert parsed.command == ["make", "--jobs", "2"]


def test_repeatable_option_collects_values():
    parsed = exec_args.parse(["--writable", "/a", "--writable", "/b", "true"])
    assert parsed.values["writable"] == ["/a", "/b"]


def test_unknown_option_is_named():
    with pytest.raises(exec_args.UsageError, match="--frobnicate"):
        exec_args.parse(["--frobnicate", "true"])


def test_missing_value_is_named():
    with pytest.raises(exec_args.UsageError, match="--workspace"):
        exec_args.parse(["--workspace"])


def test_help_lists_every_option():
    text = exec_args.help_text()
    for name in exec_args.OPTIONS:
        assert name in text


def test_switches_mean_what_their_value_says():
    assert exec_args.parse(["--best-effort", "true"]).values["best_effort"] is True
    assert exec_args.parse(["--best-effort=no", "true"]).values["best_effort"] is False
    assert exec_args.parse(["--clearenv=false", "true"]).values["clearenv"] is False
    assert exec_args.parse(["--clearenv=YES", "true"]).values["clearenv"] is True
    with pytest.raises(exec_args.UsageError, match="--allow-broad-workspace is a switch"):
        exec_args.parse(["--allow-broad-workspace=maybe", "true"])
