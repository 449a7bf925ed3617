"""Run untrusted (model-written) Python in a separate, locked-down process with hard kills.

Every run gets a fresh interpreter started from `sandbox_child.py`, a fresh temporary working directory,
a scrubbed environment and stdout/stderr redirected to files (a program cannot fill the host's memory
through a pipe; the file-size rlimit caps them). The isolation layers, each where the kernel allows it
(see sandbox_child.py and docs/rewards.md for what is and is not protected):

    rlimits: CPU time, address space, file size, process count, open files, no core dumps
    wall-clock kill of the whole process tree (inside the child and again, as a backstop, here)
    user + network + PID namespaces: no network, no view of host processes, forks die with the program
    Landlock: writes only beneath the working directory, no TCP, no signals to processes outside
    root drops to `nobody`; a Python socket guard where the kernel can cut neither network path

`SandboxPool` runs many of these in parallel. Its workers are threads that only launch and wait on
sandbox processes, so a crashing, hanging or hostile program can never take a worker down with it:
every failure comes back as a `SandboxResult` with a status, never as an exception.
"""

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

CHILD_SCRIPT = Path(__file__).with_name("sandbox_child.py")
NOBODY = 65534
# Startup and teardown slack on top of the program's own wall limit before the host-side backstop fires.
BACKSTOP_SLACK_S = 5.0
# Only these reach the program: nothing from the host environment (API keys, tokens) leaks in.
BASE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONHASHSEED": "0",
            "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1"}


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits for one sandboxed run. cpu_s defaults to wall_s."""

    wall_s: float = 10.0
    cpu_s: float | None = None
    memory_mb: int = 1024  # address space, so it also bounds threads' stacks and mmaps
    file_size_mb: int = 16  # any single file written, stdout and stderr included
    max_processes: int = 64  # tasks (processes + threads) inside the sandbox
    max_output_bytes: int = 1 << 20  # stdout/stderr returned to the caller are cut here
    namespaces: bool = True  # use user/net/pid namespaces when the kernel allows


@dataclass
class SandboxResult:
    """Outcome of one run.

    status: "ok" (exit 0), "error" (non-zero exit or exception), "timeout" (wall clock), "cpu_timeout",
    "memory" (MemoryError or killed near the address-space limit), "output_limit", "signal" (killed by a
    signal, e.g. a segfault), "sandbox_error" (the sandbox itself failed; the program's fault is unknown).
    test_results: for assert-style runs, pass/fail per test index (missing tests did not finish).
    """

    status: str
    returncode: int | None = None
    stdout: str = ""
    stderr: str = ""
    wall_s: float = 0.0
    cpu_s: float = 0.0
    test_results: dict[int, bool] = field(default_factory=dict)
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def run_python(code: str, stdin: str = "", limits: SandboxLimits = SandboxLimits(),
               tests: list[str] | None = None) -> SandboxResult:
    """Run `code` as a __main__ script with `stdin`; or, given `tests`, exec the code and then each test
    snippet (assert statements) in its namespace, reporting which tests passed. Never raises."""
    try:
        return _run(code, stdin, limits, tests)
    except Exception as e:  # noqa: BLE001 - a reward must never crash its caller
        log.exception("sandbox failure")
        return SandboxResult(status="sandbox_error", detail=f"{type(e).__name__}: {e}")


def _run(code: str, stdin: str, limits: SandboxLimits, tests: list[str] | None) -> SandboxResult:
    root = Path(tempfile.mkdtemp(prefix="mimo-sandbox-"))
    try:
        workdir = root / "work"
        workdir.mkdir()
        program = workdir / "main.py"
        program.write_text(code)
        if os.geteuid() == 0:  # the child drops to nobody, which must own its working directory
            os.chmod(root, 0o711)
            for path in (workdir, program):
                os.chown(path, NOBODY, NOBODY)
        (root / "stdin").write_text(stdin)
        files = {name: open(root / name, "w+b") for name in ("stdout", "stderr", "report")}
        config = {"program": str(program), "workdir": str(workdir), "mode": "asserts" if tests is not None else "program",
                  "tests": tests or [], "report_fd": files["report"].fileno(), "wall_s": limits.wall_s,
                  "cpu_s": limits.cpu_s or limits.wall_s, "memory_mb": limits.memory_mb,
                  "file_size_mb": limits.file_size_mb, "max_processes": limits.max_processes,
                  "namespaces": limits.namespaces}
        (root / "config.json").write_text(json.dumps(config))
        os.chmod(root / "config.json", 0o644)
        env = dict(BASE_ENV, HOME=str(workdir), TMPDIR=str(workdir))
        start = time.monotonic()
        with open(root / "stdin", "rb") as stdin_file:
            proc = subprocess.Popen([sys.executable, "-I", "-B", str(CHILD_SCRIPT), str(root / "config.json")],
                                    stdin=stdin_file, stdout=files["stdout"], stderr=files["stderr"],
                                    pass_fds=(files["report"].fileno(),), cwd=workdir, env=env,
                                    start_new_session=True)
        try:
            proc.wait(timeout=limits.wall_s + BACKSTOP_SLACK_S)
            backstop = False
        except subprocess.TimeoutExpired:
            backstop = True
        kill_tree(proc.pid)
        proc.wait()
        wall = time.monotonic() - start
        outputs = {}
        for name, f in files.items():
            f.seek(0)
            outputs[name] = f.read(limits.max_output_bytes if name != "report" else 1 << 24)
            f.close()
        stdout_size = (root / "stdout").stat().st_size + (root / "stderr").stat().st_size
        result = _verdict(outputs, limits, wall, backstop, stdout_size)
        if tests is not None and result.ok and len(result.test_results) < len(tests):
            result.status, result.detail = "error", "exited before its tests finished"
        return result
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _verdict(outputs: dict[str, bytes], limits: SandboxLimits, wall: float, backstop: bool,
             output_size: int) -> SandboxResult:
    records = [json.loads(line) for line in outputs["report"].decode(errors="replace").splitlines()
               if line.startswith("{")]
    exit_record = next((r for r in records if "exit" in r), None)
    reaper_record = next((r for r in records if "timeout" in r), None)
    tests = {r["test"]: r["passed"] for r in records if "test" in r}
    errors = [r.get("error") or r.get("solution_error") for r in records
              if not r.get("passed", True) or "solution_error" in r]
    result = SandboxResult(status="ok", stdout=outputs["stdout"].decode(errors="replace"),
                           stderr=outputs["stderr"].decode(errors="replace"), wall_s=wall, test_results=tests,
                           detail=errors[0] if errors else "")
    if reaper_record is None:
        # The reaper never reported: it was killed by the host backstop or could not start at all.
        result.status = "timeout" if backstop else "sandbox_error"
        result.detail = result.detail or ("killed by host backstop" if backstop else result.stderr[-500:])
        return result
    if reaper_record["timeout"]:
        result.status, result.cpu_s = "timeout", reaper_record["cpu_s"]
        result.detail = result.detail or f"wall-clock limit of {limits.wall_s:g}s"
        return result
    if exit_record is None:
        result.status, result.detail = "signal", "sandbox init died before reporting"
        return result
    result.returncode, result.cpu_s = exit_record["exit"], exit_record["cpu_s"]
    result.status, detail = _classify(result, limits, output_size)
    result.detail = result.detail or detail
    return result


def _classify(result: SandboxResult, limits: SandboxLimits, output_size: int) -> tuple[str, str]:
    """Status and a default detail for a program that ended on its own (no wall-clock timeout)."""
    code, stderr = result.returncode, result.stderr
    if code == 0:
        return "ok", ""
    if code == -signal.SIGXCPU or (code == -signal.SIGKILL and result.cpu_s >= 0.95 * (limits.cpu_s or limits.wall_s)):
        return "cpu_timeout", f"CPU limit of {limits.cpu_s or limits.wall_s:g}s"
    if "MemoryError" in stderr or "MemoryError" in result.detail:
        return "memory", f"MemoryError at the {limits.memory_mb} MB address-space limit"
    if output_size >= limits.file_size_mb << 20 or "File too large" in stderr:
        return "output_limit", f"output over the {limits.file_size_mb} MB file-size limit"
    if code < 0:
        return "signal", f"killed by {signal.Signals(-code).name}"
    last_line = stderr.strip().splitlines()[-1:] or [f"exit code {code}"]
    return "error", last_line[0][:500]


def kill_tree(pid: int) -> None:
    """SIGKILL `pid` and every descendant. Killing the PID-namespace init (the program) kills its whole
    namespace at once; descendants are still walked for the no-namespace path."""
    for _ in range(20):
        victims = _descendants(pid)
        if not victims:
            break
        for victim in victims:
            try:
                os.kill(victim, signal.SIGKILL)
            except ProcessLookupError:
                pass
    try:
        os.killpg(pid, signal.SIGKILL)  # the sandbox's own session, in case the walk raced a fork
    except (ProcessLookupError, PermissionError):
        pass


def _descendants(pid: int) -> list[int]:
    found, stack = [], [pid]
    while stack:
        parent = stack.pop()
        try:
            tids = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                children = [int(c) for c in open(f"/proc/{parent}/task/{tid}/children").read().split()]
            except OSError:
                continue
            found += children
            stack += children
    return found


class SandboxPool:
    """Runs sandboxed programs in parallel; reusable across calls and safe to share between threads.

    `submit` returns a concurrent.futures.Future (wrap it with asyncio.wrap_future in async code); `map`
    runs a batch and keeps order. Results are always SandboxResult values: a crashed or killed program
    never breaks the pool.
    """

    def __init__(self, workers: int | None = None, limits: SandboxLimits = SandboxLimits()):
        self.workers = workers or os.cpu_count() or 1
        self.limits = limits
        self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="sandbox")

    def submit(self, code: str, stdin: str = "", tests: list[str] | None = None,
               limits: SandboxLimits | None = None) -> "Future[SandboxResult]":
        return self._executor.submit(run_python, code, stdin, limits or self.limits, tests)

    def map(self, jobs: list[dict]) -> list[SandboxResult]:
        """Each job is a dict of `submit` keyword arguments."""
        return [f.result() for f in [self.submit(**job) for job in jobs]]

    def close(self) -> None:
        self._executor.shutdown(wait=True)

    def __enter__(self) -> "SandboxPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
