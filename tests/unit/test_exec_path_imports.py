"""`nsbox exec`'s default path leaves the code of rare branches unimported: policy
files, limit values, the proxy, profile compiling, cache writes, git pointer files and
other mounts of a filesystem each have their own module, imported when needed. Runs in
its own interpreter: imports are process-wide."""

import subprocess
import sys

RARE = ("nsbox.policy.policy_toml", "nsbox.policy.file_trust", "nsbox.policy.limit_values",
        "nsbox.plan.proxy_settings", "nsbox.plan.profile_compiler", "nsbox.plan.bpf_cache_write",
        "nsbox.plan.git_pointer", "nsbox.kernel.mount_aliases")


def test_the_default_exec_path_imports_no_rare_branch(tmp_path):
    workspace = tmp_path / "ws"
    workspace.mkdir()
    code = ("import sys\n"
            "from nsbox.cli import exec_args, execute\n"
            "from nsbox.launch import caller\n"
            "from nsbox.plan import prepare\n"
            f"args = exec_args.parse(['--workspace', {str(workspace)!r}, '--', 'true'])\n"
            "exec_args.policy_from_options(args.values)\n"
            f"print(' '.join(m for m in {RARE!r} if m in sys.modules))\n")
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}  # no user policy file
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, env=env, cwd=workspace)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""


def test_a_policy_file_and_a_limit_import_their_readers(tmp_path):
    workspace = tmp_path / "ws"
    (workspace / ".nsbox").mkdir(parents=True)
    (workspace / ".nsbox" / "policy.toml").write_text('network = "none"\n')
    code = ("import sys\n"
            "from nsbox.cli import exec_args\n"
            f"args = exec_args.parse(['--workspace', {str(workspace)!r}, '--limit', "
            "'memory=512M', '--', 'true'])\n"
            "policy = exec_args.policy_from_options(args.values)\n"
            "print(policy.limits.memory, 'nsbox.policy.policy_toml' in sys.modules,\n"
            "      'nsbox.policy.file_trust' in sys.modules)\n")
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, env=env, cwd=workspace)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(512 << 20), "True", "True"]
