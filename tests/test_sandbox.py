"""The sandbox against hostile programs: each must be contained with a clean verdict, the host unharmed."""

import os
import socket
import threading
import time
from pathlib import Path

import pytest

from mimo.rewards.sandbox import SandboxLimits, SandboxPool, run_python

FAST = SandboxLimits(wall_s=3.0)


@pytest.fixture(scope="module")
def pool():
    with SandboxPool(workers=4, limits=FAST) as p:
        yield p


def test_runs_program_with_stdin_and_fresh_workdir():
    result = run_python("import os\nprint(int(input()) * 2, os.listdir('.'))", stdin="21\n")
    assert result.status == "ok", result
    assert result.stdout.split()[0] == "42" and "['main.py']" in result.stdout


def test_scrubbed_environment(monkeypatch):
    monkeypatch.setenv("MIMO_TEST_SECRET", "hunter2")
    result = run_python("import os\nprint(sorted(os.environ))\nprint(open(f'/proc/{os.getppid() or 1}/environ').read())")
    assert "MIMO_TEST_SECRET" not in result.stdout and "hunter2" not in result.stdout
    assert "hunter2" not in result.stderr


def test_reading_host_process_environment_fails():
    code = f"print(open('/proc/{os.getpid()}/environ').read())"
    result = run_python(code)
    assert result.status == "error" and "hunter2" not in result.stdout
    assert "Permission" in result.detail or "No such" in result.detail or "denied" in result.detail, result


def test_early_exit_cannot_pass_assert_tests():
    for cheat in ("import sys; sys.exit(0)", "import os; os._exit(0)", "raise SystemExit(0)"):
        result = run_python(f"def f(): return 1\n{cheat}", tests=["assert f() == 2"])
        assert result.test_results.get(0) is not True and result.status != "ok", (cheat, result)


def test_cpu_limit_kills_busy_loop():
    result = run_python("while True: pass", limits=SandboxLimits(wall_s=10, cpu_s=1))
    assert result.status == "cpu_timeout", result
    assert result.wall_s < 5


HOSTILE = {
    # name: (code, statuses accepted as a clean verdict)
    "infinite_loop": ("while True: pass", {"timeout", "cpu_timeout"}),
    "sleep_forever": ("import time; time.sleep(10**6)", {"timeout"}),
    "fork_bomb": ("import os\nwhile True:\n    try: os.fork()\n    except OSError: pass", {"timeout", "cpu_timeout"}),
    "memory_bomb": ("x = []\nwhile True: x.append(bytearray(10**8))", {"memory"}),
    "huge_output": ("import sys\nwhile True: sys.stdout.write('x' * 65536)", {"output_limit"}),
    "huge_file": ("f = open('big', 'wb')\nwhile True: f.write(b'x' * 65536)", {"output_limit"}),
    "os_exit": ("import os; os._exit(7)", {"error"}),
    "segfault_signal": ("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)", {"signal"}),
    "sigkill_self": ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", {"signal"}),
    "deep_recursion": ("import sys\nsys.setrecursionlimit(10**8)\ndef f(n): return f(n + 1) + 1\nf(0)",
                       {"memory", "signal", "timeout", "error", "cpu_timeout"}),
    "thread_outlives_main": ("import threading, time\nthreading.Thread(target=time.sleep, args=(10**6,)).start()\n"
                             "print('main done')", {"timeout"}),
    "daemon_process": ("import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(10**6)\nprint('parent')",
                       {"ok"}),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_program_is_contained(pool, name):
    code, accepted = HOSTILE[name]
    start = time.monotonic()
    result = pool.submit(code).result()
    assert result.status in accepted, (name, result)
    assert time.monotonic() - start < FAST.wall_s + 4
    assert len(result.stdout) <= FAST.max_output_bytes


def test_nothing_outlives_the_sandbox(pool):
    marker = f"mimo-linger-{os.getpid()}"
    code = (f"import os, time, threading\nif os.fork() == 0:\n    os.setsid()\n    os.execvp('sleep', ['sleep', '999'])\n"
            f"threading.Thread(target=time.sleep, args=(999,), daemon=True).start()\nprint('{marker}')")
    assert pool.submit(code).result().status == "ok"
    time.sleep(0.3)
    lingering = [p for p in os.listdir("/proc") if p.isdigit() and _cmdline(p) == "sleep 999"]
    assert not lingering


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def test_cannot_kill_the_host(pool):
    me, my_parent = os.getpid(), os.getppid()
    code = (f"import os, signal\nfor pid in ({me}, {my_parent}):\n    try:\n        os.kill(pid, signal.SIGKILL)\n"
            f"        print('killed', pid)\n    except OSError as e:\n        print('refused', type(e).__name__)")
    result = pool.submit(code).result()
    assert result.stdout.split().count("refused") == 2, result
    assert os.getpid() == me  # and we are still here to check


def test_cannot_write_outside_workdir(pool, tmp_path):
    target = tmp_path / "pwned.txt"
    for path in (target, Path("/tmp") / f"mimo-pwned-{os.getpid()}"):
        result = pool.submit(f"open({str(path)!r}, 'w').write('x')").result()
        assert result.status == "error" and not path.exists(), result


def test_no_network(pool):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    accepted = []
    thread = threading.Thread(target=lambda: _accept(server, accepted), daemon=True)
    thread.start()
    code = f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\ns.sendall(b'leak')"
    result = pool.submit(code).result()
    server.close()
    assert result.status == "error", result
    assert not accepted


def _accept(server, accepted):
    server.settimeout(3)
    try:
        accepted.append(server.accept())
    except OSError:
        pass


def test_pool_survives_crashes_and_keeps_order(pool):
    jobs = [{"code": f"print({i})"} if i % 3 else {"code": "import os; os._exit(1)"} for i in range(12)]
    results = pool.map(jobs)
    assert [r.status for r in results] == ["error" if i % 3 == 0 else "ok" for i in range(12)]
    assert [r.stdout.strip() for r in results if r.ok] == [str(i) for i in range(12) if i % 3]
