"""The safe defaults a policy starts from: hidden secret stores, protected paths, env rules."""

# Files whose names say they hold a secret, directly in these directories (one level:
# listing deeper costs about 1 ms more per start, see README). A "*" entry in a hidden
# list matches files, not directories, in any letter case.
SECRET_FILE_DIRS = ("~", "~/.config")
SECRET_FILE_NAMES = (
    "*credential*", "*secret*", "*token*",
    "*.pem", "*.key", "*.p12", "*.pfx",  # private keys (EC2 key pairs come as .pem)
    "*.ppk", "*.jks", "*.keystore",  # PuTTY keys, Java and Android signing keystores
    "*.kdbx", "*.ovpn",  # KeePass databases, OpenVPN profiles with their keys
    "id_rsa", "id_dsa", "id_ecdsa", "id_ed25519", "id_ecdsa_sk", "id_ed25519_sk",
)
SECRET_FILE_NAMES_RULE = tuple(f"{d}/{n}" for d in SECRET_FILE_DIRS for n in SECRET_FILE_NAMES)

# Hidden files that tools open on every run and fail on when they cannot (Gradle, Bundler,
# Yarn, Poetry, ...): under full isolation they read as empty files (the mask) instead
# of being denied by Landlock too. Under Landlock alone they are denied.
HIDDEN_READ_AS_EMPTY = (
    "~/.gradle/gradle.properties", "$GRADLE_USER_HOME/gradle.properties",
    "~/.bundle/config", "~/.yarnrc", "~/.yarnrc.yml", "~/.config/pnpm/rc", "~/.bunfig.toml",
    "~/.config/pypoetry/auth.toml", "~/.local/share/uv/credentials/credentials.toml",
    "~/.config/helm/registry/config.json",
)
# Not hidden although they may hold credentials, because builds need their other settings
# and the tool fails on an unreadable or empty file: ~/.terraformrc (provider mirrors),
# ~/.nuget/NuGet/NuGet.Config (package sources), Composer's auth.json. --hide adds them.

