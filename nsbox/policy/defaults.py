"""The safe defaults a policy starts from: hidden secret stores, protected paths, env rules."""

# Secret stores under $HOME that no sandboxed command needs to read.
HIDDEN_HOME = (
    "~/.ssh", "~/.gnupg", "~/.aws", "~/.azure", "~/.config/gcloud", "~/.kube",
    "~/.docker/config.json", "~/.netrc", "~/.git-credentials", "~/.npmrc", "~/.pypirc",
    "~/.password-store", "~/.config/gh", "~/.vault-token",
    # Browser profiles hold cookies and saved passwords.
    "~/.mozilla", "~/.config/google-chrome", "~/.config/chromium", "~/.config/BraveSoftware",
)

# Relative to each git directory found in a writable root (its own and, for a
# worktree or submodule, the gitdir and common dir its `.git` file points to).
# Objects, refs, index and logs stay writable so commits work; what git *runs*
# or *obeys* later, outside the sandbox, does not. A trailing "/" marks a directory.
GIT_PROTECTED = (
    "hooks/", "config", "config.worktree", "info/", "modules/*/hooks/", "modules/*/config",
)

# Relative to the workspace (or absolute). `.nsbox/` holds the policy file that
# configures the next sandbox, so the current one must not be able to edit it.
PROTECTED = (".nsbox/",)

# A variable whose name contains one of these (case-insensitive) is not inherited.
SECRET_ENV_WORDS = ("KEY", "SECRET", "TOKEN", "PASSWORD", "PASSWD", "CREDENTIAL")

# What --clearenv keeps.
MINIMAL_ENV = ("PATH", "HOME", "TERM", "LANG")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def hidden_for(preset: str) -> tuple:
    # full-access trusts the command with the host; it hides nothing unless asked.
    return () if preset == "full-access" else HIDDEN_HOME


def protected_for(preset: str) -> tuple:
    return () if preset == "full-access" else PROTECTED


def git_protected_for(preset: str) -> tuple:
    return () if preset == "full-access" else GIT_PROTECTED


def network_for(preset: str) -> str:
    return "host" if preset == "full-access" else "none"
