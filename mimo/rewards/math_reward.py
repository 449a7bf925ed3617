"""Math reward: extract the final answer, then compare it with the gold answer through Math-Verify.

Extraction (`extract_answer`), on the text after the last `</think>` when the reply has one:
    1. the last `\boxed{...}` (or `\fbox{...}`), braces balanced;
    2. else the last `#### X` line (GSM8K style);
    3. else the last "answer is X" / "answer: X" (up to the end of its line, trailing period dropped);
    4. else the whole reply, when it is one short line without `\boxed` (a reply that is only the answer).
There is deliberately no "last number in the text" fallback: in RL it rewards a lucky number in a
rambling reply, which is a false positive the policy can learn to exploit.

Comparison is math-verify's: LaTeX, fractions, decimals, sets, intervals, equations, units removed.
Sympy can hang on adversarial input, so every parse and comparison has a time limit. Math-verify
implements it with SIGALRM, which only works in a process's main thread: `math_reward` called from
any other thread hands the work to a process of a shared `MathRewardPool`, whose workers run it in
their main thread and are killed and replaced if they still hang.
"""

import logging
import math
import multiprocessing
import queue
import re
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache

from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

from mimo.rewards.result import RewardResult

log = logging.getLogger(__name__)

EXTRACTION = [LatexExtractionConfig(), ExprExtractionConfig()]
BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
MAX_BARE_ANSWER = 100
FALLBACKS = [re.compile(r"####\s*([^\n]+)"), re.compile(r"answer\s*(?:is|:)\s*:?\s*([^\n]+)", re.IGNORECASE)]


def extract_answer(completion: str) -> str | None:
    """The final answer of a reply (see the module docstring for the rules), or None."""
    text = completion.rsplit("</think>", 1)[-1]
    starts = [m.end() for m in BOXED.finditer(text)]
    for start in reversed(starts):  # the last boxed whose braces close
        depth = 1
        for i in range(start, len(text)):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                return text[start:i].strip()
    for pattern in FALLBACKS:
        matches = pattern.findall(text)
        if matches:
            answer = matches[-1].strip().rstrip(".").strip()
            return answer.strip("$").strip() or None
    text = text.strip()
    bare = text and not starts and "\n" not in text and len(text) <= MAX_BARE_ANSWER
    return text.strip("$").strip() if bare else None


def _as_latex(answer: str) -> str:
    # Math-verify finds LaTeX inside math delimiters; answers already carrying `$` are unwrapped first.
    return f"${answer.strip().strip('$')}$"


@lru_cache(maxsize=65536)
def _parse_gold(gold: str, timeout_s: int) -> list:
    # RL scores many rollouts against one gold answer, so its parse is cached.
    return parse(_as_latex(gold), EXTRACTION, parsing_timeout=timeout_s, raise_on_error=True)


def math_reward(completion: str, gold: str, timeout_s: float = 5.0) -> RewardResult:
    """Score 1.0 if the reply's final answer equals `gold` mathematically, else 0.0; never raises.

    reason: "correct", "mismatch", "no_answer" (nothing extracted), "unparsable" (extracted but not
    math), "bad_gold" (the gold answer itself does not parse), "timeout" or "error: ...".
    Safe to call from any thread (off the main thread it runs in a MathRewardPool process).
    """
    if threading.current_thread() is not threading.main_thread():
        return shared_pool().submit(completion, gold, timeout_s).result()
    return _score(completion, gold, timeout_s)


def _score(completion: str, gold: str, timeout_s: float) -> RewardResult:
    answer = extract_answer(completion)
    if answer is None:
        return RewardResult(0.0, "no_answer", None)
    seconds = max(1, math.ceil(timeout_s))  # math-verify's alarm takes whole seconds
    try:
        gold_parsed = _parse_gold(gold, seconds)
        if not gold_parsed:
            return RewardResult(0.0, "bad_gold", answer)
        predicted = parse(_as_latex(answer), EXTRACTION, parsing_timeout=seconds, raise_on_error=True)
        if not predicted:
            return RewardResult(0.0, "unparsable", answer)
        correct = verify(gold_parsed, predicted, timeout_seconds=seconds, raise_on_error=True)
    except TimeoutError:
        return RewardResult(0.0, "timeout", answer)
    except Exception as e:  # noqa: BLE001 - sympy raises anything; a reward must not
        log.warning("math-verify failed on %r vs %r: %s", answer[:200], gold[:200], e)
        return RewardResult(0.0, f"error: {type(e).__name__}", answer)
    return RewardResult(1.0, "correct", answer) if correct else RewardResult(0.0, "mismatch", answer)


def _worker(conn) -> None:
    while True:
        try:
            completion, gold, timeout_s = conn.recv()
        except EOFError:
            return
        conn.send(_score(completion, gold, timeout_s))


