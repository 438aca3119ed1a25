"""Landlock: ABI detection and restricting the calling thread. (Being written.)"""


def restrict_self(ruleset) -> None:
    raise NotImplementedError