# Secret stores that no sandboxed command needs to read, by the tool that writes them.
# "~" is each home directory; "~/.config/X" also means $XDG_CONFIG_HOME/X and
# "~/.local/share/X" $XDG_DATA_HOME/X; "$NAME" is the path in that variable of the
# caller's environment (a ":" list counts each entry; unset: skipped). A missing path
# costs nothing; an existing one costs a mount and Landlock rules at start-up.
HIDDEN_HOME = (
    # Keys, password stores, keyrings
    "~/.ssh", "~/.gnupg", "$GNUPGHOME",
    "~/.password-store", "$PASSWORD_STORE_DIR",  # pass
    "~/.local/share/keyrings",  # GNOME Keyring
    "~/.local/share/kwalletd",  # KDE Wallet
    "~/.pki/nssdb",  # NSS: client certificates' private keys (Chromium)
    "~/.config/op", "~/.op",  # 1Password CLI
    "~/.config/Bitwarden CLI",  # Bitwarden CLI: vault and session key
    "~/.authinfo", "~/.authinfo.gpg",  # Emacs auth-source (netrc format)
    "~/.netrc", "$NETRC",  # curl, Heroku CLI, pip, uv, Go's GOPROXY
    "~/.secrets", "~/.env",  # tokens sourced by the shell; dotenv (aider, Gemini CLI)
    "~/.Xauthority", "$XAUTHORITY",  # X11 cookie: input and screen of every window
    # Shell and REPL histories: commands typed with passwords and tokens in them
    "~/.bash_history", "~/.zsh_history", "~/.histfile", "~/.local/share/fish/fish_history",
    "~/.python_history", "~/.node_repl_history", "~/.psql_history", "~/.mysql_history",
    "~/.sqlite_history", "~/.rediscli_history", "~/.dbshell",
    # Git hosting
    "~/.git-credentials", "~/.config/git/credentials",  # git credential-store
    "~/.gcm/store",  # Git Credential Manager's plaintext store
    "~/.config/gh", "$GH_CONFIG_DIR",  # GitHub CLI
    "~/.config/hub",  # hub
    "~/.config/glab-cli",  # GitLab CLI
    "~/.config/tea",  # Gitea CLI
    # Cloud and infrastructure CLIs
    "~/.aws", "$AWS_SHARED_CREDENTIALS_FILE",
    "~/.config/gcloud", "$CLOUDSDK_CONFIG", "$GOOGLE_APPLICATION_CREDENTIALS",
    "~/.boto", "~/.s3cfg",  # gsutil and boto, s3cmd
    "~/.azure", "$AZURE_CONFIG_DIR",
    "~/.config/doctl/config.yaml",  # DigitalOcean
    "~/.oci",  # Oracle Cloud: config and API signing keys
    "~/.bluemix",  # IBM Cloud CLI
    "~/.config/linode-cli",  # Linode
    "~/.config/hcloud",  # Hetzner Cloud
    "~/.fly/config.yml",  # Fly.io (~/.fly/bin holds flyctl itself)
    "~/.local/share/com.vercel.cli/auth.json",  # Vercel
    "~/.config/netlify/config.json", "~/.netlify/config.json",  # Netlify
    "~/.wrangler/config", "~/.config/.wrangler/config",  # Cloudflare wrangler
    "~/.terraform.d/credentials.tfrc.json",  # terraform login (not .terraformrc: see above)
    "~/.pulumi/credentials.json",  # Pulumi (~/.pulumi/bin holds pulumi itself)
    "~/.vault-token",  # HashiCorp Vault
    "~/.kube", "$KUBECONFIG",  # kubectl and friends
    "~/.config/rclone/rclone.conf",  # rclone: every remote's keys
    "~/.databrickscfg",  # Databricks
    "~/.snowflake/connections.toml", "~/.snowsql/config",  # Snowflake
    "~/.config/ngrok/ngrok.yml", "~/.ngrok2/ngrok.yml",  # ngrok
    "~/.config/sops/age/keys.txt",  # sops: age private keys
    # Container registries
    "~/.docker/config.json", "$DOCKER_CONFIG/config.json",
    "~/.config/containers/auth.json", "$XDG_RUNTIME_DIR/containers/auth.json",  # podman, skopeo
    "$REGISTRY_AUTH_FILE",
    "~/.config/helm/registry/config.json",  # Helm: OCI registry logins
    # Package managers: credential files only, never their caches
    "~/.pypirc",  # twine
    "~/.pip/pip.conf", "~/.config/pip/pip.conf",  # pip: index URLs with credentials
    "~/.config/pypoetry/auth.toml",  # Poetry
    "~/.local/share/uv/credentials/credentials.toml",  # uv auth login
    "~/.local/share/python_keyring",  # keyrings.alt file backends
    "~/.npmrc", "$NPM_CONFIG_USERCONFIG",  # npm, pnpm, Yarn 1
    "~/.yarnrc", "~/.yarnrc.yml",  # Yarn
    "~/.config/pnpm/rc",  # pnpm's global config
    "~/.bunfig.toml",  # Bun
    "~/.cargo/credentials", "~/.cargo/credentials.toml",  # cargo login
    "$CARGO_HOME/credentials", "$CARGO_HOME/credentials.toml",
    "~/.gradle/gradle.properties", "$GRADLE_USER_HOME/gradle.properties",  # Gradle
    "~/.m2/settings.xml", "~/.m2/settings-security.xml",  # Maven
    "~/.sbt/.credentials", "~/.ivy2/.credentials",  # sbt
    "~/.gem/credentials",  # gem push
    "~/.bundle/config",  # Bundler: BUNDLE_<HOST> credentials
    "~/.config/dart/pub-credentials.json",  # dart pub
    # Database clients
    "~/.pgpass", "$PGPASSFILE", "~/.pg_service.conf",  # PostgreSQL
    "~/.my.cnf", "~/.mylogin.cnf",  # MySQL, MariaDB
    "~/.mongodb",  # mongosh: history with connection strings
    # AI agents and model hubs
    "~/.claude/.credentials.json", "$CLAUDE_CONFIG_DIR/.credentials.json",  # Claude Code login
    # Claude Code's config: account, MCP servers with their keys, an API key if one was given
    "~/.claude.json", "~/.claude.json.backup", "$CLAUDE_CONFIG_DIR/.claude.json",
    "~/.codex/auth.json", "$CODEX_HOME/auth.json",  # Codex CLI
    "~/.gemini/oauth_creds.json", "~/.gemini/mcp-oauth-tokens.json",  # Gemini CLI
    "~/.gemini/google_accounts.json", "~/.gemini/.env",
    "~/.config/github-copilot", "~/.copilot/config.json", "~/.copilot/mcp-oauth-config",
    "~/.config/cursor/auth.json", "~/.cursor/cli-config.json",  # Cursor CLI
    "~/.config/Cursor/User/globalStorage",  # Cursor editor: its login token
    "~/.aider/oauth-keys.env", "~/.aider.conf.yml",  # aider
    "~/.local/share/opencode/auth.json",  # opencode
    "~/.config/io.datasette.llm/keys.json",  # llm
    "~/.cache/huggingface/token", "~/.cache/huggingface/stored_tokens",  # Hugging Face
    "~/.huggingface/token", "$HF_HOME/token", "$HF_TOKEN_PATH",
    "~/.kaggle/kaggle.json", "~/.config/kaggle/kaggle.json",  # Kaggle
    "~/.ollama/id_ed25519",  # Ollama's private key
    # Browser and mail profiles: cookies and saved passwords
    "~/.mozilla", "~/.config/google-chrome", "~/.config/chromium", "~/.config/BraveSoftware",
    "~/.thunderbird",
) + SECRET_FILE_NAMES_RULE

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

