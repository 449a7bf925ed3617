"""Rollout collection with dynamic sampling: the Seamless Rollout Engine and the naive baseline.

Both return `batch_groups` informative groups (G responses to one prompt whose rewards differ) from the
continuous-batching engine, scored by verifiable rewards.

**Naive dynamic sampling** (the baseline MiMo measured against): draw a batch of prompts, generate every
response (a barrier: the batch waits for its longest response), then score everything (a second
barrier: the generator sits idle), drop uninformative groups, and repeat until enough are left;
surplus groups are thrown away.

**Seamless** (mimo-spec.md section 4.5), on one engine:
- *continuous rollout*: no barrier between generation and reward. A finished response is sent to the
  reward workers at once and the engine keeps decoding the others. New prompts are started only while
  the groups in flight are predicted to fall short of the batch, the prediction using the running share
  of informative groups;
- *asynchronous reward*: rewards run in a worker pool (math in verifier processes, code in the sandbox)
  while the engine generates;
- *early termination with FIFO selection*: the batch is the first `batch_groups` informative groups in
  the order they were started, and collection stops once those are complete and every group started
  before the last of them has finished. Taking the earliest-started groups, not the earliest-finished,
  keeps the batch from favouring short responses; the groups still running are aborted.

What is trained on does not depend on timing: groups are seeded by (step seed, start index), the batch
is a prefix of the start order, and the problem sampler's easy-pool updates are applied for that prefix
only, in order, after collection (the draws of aborted or surplus groups are rewound). Together with
saved RNG and sampler state this makes an RL run resume exactly.

Time is split into generation (the engine stepping), reward (waiting on rewards while the engine has
nothing to run) and the idle share of the latter, so the two modes can be compared side by side.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any
from typing import Callable

from mimo.engine import Engine, SamplingParams
from mimo.rewards.result import RewardResult
from mimo.rl.grpo import is_informative
from mimo.rl.problems import ProblemSampler, RLProblem

log = logging.getLogger(__name__)

RewardFn = Callable[[RLProblem, str, str], RewardResult]  # (problem, completion text, finish reason)


@dataclass
class Response:
    token_ids: list[int]
    logprobs: list[float]  # under the sampling distribution the engine used
    finish_reason: str
    text: str = ""
    reward: float | None = None
    reason: str = ""


@dataclass
class Group:
    index: int  # start order, for FIFO selection
    problem: RLProblem
    prompt_ids: list[int]
    responses: list[Response | None]  # filled as they finish
    sampler_state: dict[str, Any] | None = None  # the problem sampler just before this group's draw

    @property
    def complete(self) -> bool:
        return all(r is not None and r.reward is not None for r in self.responses)

    @property
    def rewards(self) -> list[float]:
        return [r.reward for r in self.responses]

    @property
    def pass_rate(self) -> float:
        return sum(r >= 1.0 for r in self.rewards) / len(self.responses)


@dataclass
class RolloutStats:
    wall_s: float = 0.0
    generation_s: float = 0.0  # engine stepping
    reward_wait_s: float = 0.0  # waiting on rewards with nothing to generate (the generator idles)
    groups_started: int = 0
    groups_dropped: int = 0  # complete but uninformative (dynamic sampling)
    groups_aborted: int = 0  # still running at early termination
    samples_generated: int = 0  # responses finished (aborted ones not counted)
    samples_used: int = 0
    tokens_generated: int = 0

    @property
    def idle_share(self) -> float:
        return self.reward_wait_s / self.wall_s if self.wall_s else 0.0

    @property
    def wasted_share(self) -> float:
        """Generated responses that do not reach the trainer (dropped, surplus or aborted work)."""
        return 1 - self.samples_used / self.samples_generated if self.samples_generated else 0.0


class RewardWorkers:
    """Reward calls in a thread pool; a reward that raises or overruns its deadline scores 0 with the
    reason logged, never stopping the rollout."""

    def __init__(self, reward_fn: RewardFn, workers: int = 4, deadline_s: float = 60.0):
        self.reward_fn, self.deadline_s = reward_fn, deadline_s
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="reward")

    def submit(self, problem: RLProblem, response: Response) -> Future:
        return self.pool.submit(self._safe, problem, response.text, response.finish_reason)

    def _safe(self, problem: RLProblem, text: str, finish_reason: str) -> RewardResult:
        try:
            return self.reward_fn(problem, text, finish_reason)
        except Exception as e:  # noqa: BLE001 - any reward failure is a zero, not a crashed run
            log.warning("reward for %s failed: %r; scoring 0", problem.id, e)
            return RewardResult(0.0, f"reward_error: {type(e).__name__}: {e}"[:200])

    def result(self, future: Future, started: float) -> RewardResult:
        remaining = self.deadline_s - (time.monotonic() - started)
        try:
            return future.result(timeout=max(remaining, 0.0))
        except TimeoutError:
            log.warning("a reward exceeded its %.0fs deadline; scoring 0", self.deadline_s)
            return RewardResult(0.0, "reward_timeout")

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


class RolloutCollector:
    def __init__(self, engine: Engine, sampler: ProblemSampler, rewards: RewardWorkers,
                 encode_prompt: Callable[[RLProblem], list[int]], decode: Callable[[list[int]], str],
                 params: SamplingParams, group_size: int, max_groups_factor: int = 16):
        if group_size < 2:
            raise ValueError("GRPO needs at least 2 responses per prompt (group_size >= 2)")
        self.engine, self.sampler, self.rewards = engine, sampler, rewards
        self.encode_prompt, self.decode = encode_prompt, decode
        self.params, self.G = params, group_size
        self.max_groups_factor = max_groups_factor  # give up after batch_groups x this many groups        # Running count of informative vs complete groups, carried across steps: the admission forecast.
        self.informative_seen, self.complete_seen = 1.0, 2.0  # a weak prior of 50%

    # ---- shared pieces ----------------------------------------------------------------------

    def _start(self, groups: list[Group], stats: RolloutStats, seed: int, batch_groups: int) -> Group:
        if len(groups) >= batch_groups * self.max_groups_factor:
            raise RuntimeError(
                f"dynamic sampling found too few informative groups: {len(groups)} prompts started for a batch of "
                f"{batch_groups}. The policy solves all or none of these problems; choose problems nearer its level.")
        state = self.sampler.state_dict()
        problem = self.sampler.draw()
        prompt = self.encode_prompt(problem)
        group = Group(len(groups), problem, prompt, [None] * self.G, sampler_state=state)
        # A per-group seed makes each group's responses independent of what else is in the batch.
        params = dataclasses.replace(self.params, n=self.G, seed=seed * 1_000_003 + group.index * self.G)
        self.engine.add_request(prompt, params, request_id=f"g{group.index}")
        groups.append(group)
        stats.groups_started += 1
        return group

    def _collect_finished(self, outputs, groups: list[Group], stats: RolloutStats) -> list[tuple[Group, int]]:
        """Turn newly finished engine samples into Responses; returns (group, sample index) pairs."""
        done = []
        for out in outputs:
            group = groups[int(out.request_id[1:])]
            for j, sample in enumerate(out.samples):
                if sample.finish_reason in ("stop", "length") and group.responses[j] is None:
                    ids = [t for t in sample.token_ids if t not in self.engine.eos_token_ids]
                    group.responses[j] = Response(list(sample.token_ids), list(sample.logprobs),
                                                  sample.finish_reason, self.decode(ids))
                    stats.samples_generated += 1
                    stats.tokens_generated += len(sample.token_ids)
                    done.append((group, j))
        return done

    def _finish_group(self, group: Group, stats: RolloutStats) -> None:
        informative = is_informative(group.rewards)
        self.complete_seen += 1
        self.informative_seen += informative
        if not informative:
            stats.groups_dropped += 1

    def _settle(self, groups: list[Group], selected: list[Group]) -> None:
        """Rewind the sampler past unselected later draws, then record the FIFO prefix's pass rates."""
        last = selected[-1].index
        if last + 1 < len(groups):
            self.sampler.load_state_dict(groups[last + 1].sampler_state)
        for group in groups[: last + 1]:
            self.sampler.update(group.problem.id, group.pass_rate)

    def collect(self, batch_groups: int, seed: int, mode: str = "seamless") -> tuple[list[Group], RolloutStats]:
        """`batch_groups` informative groups, in start order; mode "seamless" or "naive"."""
        if mode not in ("seamless", "naive"):
            raise ValueError(f"unknown rollout mode {mode!r}: use seamless or naive")
        collect = self._collect_seamless if mode == "seamless" else self._collect_naive
        groups, selected, stats = collect(batch_groups, seed)
        self._settle(groups, selected)
        stats.samples_used = batch_groups * self.G
        return selected, stats

    # ---- seamless ---------------------------------------------------------------------------

    def _collect_seamless(self, batch_groups: int, seed: int):
        stats, groups = RolloutStats(), []
        futures: dict[Future, tuple[Group, int, float]] = {}
        start = time.monotonic()
        capacity = max(1, self.engine.max_batch_size // self.G) * 2  # a queue of one batch beyond the slots
        while True:
            valid = [g for g in groups if g.complete and is_informative(g.rewards)]
            selected = valid[:batch_groups]
            if len(selected) == batch_groups and all(g.complete for g in groups[: selected[-1].index]):
                break  # FIFO early termination

            # Continuous rollout: start groups while the forecast falls short of the batch.
            rate = self.informative_seen / self.complete_seen
            in_flight = sum(not g.complete for g in groups)
            shortfall = batch_groups - len(valid)
            while in_flight < capacity and in_flight * rate < shortfall:
                self._start(groups, stats, seed, batch_groups)
                in_flight += 1

            if self.engine.has_unfinished():
                t = time.monotonic()
                outputs = self.engine.step()
                stats.generation_s += time.monotonic() - t
                for group, j in self._collect_finished(outputs, groups, stats):
                    futures[self.rewards.submit(group.problem, group.responses[j])] = (group, j, time.monotonic())
            else:  # nothing to generate: wait for the next reward
                t = time.monotonic()
                wait(futures, timeout=0.05, return_when=FIRST_COMPLETED)
                stats.reward_wait_s += time.monotonic() - t
            self._drain(futures, stats, block=False)

        for group in groups[selected[-1].index + 1:]:
            if not group.complete:
                self.engine.abort(f"g{group.index}")
                stats.groups_aborted += 1
        for future in futures:
            future.cancel()
        stats.wall_s = time.monotonic() - start
        return groups, selected, stats

    def _drain(self, futures: dict, stats: RolloutStats, block: bool) -> None:
        """Attach finished rewards (all of them if `block`); a reward past its deadline scores 0."""
        now = time.monotonic()
        for future, (group, j, started) in list(futures.items()):
            if not (block or future.done() or now - started > self.rewards.deadline_s):
                continue
            del futures[future]
            result = self.rewards.result(future, started)
            response = group.responses[j]
            response.reward, response.reason = result.score, result.reason
            if group.complete:
                self._finish_group(group, stats)

    # ---- naive ------------------------------------------------------------------------------

    def _collect_naive(self, batch_groups: int, seed: int):
        stats, groups, valid = RolloutStats(), [], []
        start = time.monotonic()
        while len(valid) < batch_groups:
            round_groups = [self._start(groups, stats, seed, batch_groups) for _ in range(batch_groups)]
            t = time.monotonic()
            pending = {f"g{g.index}" for g in round_groups}
            while pending:  # barrier 1: the whole round generates
                outputs = self.engine.step()
                self._collect_finished(outputs, groups, stats)
                pending -= {o.request_id for o in outputs if o.finished}
            stats.generation_s += time.monotonic() - t
            t = time.monotonic()  # barrier 2: score everything while the generator idles
            futures = {self.rewards.submit(g.problem, r): (g, j, t)
                       for g in round_groups for j, r in enumerate(g.responses)}
            self._drain(futures, stats, block=True)
            stats.reward_wait_s += time.monotonic() - t
            valid += [g for g in round_groups if is_informative(g.rewards)]
        stats.wall_s = time.monotonic() - start
        return groups, valid[:batch_groups], stats
