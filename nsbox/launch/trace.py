"""Opt-in stage timing for the launch sequence (NSBOX_TRACE=1). A no-op otherwise."""

import os

ENABLED = bool(os.environ.get("NSBOX_TRACE"))


def mark(stage: str) -> None:
    """Record that `stage` starts now. Filled in by the benchmark's trace support."""