# A variable is not inherited when its name (in any case) contains one of
# SECRET_ENV_WORDS once the ordinary words below are taken out, when one of its
# "_"-separated parts is one of SECRET_ENV_PARTS, or when it is a per-host credential
# (a prefix below and a host name, dots written "__"); or when its value has a secret's
# shape (see policy/env.py). --env-keep brings any of them back.
SECRET_ENV_WORDS = ("KEY", "SECRET", "TOKEN", "PASSWORD", "PASSWD", "PASSPHRASE",
                    "CREDENTIAL", "WEBHOOK", "CONNECTION_STRING", "CONNSTR")
# Ordinary words that contain a secret word: zsh's KEYTIMEOUT, less's LESSKEY*,
# PYTHON_KEYRING_BACKEND and UV_KEYRING_PROVIDER, TOKENIZERS_PARALLELISM, ...
ORDINARY_ENV_WORDS = ("KEYTIMEOUT", "LESSKEY", "KEYRING", "KEYBOARD", "KEYMAP", "TOKENIZERS")
# Short words, secret only as a whole part: MYSQL_PWD but not PWD or OLDPWD (the shell's
# directories), GITHUB_PAT but not PATH, REDISCLI_AUTH and SSH_AUTH_SOCK (an agent's
# keys to use) but not GIT_AUTHOR_NAME or XAUTHORITY, SENTRY_DSN, but not GOPRIVATE.
SECRET_ENV_PARTS = ("PAT", "PWD", "PASS", "AUTH", "DSN", "PRIVATE", "JWT", "COOKIE")
ORDINARY_ENV_NAMES = ("PWD", "OLDPWD")
SECRET_ENV_HOST_PREFIXES = ("BUNDLE_",)  # Bundler: BUNDLE_GEMS__EXAMPLE__COM=user:pass

