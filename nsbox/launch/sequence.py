"""The launch sequence, in order. Read top to bottom.

caller:   unshare namespaces -> write id maps -> fork PID 1
PID 1:    join the limits' cgroup -> build the new root -> pivot_root -> hostname -> loopback
          -> [allowlist: fork the network forwarder] -> fork the command
command:  chdir -> fds -> rlimits -> drop capabilities -> no_new_privs -> parent-death signal
          -> Landlock -> seccomp -> exec
"""

import _signal as signal  # the C module: `signal` would import enum (~4 ms)
import os
import select

from nsbox import trace
from nsbox.kernel import caps, landlock, namespaces, net, proc, seccomp
from nsbox.launch import errorpipe, limits, pid1, rootfs

FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
                     signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH)
WATCHED_SIGNALS = FORWARDED_SIGNALS + (signal.SIGCHLD,)


class Channel:
    """The pipes shared by the caller and the sandbox's processes."""

    def __init__(self):
        self.error_r, self.error_w = os.pipe2(os.O_CLOEXEC)
        # The caller holds the write end for its whole life: EOF tells PID 1 it died.
        self.lifeline_r, self.lifeline_w = os.pipe2(os.O_CLOEXEC)
        self.limits = None  # limits.Active: PID 1 joins its cgroup first
        # A warm session: called with the plan in place of exec, once every
        # restriction is applied; it serves commands and returns an exit code.
        self.serve = None
        # A spare sandbox: called with the plan and the error pipe once every
        # restriction is applied; waits for the command and returns the plan to exec.
        self.await_command = None
        # launch.proxy.Running for network "allowlist": started by the caller before unshare.
        self.proxy = None
        # rootfs.host_terminal() of `nsbox exec`: shown as /dev/console.
        self.console = None
        # launch.denial_channel.Channel when the plan reports denials (made by fork_init).
        self.denials = None


def enter_namespaces(plan) -> None:
    """Runs in the caller's process (which must be single-threaded)."""
    trace.mark("unshare")
    namespaces.unshare(plan.ns_flags)
    # Id maps before any mount: mounting needs capabilities the map makes valid.
    trace.mark("id maps")
    namespaces.write_id_maps(plan.uid, plan.gid, as_root=plan.policy.root_inside)


def fork_init(plan, channel: Channel) -> int:
    """Fork the sandbox's PID 1; returns its pid as seen by the caller."""
    trace.mark("fork pid1")
    if channel.limits is None and plan.limits is not None:
        # A caller that did not create the limits' cgroup itself gets it here:
        # PID 1 must never start outside it. The caller removes it (limits.finish).
        channel.limits = limits.start(plan.limits)
    if plan.denial_watch is not None and channel.denials is None:
        from nsbox.launch import denial_channel

        channel.denials = denial_channel.Channel()
    proc.set_dumpable(False)  # PID 1 and all it forks, from birth: see forkserver
    pid = os.fork()
    if pid == 0:
        try:
            _init_main(plan, channel)
        finally:
            os._exit(errorpipe.SETUP_FAILED)
    if channel.denials is not None:
        channel.denials.caller_side()
    os.close(channel.error_w)
    os.close(channel.lifeline_r)
    if channel.proxy is not None:
        channel.proxy.close_sandbox_end()
    return pid


def _init_main(plan, channel: Channel) -> None:
    trace.mark("pid1 start")
    step = "cgroup"
    try:
        os.close(channel.lifeline_w)
        os.close(channel.error_r)
        if channel.denials is not None:
            channel.denials.sandbox_side()
        # Into the limits' cgroup before anything runs (or forks) in the sandbox.
        limits.join(channel.limits)
        step = "parent-death signal"
        proc.set_parent_death_signal(signal.SIGKILL)
        if select.select([channel.lifeline_r], [], [], 0)[0]:
            os._exit(errorpipe.SETUP_FAILED)  # the caller died before we could watch it
        step = "mounts"
        trace.mark("mounts")
        if plan.own_mount_ns:  # before any mount: the caller's view stays the host's
            namespaces.unshare(namespaces.CLONE_NEWNS)
        rootfs.build_and_enter(plan.mounts, plan.use_mount_api, channel.console,
                               preload=channel.denials and channel.denials.preload)
        step = "hostname"
        trace.mark("hostname")
        namespaces.set_hostname(plan.hostname)
        proc.set_name("nsbox-init")
        if plan.loopback:
            step = "loopback"
            trace.mark("loopback")
            net.loopback_up()
        if channel.proxy is not None:
            # After loopback, before the command: its first connection must find the port.
            step = "network forwarder"
            trace.mark("network forwarder")
            channel.proxy.start_forwarder(plan)
        pid1.watch_signals(WATCHED_SIGNALS)
        step = "fork command"
        trace.mark("fork command")
        command_pid = os.fork()
    except BaseException as err:
        errorpipe.report(channel.error_w, step, err)
        os._exit(errorpipe.SETUP_FAILED)
    if command_pid == 0:
        try:
            _command_main(plan, channel)
        finally:
            os._exit(errorpipe.SETUP_FAILED)
    os.close(channel.error_w)
    report_denials = None
    if channel.denials is not None:
        from nsbox.launch import denial_channel

        # After the last fork: PID 1 has a second thread from here on.
        report_denials = denial_channel.start_supervisor(
            plan.denial_watch, channel.denials, plan.policy.seccomp,
            session=channel.serve is not None)
    code = pid1.supervise(command_pid, FORWARDED_SIGNALS, WATCHED_SIGNALS,
                          resume_stopped=channel.serve is not None)
    if report_denials is not None:
        report_denials()
    os._exit(code)


