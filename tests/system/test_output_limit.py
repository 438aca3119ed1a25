"""max_output: a command that floods its output is killed, and the caller keeps the first bytes."""

import asyncio

import nsbox
from nsbox.policy.model import Policy


def test_run_stops_a_flood_at_max_output(workspace):
    result = nsbox.run(["sh", "-c", "echo start; yes"], policy=Policy(workspace=str(workspace)),
                       max_output=4096, timeout=60)
    assert result.output_limited and not result.timed_out
    assert len(result.stdout) == 4096 and result.stdout.startswith(b"start\ny\n")
    assert result.returncode == 128 + 9


def test_session_output_within_the_limit_is_untouched(workspace):
    with nsbox.Session(Policy(workspace=str(workspace))) as session:
        small = session.run(["sh", "-c", "echo out; echo err >&2"], max_output=4)
        assert (small.stdout, small.stderr, small.output_limited) == (b"out\n", b"err\n", False)
        flood = asyncio.run(session.run_async(["sh", "-c", "yes >&2"], max_output=10_000))
        assert flood.output_limited and len(flood.stderr) == 10_000
        assert session.run(["true"]).returncode == 0  # the session lives on