class MathRewardPool:
    """Math rewards computed in worker processes, for callers that run many in parallel (RL, eval).

    `submit(completion, gold)` returns a Future[RewardResult]. A worker that hangs past its time limit
    (plus a grace period) or dies is killed and replaced, and that one call scores 0 with reason
    "timeout" or "error: worker crashed": the caller never sees an exception.
    """

    GRACE_S = 2.0

    def __init__(self, workers: int | None = None, timeout_s: float = 5.0):
        self.timeout_s = timeout_s
        # spawn, not fork: the parent may hold threads (torch, HTTP clients) that a fork would corrupt.
        self._ctx = multiprocessing.get_context("spawn")
        self._idle: queue.Queue = queue.Queue()
        n = workers or multiprocessing.cpu_count()
        for _ in range(n):
            self._idle.put(self._start_worker())
        self._executor = ThreadPoolExecutor(max_workers=n, thread_name_prefix="math-reward")

    def _start_worker(self):
        parent_end, child_end = self._ctx.Pipe()
        process = self._ctx.Process(target=_worker, args=(child_end,), daemon=True)
        process.start()
        child_end.close()
        return process, parent_end

    def submit(self, completion: str, gold: str, timeout_s: float | None = None) -> "Future[RewardResult]":
        return self._executor.submit(self._run, completion, gold, timeout_s or self.timeout_s)

    def map(self, pairs: list[tuple[str, str]]) -> list[RewardResult]:
        return [f.result() for f in [self.submit(c, g) for c, g in pairs]]

    def _run(self, completion: str, gold: str, timeout_s: float) -> RewardResult:
        process, conn = self._idle.get()
        try:
            conn.send((completion, gold, timeout_s))
            # Up to three math-verify calls, each with its own limit, then the grace period.
            if conn.poll(3 * math.ceil(timeout_s) + self.GRACE_S):
                result = conn.recv()
                self._idle.put((process, conn))
                return result
            log.warning("math reward worker hung past its limit; replacing it")
            reason = "timeout"
        except (EOFError, OSError) as e:
            log.warning("math reward worker crashed (%s); replacing it", e)
            reason = "error: worker crashed"
        process.kill()
        process.join()
        conn.close()
        self._idle.put(self._start_worker())
        return RewardResult(0.0, reason, extract_answer(completion))

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        while not self._idle.empty():
            process, conn = self._idle.get()
            conn.close()
            process.kill()
            process.join()

    def __enter__(self) -> "MathRewardPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_shared: MathRewardPool | None = None
_shared_lock = threading.Lock()


def shared_pool() -> MathRewardPool:
    """The process-wide pool `math_reward` uses off the main thread, started on first use."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = MathRewardPool()
        return _shared


# ---- audit: does the verifier accept the gold answers of a dataset? --------------------------------------

SURFACE_FORMS = {
    "plain": "{}",
    "boxed": "\\boxed{{{}}}",
    "prose": "Putting the steps together, the final answer is $\\boxed{{{}}}$. I am confident in this.",
    "answer_is": "After checking the arithmetic twice, the answer is {}.",
}


def perturb(gold: str) -> str:
    """A wrong answer close to `gold`: an integer plus one, anything else with "+1" appended."""
    return str(int(gold) + 1) if re.fullmatch(r"-?\d+", gold.strip()) else f"{gold}+1"


@dataclass
class MathAudit:
    """Audit of a dataset's gold answers: self-verification rate per surface form, the rate at which a
    perturbed answer is (wrongly) accepted, the gold parse-failure rate, and every failing item."""

    n: int
    self_verified: dict[str, float]
    perturbed_accepted: float
    gold_parse_failures: float
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # (item id, check, reason)


def audit_math(items: list[tuple[str, str]], timeout_s: float = 5.0) -> MathAudit:
    """Check each (id, gold) of a dataset: gold vs itself in every SURFACE_FORMS form, perturbed gold."""
    verified = {form: 0 for form in SURFACE_FORMS}
    perturbed_ok = parse_failures = 0
    failures = []
    for item_id, gold in items:
        for form, template in SURFACE_FORMS.items():
            result = math_reward(template.format(gold), gold, timeout_s)
            verified[form] += result.score == 1.0
            if result.score != 1.0:
                failures.append((item_id, form, result.reason))
            parse_failures += result.reason == "bad_gold" and form == "plain"
        wrong = math_reward(f"\\boxed{{{perturb(gold)}}}", gold, timeout_s)
        perturbed_ok += wrong.score == 1.0
        if wrong.score == 1.0:
            failures.append((item_id, "perturbed", f"accepted {perturb(gold)!r}"))
    n = max(1, len(items))
    return MathAudit(n=len(items), self_verified={f: v / n for f, v in verified.items()},
                     perturbed_accepted=perturbed_ok / n, gold_parse_failures=parse_failures / n, failures=failures)
