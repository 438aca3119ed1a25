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
# or *obeys* later, outside the sandbox, does not: hooks, config, attributes, and
# the files that redirect git elsewhere. A trailing "/" marks a directory.
GIT_PROTECTED = (
    "hooks/", "config", "config.worktree", "info/", "commondir", "gitdir",
    "objects/info/alternates", "modules/*/hooks/", "modules/*/config",
    "worktrees/*/gitdir", "worktrees/*/commondir",
)

# Read-only in every writable root (relative entries) or wherever a writable root
# contains them (`~` entries): files that run, or say what runs, later on the
# user's machine without the user asking for it. Entries that do not exist are
# not created; the run is checked for them afterwards (see launch/watch.py).
PROTECTED = (
    ".nsbox/",  # nsbox's policy for the next sandbox here
    ".envrc",  # direnv: sourced by the shell on entering the directory
    ".vscode/",  # VS Code: tasks run on folder open, interpreter and terminal settings
    ".idea/",  # JetBrains IDEs: run configurations and startup tasks
    ".devcontainer/",  # dev containers: lifecycle commands (postCreateCommand, ...)
    ".mcp.json",  # agent CLIs: MCP servers started with the project
    ".claude/",  # Claude Code: settings with hooks that run commands
    ".codex/",  # Codex CLI: project config
    ".agents/",  # agent tools' shared project config
    ".cursor/",  # Cursor: MCP servers, rules
    ".gemini/",  # Gemini CLI: settings with MCP servers
    ".gitmodules",  # submodule URLs and update commands for the next clone or update
    ".pre-commit-config.yaml",  # pre-commit: what the installed hook runs on commit
    ".husky/",  # husky: git hooks kept in the tree (core.hooksPath)
    "mise.toml", ".mise.toml",  # mise: hooks and env scripts run on entering the directory
    # Shell start-up files, git's user config, and tools' shell hooks: only in play
    # where a writable root contains the home directory (--allow-broad-workspace).
    "~/.bashrc", "~/.bash_profile", "~/.bash_login", "~/.bash_logout", "~/.profile",
    "~/.zshrc", "~/.zprofile", "~/.zshenv", "~/.zlogin", "~/.config/fish/",
    "~/.gitconfig", "~/.config/git/", "~/.config/autostart/",
    "~/.config/systemd/", "~/.local/bin/",
)

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
