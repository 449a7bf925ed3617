"""The inside half of the sandbox: run as `python -I sandbox_child.py CONFIG_PATH` by mimo.rewards.sandbox.

It is trusted code that locks the process down before any untrusted code runs, in this order:

1. New network + PID namespaces (root creates them directly; other users through a new user namespace):
   no network interface but a down loopback, and the program becomes PID 1 of its own PID namespace, so
   it cannot address (signal) any host process and every process it forks dies with it.
2. This process stays outside as a reaper: it waits for the sandbox with a wall-clock timeout, kills
   whatever is left, and reports whether the time ran out. Inside, a tiny init (PID 1) waits for the
   program and reports its exit status and CPU time; the program itself is an ordinary process, so it can
   signal itself and exit normally, and when init exits the kernel kills everything left in the namespace.
3. Inside, root drops to `nobody` (the kernel never enforces RLIMIT_NPROC on uid 0, so a fork bomb would
   win), keeping only CAP_DAC_READ_SEARCH so the interpreter can still read a stdlib under /root.
4. Then rlimits (CPU, address space, file size, processes, open files, no core dumps), then Landlock
   (writes only beneath the working directory, no TCP, no signals or abstract unix sockets outside).
5. Where neither a network namespace nor Landlock networking is available, a Python-level guard makes
   sockets fail: weaker (ctypes can bypass it), so it is a fallback only.

Two run modes: "program" executes the code as __main__ (stdin/stdout tests); "asserts" executes the code,
then each test snippet in the same namespace, appending one JSON line per finished test to the report fd.
A result is only written after its test ran, so a program that exits early (sys.exit(0), os._exit(0)) has
no passing tests, never all of them.
"""

import ctypes
import json
import os
import resource
import signal
import sys

CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
NOBODY = 65534
PR_SET_KEEPCAPS, PR_SET_NO_NEW_PRIVS, PR_SET_CHILD_SUBREAPER, PR_CAP_AMBIENT = 8, 38, 36, 47
CAP_DAC_READ_SEARCH, LINUX_CAPABILITY_VERSION_3 = 2, 0x20080522
SYS_LANDLOCK_CREATE_RULESET, SYS_LANDLOCK_ADD_RULE, SYS_LANDLOCK_RESTRICT_SELF = 444, 445, 446

libc = ctypes.CDLL(None, use_errno=True)


def report(fd: int, record: dict) -> None:
    os.write(fd, (json.dumps(record) + "\n").encode())


def write_file(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def enter_namespaces(as_root: bool) -> bool:
    """New net+pid namespaces (plus a user namespace when not root); False where the kernel forbids them."""
    if as_root:
        return libc.unshare(CLONE_NEWNET | CLONE_NEWPID) == 0
    uid, gid = os.geteuid(), os.getegid()
    if libc.unshare(CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWPID) != 0:
        return False
    # Identity maps: the program keeps its uid, so files it creates are owned normally.
    write_file("/proc/self/setgroups", "deny")
    write_file("/proc/self/uid_map", f"{uid} {uid} 1")
    write_file("/proc/self/gid_map", f"{gid} {gid} 1")
    return True


def drop_root() -> None:
    """Become nobody, keeping only the right to read files (so imports from a root-only stdlib work)."""
    libc.prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0)
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)
    keep = 1 << CAP_DAC_READ_SEARCH
    header = (ctypes.c_uint32 * 2)(LINUX_CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)(keep, keep, keep, 0, 0, 0)  # effective, permitted, inheritable
    if libc.capset(header, data) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")
    libc.prctl(PR_CAP_AMBIENT, 2, CAP_DAC_READ_SEARCH, 0, 0)  # raise: programs it execs can import too


def count_own_processes() -> int:
    uid, n = os.getuid(), 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            n += os.stat(f"/proc/{pid}").st_uid == uid
        except OSError:
            pass
    return n


def set_limits(cfg: dict, own_user_namespace: bool) -> None:
    mb = 1 << 20
    cpu = max(1, int(cfg["cpu_s"] + 0.999))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_AS, (cfg["memory_mb"] * mb,) * 2)
    resource.setrlimit(resource.RLIMIT_FSIZE, (cfg["file_size_mb"] * mb,) * 2)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
    # In a fresh user namespace RLIMIT_NPROC counts only this sandbox's tasks; outside one it counts every
    # process of the uid, so the budget is added on top of what the uid already runs.
    nproc = cfg["max_processes"] + (0 if own_user_namespace else count_own_processes())
    resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))


class RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def landlock(workdir: str) -> int:
    """Restrict writes to `workdir` (and /dev/null), deny TCP, scope signals; returns the ABI used (0 = none)."""
    abi = libc.syscall(SYS_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    if abi < 1:
        return 0
    # Every access right that changes the filesystem (bits 1, 4-12, 14 truncate from ABI 3); reads and
    # execution stay allowed everywhere, so the interpreter and its libraries keep working.
    write_rights = (1 << 1) | sum(1 << b for b in range(4, 13)) | ((1 << 14) if abi >= 3 else 0)
    attr = RulesetAttr(handled_access_fs=write_rights,
                       handled_access_net=0b11 if abi >= 4 else 0,  # bind + connect TCP
                       scoped=0b11 if abi >= 6 else 0)  # abstract unix sockets + signals
    size = ctypes.sizeof(RulesetAttr) if abi >= 6 else (16 if abi >= 4 else 8)
    ruleset = libc.syscall(SYS_LANDLOCK_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), 0)
    if ruleset < 0:
        return 0
    for path, rights in ((workdir, write_rights), ("/dev/null", (1 << 1) | ((1 << 14) if abi >= 3 else 0))):
        fd = os.open(path, os.O_PATH)
        rule = PathBeneathAttr(allowed_access=rights, parent_fd=fd)
        libc.syscall(SYS_LANDLOCK_ADD_RULE, ruleset, 1, ctypes.byref(rule), 0)
        os.close(fd)
    libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    ok = libc.syscall(SYS_LANDLOCK_RESTRICT_SELF, ruleset, 0) == 0
    os.close(ruleset)
    return abi if ok else 0


def guard_sockets() -> None:
    """Fallback when the kernel cannot cut the network: make every socket constructor fail."""
    import socket

    def refuse(*args, **kwargs):
        raise PermissionError("network access is disabled in the mimo sandbox")

    for name in ("socket", "create_connection", "create_server", "socketpair", "fromfd"):
        setattr(socket, name, refuse)
    sys.modules["_socket"].socket = refuse


def run_untrusted(cfg: dict, report_fd: int) -> None:
    code = open(cfg["program"]).read()
    namespace = {"__name__": "__main__", "__file__": cfg["program"], "__builtins__": __builtins__}
    sys.argv = [cfg["program"]]
    sys.path.insert(0, cfg["workdir"])
    if cfg["mode"] == "program":
        exec(compile(code, cfg["program"], "exec"), namespace)
        return
    try:
        exec(compile(code, cfg["program"], "exec"), namespace)
    except BaseException as e:  # noqa: BLE001 - any failure of the solution fails every test
        report(report_fd, {"solution_error": f"{type(e).__name__}: {e}"[:500]})
        os._exit(1)
    passed = 0
    for i, test in enumerate(cfg["tests"]):
        try:
            exec(compile(test, f"test_{i}", "exec"), namespace)
            report(report_fd, {"test": i, "passed": True})
            passed += 1
        except BaseException as e:  # noqa: BLE001 - SystemExit inside a test is a failure too
            report(report_fd, {"test": i, "passed": False, "error": f"{type(e).__name__}: {e}"[:500]})
    # Exit now: threads the solution left running must not turn a finished verdict into a timeout.
    sys.stdout.flush()
    os._exit(0 if passed == len(cfg["tests"]) else 1)


def init(cfg: dict, report_fd: int, as_root: bool, isolated: bool) -> None:
    """PID 1 of the sandbox: lock down, start the program, report how it ended."""
    if as_root:
        drop_root()
    os.chdir(cfg["workdir"])
    set_limits(cfg, own_user_namespace=isolated and not as_root)
    if landlock(cfg["workdir"]) < 4 and not isolated:
        guard_sockets()
    program = os.fork()
    if program == 0:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGCHLD])
        run_untrusted(cfg, report_fd)
        return
    _, status, usage = os.wait4(program, 0)
    report(report_fd, {"exit": os.waitstatus_to_exitcode(status), "cpu_s": usage.ru_utime + usage.ru_stime})
    os._exit(0)


def reap(child: int, wall_s: float, report_fd: int) -> None:
    """Wait for the sandbox with a wall-clock limit, then kill anything it left behind."""
    timed_out = signal.sigtimedwait([signal.SIGCHLD], wall_s) is None
    if timed_out:
        os.kill(child, signal.SIGKILL)
    _, _, usage = os.wait4(child, 0)
    # Orphans re-parent to us (subreaper), so this loop catches daemons of the no-namespace path too.
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            kill_children()
    report(report_fd, {"timeout": timed_out, "cpu_s": usage.ru_utime + usage.ru_stime})


def kill_children() -> None:
    me = os.getpid()
    for tid in os.listdir(f"/proc/{me}/task"):
        try:
            children = open(f"/proc/{me}/task/{tid}/children").read().split()
        except OSError:
            continue
        for pid in children:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass


def main() -> None:
    with open(sys.argv[1]) as f:
        cfg = json.load(f)
    report_fd = cfg["report_fd"]
    as_root = os.geteuid() == 0
    isolated = cfg["namespaces"] and enter_namespaces(as_root)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGCHLD])
    child = os.fork()
    if child:
        reap(child, cfg["wall_s"], report_fd)
        os._exit(0)
    init(cfg, report_fd, as_root, isolated)


if __name__ == "__main__":
    main()