def _command_main(plan, channel: Channel) -> None:
    trace.mark("command start")
    if channel.denials is not None:
        channel.denials.command_side()
    restrict_command(plan, channel.error_w, own_files=channel.serve is None,
                     report_to=channel.denials)
    if channel.serve is not None:
        os.close(channel.error_w)  # EOF: the session is ready
        os._exit(channel.serve(plan))
    if channel.await_command is not None:
        plan = channel.await_command(plan, channel.error_w)
    exec_command(plan, channel.error_w)


def restrict_command(plan, error_w: int, drop_caps: bool = True, expected_parent=None,
                     own_files: bool = True, report_to=None) -> None:
    """The command process's own steps, in order; a failure is reported and ends it (125).
    own_files: grant landlock.add_own_files() (not for a session's server).
    report_to: the denial_channel.Channel to PID 1, which gets the filter's listener."""
    step = ["signals"]
    try:
        pid1.reset_signals(WATCHED_SIGNALS)
        step[0] = "chdir"
        os.chdir(plan.cwd)
        step[0] = "close fds"
        proc.cloexec_from(3)
        step[0] = "rlimits"
        limits.apply_rlimits(plan.limits)
        confine(plan, step, drop_caps, expected_parent, own_files, report_to)
        trace.mark("exec")
    except BaseException as err:
        errorpipe.report(error_w, step[0], err)
        os._exit(errorpipe.SETUP_FAILED)


def confine(plan, step: list, drop_caps: bool = True, expected_parent=None,
            own_files: bool = False, report_to=None) -> None:
    """The restrictions every process in the sandbox takes last, in order (the command,
    and the network forwarder); step[0] names the one under way, for the failure record."""
    if drop_caps:
        step[0] = "drop capabilities"
        caps.drop_all(plan.last_cap)
    step[0] = "no_new_privs"
    proc.set_no_new_privs()
    step[0] = "parent-death signal"
    proc.set_parent_death_signal(signal.SIGKILL)
    if expected_parent is not None and os.getppid() != expected_parent:
        raise ProcessLookupError(3, "nsbox exited before the command started")
    # Landlock after the final root exists: its rules open paths in the new root.
    if plan.landlock is not None:
        step[0] = "landlock"
        trace.mark("landlock")
        landlock.restrict_self(plan.landlock, own_files=own_files)
    # seccomp last: everything before it may use calls the filter denies.
    if report_to is not None:
        # The reporting variant of the same profile; its listener goes to PID 1 at once.
        step[0] = "seccomp"
        trace.mark("seccomp load")
        from nsbox.launch import denial_channel

        denial_channel.send_listener(report_to, seccomp.load_filter(
            plan.denial_watch.program, listener=True))
    elif plan.seccomp_bpf is not None:
        step[0] = "seccomp"
        trace.mark("seccomp load")
        seccomp.load_filter(plan.seccomp_bpf)
    elif plan.denial_watch is not None:  # never without a filter
        step[0] = "seccomp"
        raise RuntimeError("this process would have no seccomp filter: the plan has only "
                           "the reporting one, and nothing here supervises it")


def exec_command(plan, error_w: int) -> None:
    """Replace this process with the command; never returns."""
    try:
        os.execve(find_executable(plan.argv[0], plan.env.get("PATH", os.defpath)),
                  plan.argv, plan.env)
    except BaseException as err:
        errorpipe.report(error_w, "exec", err)
        os._exit(errorpipe.NOT_FOUND if isinstance(err, FileNotFoundError)
                 else errorpipe.CANNOT_EXECUTE)


def find_executable(name: str, search_path: str) -> str:
    """PATH lookup as a shell does it: the first existing regular file wins.

    Unlike execvp, a PATH directory we may not enter means "not here" (127),
    not "permission denied" (126).
    """
    if "/" in name:
        return name
    for directory in search_path.split(os.pathsep):
        candidate = os.path.join(directory or ".", name)
        try:
            if os.path.isfile(candidate):
                return candidate
        except OSError:
            continue
    raise FileNotFoundError(2, "command not found", name)