# Values that start with a provider's token prefix and go on for 16+ token characters
# of mixed case or with digits, on their own or after the last " ", ":" or "=" (as in
# "x-access-token:ghs_...").
SECRET_VALUE_PREFIXES = (
    "sk-",  # OpenAI (sk-proj-), Anthropic (sk-ant-), OpenRouter (sk-or-), DeepSeek
    "gsk_", "xai-", "pplx-", "r8_", "hf_", "lsv2_",  # Groq, xAI, Perplexity, Replicate, HF, LangSmith
    "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_",  # GitHub
    "glpat-", "gldt-", "glrt-", "glptt-", "GR1348941",  # GitLab
    "xoxb-", "xoxp-", "xoxa-", "xoxr-", "xoxs-", "xoxe-", "xoxe.", "xapp-",  # Slack
    "AIza", "ya29.", "GOCSPX-",  # Google: API key, OAuth access token, OAuth client secret
    "dop_v1_", "doo_v1_", "dor_v1_",  # DigitalOcean
    "hvs.", "hvb.",  # HashiCorp Vault
    "tskey-", "HRKU-", "dckr_pat_", "pul-",  # Tailscale, Heroku, Docker Hub, Pulumi
    "dp.pt.", "dp.st.", "dp.sa.",  # Doppler
    "glc_", "glsa_", "NRAK-", "sntrys_", "sntryu_",  # Grafana, New Relic, Sentry
    "dapi", "ATATT",  # Databricks, Atlassian
    "npm_", "pypi-", "rubygems_", "oy2",  # npm, PyPI, RubyGems, NuGet
    "sk_live_", "rk_live_", "sk_test_", "rk_test_", "whsec_",  # Stripe
    "SG.", "shpat_", "shpss_", "shpca_", "shppa_",  # SendGrid, Shopify
    "PMAK-", "lin_api_", "ntn_", "secret_",  # Postman, Linear, Notion
    "AGE-SECRET-KEY-1",  # age private key
)
SECRET_VALUE_AWS_PREFIXES = ("AKIA", "ASIA")  # AWS access key ids: 20 upper-case characters
# Incoming-webhook URLs: whoever has one can post as the integration (lower case).
SECRET_VALUE_URLS = ("hooks.slack.com/", "discord.com/api/webhooks/",
                     "discordapp.com/api/webhooks/", ".webhook.office.com/")
# key=value secrets in connection strings and HTTP headers, as a whole word (lower case).
SECRET_VALUE_KEYS = ("password=", "passwd=", "pwd=", "accountkey=", "sharedaccesskey=",
                     "authorization:")
# URL query parameters that carry a secret (lower case): ?token=..., Azure SAS sig=, ...
SECRET_URL_PARAMS = ("password", "passwd", "pwd", "pass", "token", "access_token",
                     "auth_token", "private_token", "api_key", "apikey", "key", "secret",
                     "client_secret", "sig", "signature", "x-amz-signature",
                     "x-amz-security-token", "x-goog-signature")

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


# Package managers' caches (plan/caches.py). Each variable points into the run's cache
# area, an nsbox-owned directory the host's own tools never read; a tool's own variable
# is set too, so one the caller exported (into the read-only home) is replaced. Left
# out on purpose: CARGO_HOME (also cargo's config.toml, credentials and bin/: a shared
# area would let one sandbox plant a `[source]` replacement or a rustc wrapper that every
# later sandbox obeys), GRADLE_USER_HOME (gradle.properties and init.d/ scripts that run
# in every build), Maven (only MAVEN_OPTS or MAVEN_ARGS can move its repository, and they
# carry the user's own options), XDG_DATA_HOME (uv's Pythons, pipx's and pnpm's data:
# the host's would disappear), GOPATH (`go install`'s bin/).
CACHE_ENV = (
    # pip, uv, Poetry, go-build, yarn 1, node-gyp, pre-commit, Hugging Face, ...
    ("XDG_CACHE_HOME", "cache"),
    ("PIP_CACHE_DIR", "cache/pip"),
    ("UV_CACHE_DIR", "cache/uv"),
    ("POETRY_CACHE_DIR", "cache/pypoetry"),  # and Poetry's virtualenvs
    ("GOCACHE", "cache/go-build"),
    ("GOMODCACHE", "go/mod"),  # downloaded modules (checked against go.sum anyway)
    ("npm_config_cache", "npm"),  # npm's cacache, npx's installs (_npx), npm's logs
    ("PIPX_HOME", "pipx"),  # `pipx run`'s cached venvs, `pipx install`'s venvs
    ("PIPX_BIN_DIR", "pipx/bin"),  # never put on PATH: the area is the sandboxes' to write
    ("PIPX_MAN_DIR", "pipx/man"),
)
# npm reads npm_config_* in any letter case: the other spellings are dropped.
CACHE_ENV_ANY_CASE = ("npm_config_cache",)
# Set only where the command's environment has no value of its own: the area is
# another mount than the workspace, so uv's hard links fail (and it warns) anyway.
CACHE_ENV_UNLESS_SET = (("UV_LINK_MODE", "copy"),)


def cache_for(preset: str) -> str:
    # read-only runs write nothing that outlives them; full-access writes the host's own.
    return "shared" if preset == "workspace-write" else "off"
