"""Where seccomp profiles live, and `--seccomp NAME|PATH` -> a profile file."""

import os

from nsbox.errors import PolicyError

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Installed: profiles are package data (nsbox/seccomp_profiles). A source checkout
# or an editable install keeps them at the top of the tree.
_CANDIDATE_DIRS = (os.path.join(_PACKAGE_DIR, "seccomp_profiles"),
                   os.path.join(os.path.dirname(_PACKAGE_DIR), "seccomp_profiles"))


def profiles_dir() -> str:
    for candidate in _CANDIDATE_DIRS:
        if os.path.isdir(candidate):
            return candidate
    raise PolicyError("nsbox's seccomp profiles are missing (looked in "
                      f"{', '.join(_CANDIDATE_DIRS)}); reinstall nsbox")


def names() -> list:
    return sorted(f[:-len(".json")] for f in os.listdir(profiles_dir()) if f.endswith(".json"))


def is_path(name_or_path: str) -> bool:
    return "/" in name_or_path or name_or_path.endswith(".json")


def find(name_or_path: str) -> str:
    """The profile file for a shipped profile's name or a path to a JSON file."""
    if not name_or_path:
        raise PolicyError("--seccomp needs a profile name or a path to a JSON profile")
    if is_path(name_or_path):
        path = os.path.abspath(os.path.expanduser(name_or_path))
        if not os.path.isfile(path):
            raise PolicyError(f"seccomp profile {name_or_path!r} does not exist or is not a file")
        return path
    path = os.path.join(profiles_dir(), name_or_path + ".json")
    if not os.path.isfile(path):
        raise PolicyError(f"unknown seccomp profile {name_or_path!r}; shipped profiles: "
                          f"{', '.join(names())} (or pass a path to a JSON file)")
    return path


def read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as err:
        raise PolicyError(f"cannot read seccomp profile {path}: {err.strerror}") from None
