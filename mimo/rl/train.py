"""`mimo rl`: RL with verifiable rewards, MiMo's recipe, as one plain loop.

    recipe -> policy from a checkpoint (MTP layers frozen, as MiMo does) -> problems -> engine + reward
    workers -> resume if the run folder has a checkpoint -> for each step:
        collect `batch_groups` informative groups of G responses (seamless or naive rollout)
        advantages per group; `updates_per_step` mini-batch updates of the clipped token-level loss
        metrics (reward, pass rate, length, entropy, clip fraction, dropped share, easy pool, time split)
        checkpoint every N steps (weights, optimizer, problem sampler, RNG: resumes exactly)

The engine generates with the very parameters the trainer updates (one process, no copy), so the rollout
policy is always the latest one. Under torchrun every rank collects its own share of the batch and DDP
averages gradients; for GPU-scale generation see docs/rl.md (external vLLM/OpenAI-compatible server).
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import contextlib

import torch
import torch.distributed as dist
import typer
import yaml
from rich.console import Console
from rich.table import Table

from mimo.data.corpus import DataError
from mimo.data.reasoning import DIFFICULTIES, FAMILIES, heldout_set, make_problem
from mimo.engine import Engine, SamplingParams
from mimo.eval.benchmarks import read_jsonl
from mimo.eval.metrics import summarize
from mimo.checkpoint import save_model
from mimo.model import MiMoForCausalLM
from mimo.recipe import RecipeError, load_recipe
from mimo.rewards.code_reward import CodeTests, code_reward, extract_code
from mimo.rewards.math_reward import math_reward
from mimo.rewards.result import RewardResult
from mimo.rl.grpo import group_advantages, overlong_reward, policy_loss, token_logprobs_and_entropy
from mimo.rl.problems import ProblemSampler, RLProblem
from mimo.rl.remote import RemoteEngine
from mimo.rl.rollout import Group, RewardWorkers, RolloutCollector
from mimo.tokenizer import Tokenizer
from mimo.train.evaluate import evaluate
from mimo.train.checkpointing import (checkpoint_dir, latest_checkpoint, load_training_state, prune_checkpoints,
                                      rng_state, save_checkpoint, save_final_model, set_rng_state)
from mimo.train.loop import OptimArgs, Runtime, TrainArgs, all_mean, init_runtime, lr_at, make_optimizer, wrap_model
from mimo.train.metrics import MetricsLogger, progress_bar

RL_FIELDS = ("reward {task.fields[reward]:.3f}  pass {task.fields[pass_rate]:.2f}  len {task.fields[response_length]:.0f}  "
             "entropy {task.fields[entropy]:.3f}  clip {task.fields[clip_fraction]:.3f}  "
             "dropped {task.fields[dropped_group_share]:.2f}  easy {task.fields[easy_pool]:.0f}  "
             "gen {task.fields[generation_s]:.1f}s reward-wait {task.fields[reward_wait_s]:.1f}s "
             "train {task.fields[train_s]:.1f}s")


# ---- recipe ------------------------------------------------------------------------------------------


@dataclass
class ProblemArgs:
    source: str = "reasoning"  # reasoning (built-in generator) | jsonl (the user's file, see docs/rl.md)
    path: str | None = None
    families: list[str] = field(default_factory=lambda: ["arithmetic", "linear", "word"])
    difficulties: list[int] = field(default_factory=lambda: list(DIFFICULTIES))
    count: int = 4000  # built-in problems drawn from the train split
    seed: int = 0


@dataclass
class RolloutArgs:
    mode: str = "seamless"  # seamless | naive
    backend: str = "local"  # local (mimo's engine in this process) | remote (an OpenAI-compatible server)
    base_url: str | None = None  # remote: e.g. http://127.0.0.1:8000/v1
    served_model_name: str | None = None  # remote: the model name the server expects (default: its first)
    group_size: int = 8  # G responses per prompt
    batch_groups: int = 8  # informative groups per step (MiMo: 512 prompts' worth at 7B scale)
    max_tokens: int = 256
    temperature: float = 1.0  # MiMo's rollout settings: temperature 1.0, top-p 1.0
    top_p: float = 1.0
    max_batch_size: int = 64  # engine slots
    num_speculative_tokens: int = 0  # MTP drafting during rollout (frozen MTP layers)
    reward_workers: int = 2
    reward_deadline_s: float = 60.0  # a reward still unfinished after this scores 0
    code_reward: str = "pass_all"  # pass_all | strict | soft (strict/soft need per-test levels)


@dataclass
class GRPOArgs:
    eps_low: float = 0.2  # clip-higher: ratio clipped to [1 - eps_low, 1 + eps_high]
    eps_high: float = 0.28
    updates_per_step: int = 2  # mini-batches per rollout batch (MiMo: 512 / 32 = 16)
    micro_batch: int = 16  # responses per forward pass
    overlong: str = "mask"  # mask (truncated responses leave the loss) | soft (DAPO penalty) | none
    overlong_cache_tokens: int = 32  # soft: the penalty ramps over the last this many tokens
    easy_alpha: float = 0.1  # easy-pool draw probability
    freeze_mtp: bool = True
    old_logprobs: str = "engine"  # engine (the sampler's own) | recompute (a trainer forward before updating)


@dataclass
class EvalArgs:
    per_tier: int = 100  # held-out problems per (family, difficulty), greedy, before and after RL; 0 = none
    max_tokens: int = 256


@dataclass
class RLRecipe:
    model: str = "runs/quickstart/sft/model"  # the SFT (or base) checkpoint to start from
    run_dir: str = "runs/rl"
    steps: int = 50
    problems: ProblemArgs = field(default_factory=ProblemArgs)
    rollout: RolloutArgs = field(default_factory=RolloutArgs)
    grpo: GRPOArgs = field(default_factory=GRPOArgs)
    optim: OptimArgs = field(default_factory=lambda: OptimArgs(lr=1e-6, min_lr=1e-6, warmup_steps=0,
                                                                decay_fraction=0.0, weight_decay=0.01))
    train: TrainArgs = field(default_factory=lambda: TrainArgs(checkpoint_every=10))
    eval: EvalArgs = field(default_factory=EvalArgs)  # built-in problems only
    log_samples_every: int = 10  # write a few completions to samples.jsonl every N steps (0 = never)


def validate(recipe: RLRecipe) -> None:
    checks = [
        (recipe.rollout.mode in ("seamless", "naive"), f"rollout.mode {recipe.rollout.mode!r}: use seamless or naive"),
        (recipe.rollout.group_size >= 2, "rollout.group_size must be >= 2 (GRPO compares responses)"),
        (recipe.rollout.batch_groups >= 1 and recipe.steps >= 1, "rollout.batch_groups and steps must be >= 1"),
        (recipe.grpo.overlong in ("mask", "soft", "none"), f"grpo.overlong {recipe.grpo.overlong!r}: mask|soft|none"),
        (recipe.grpo.old_logprobs in ("engine", "recompute"), "grpo.old_logprobs: engine | recompute"),
        (recipe.grpo.old_logprobs == "recompute" or recipe.rollout.top_p == 1.0,
         "grpo.old_logprobs=engine needs rollout.top_p=1 (a truncated sampling distribution is not the policy's)"),
        (recipe.rollout.batch_groups * recipe.rollout.group_size >= recipe.grpo.updates_per_step,
         "grpo.updates_per_step exceeds the responses per step"),
        (recipe.rollout.code_reward == "pass_all", "rollout.code_reward strict/soft need per-test difficulty levels; "
                                                   "give them in the problem file (docs/rl.md)"),
        (recipe.rollout.backend in ("local", "remote"), "rollout.backend: local | remote"),
        (recipe.rollout.backend == "local" or recipe.rollout.base_url, "rollout.backend=remote needs rollout.base_url"),
        (recipe.rollout.backend == "local" or recipe.grpo.old_logprobs == "recompute",
         "rollout.backend=remote needs grpo.old_logprobs=recompute (another engine's log-probs are not the trainer's)"),
        (recipe.problems.source in ("reasoning", "jsonl"), "problems.source: reasoning | jsonl"),
        (recipe.problems.source != "jsonl" or recipe.problems.path, "problems.source=jsonl needs problems.path"),
        (not set(recipe.problems.families) - set(FAMILIES), f"problems.families must be among {FAMILIES}"),
        (Path(recipe.model).is_dir(), f"model {recipe.model!r} is not a checkpoint folder"),
    ]
    for ok, message in checks:
        if not ok:
            raise RecipeError(message)


# ---- problems and rewards ----------------------------------------------------------------------------

def load_problems(args: ProblemArgs) -> list[RLProblem]:
    """The built-in generator's train split, or the user's JSONL in `mimo eval`'s own-set format:
    {"id", "problem", "answer"} for math, {"id", "problem", "tests": [asserts]} for code."""
    if args.source == "jsonl":
        rows = read_jsonl(args.path, required=("id", "problem"))
        problems = []
        for line, row in rows:
            if ("answer" in row) == ("tests" in row):
                raise RecipeError(f"{args.path}:{line}: give exactly one of 'answer' (math) or 'tests' (code)")
            problems.append(RLProblem(id=str(row["id"]), prompt=row["problem"],
                                      kind="math" if "answer" in row else "code", answer=row.get("answer"),
                                      tests=list(row.get("tests", [])), family=row.get("family", ""),
                                      difficulty=int(row.get("difficulty", 0))))
        return problems
    seen: dict[str, RLProblem] = {}
    rng = random.Random(args.seed)
    for index in range(args.count * 20):
        if len(seen) == args.count:
            break
        family, difficulty = rng.choice(args.families), rng.choice(args.difficulties)
        p = make_problem(family, difficulty, "train", args.seed, index)
        seen.setdefault(p.key, RLProblem(id=p.key, prompt=p.prompt, kind="code" if p.tests else "math",
                                         answer=p.answer, tests=list(p.tests), entry_point=p.entry_point,
                                         family=p.family, difficulty=p.difficulty))
    return list(seen.values())


def verifiable_reward(problem: RLProblem, text: str, finish_reason: str) -> RewardResult:
    """Rule-based rewards only, as MiMo: Math-Verify on the final \\boxed{} answer, or the unit tests
    run in the sandbox on the reply's code block."""
    if problem.kind == "math":
        return math_reward(text, problem.answer)
    return code_reward(extract_code(text) or "", CodeTests(asserts=tuple(problem.tests)))


def heldout_accuracy(model: MiMoForCausalLM, tokenizer: Tokenizer, recipe: RLRecipe) -> dict[str, dict]:
    """Greedy exact-match accuracy on the built-in held-out split, per family and difficulty, with the
    95% interval of `mimo.eval.metrics.summarize`."""
    args = recipe.problems
    problems = heldout_set(args.families, args.difficulties, recipe.eval.per_tier, seed=args.seed)
    graded = evaluate(model, tokenizer, problems, max_new_tokens=recipe.eval.max_tokens)
    tiers: dict[str, dict[str, list[bool]]] = {}
    for i, g in enumerate(graded):
        tiers.setdefault(f"{g.problem.family}-{g.problem.difficulty}", {})[str(i)] = [g.correct]
    out = {}
    for tier, correct in sorted(tiers.items()):
        summary = summarize(correct)
        out[tier] = {"accuracy": summary.pass1, "ci95": list(summary.ci95), "n": summary.problems}
    return out


def accuracy_table(before: dict[str, dict], after: dict[str, dict]) -> Table:
    table = Table(title="held-out accuracy (greedy), before and after RL, with 95% intervals")
    for column in ("tier", "before", "after", "change"):
        table.add_column(column, justify="left" if column == "tier" else "right")
    for tier in before:
        b, a = before[tier], after[tier]
        table.add_row(tier, f"{b['accuracy']:.1%} [{b['ci95'][0]:.0%}, {b['ci95'][1]:.0%}]",
                      f"{a['accuracy']:.1%} [{a['ci95'][0]:.0%}, {a['ci95'][1]:.0%}]",
                      f"{(a['accuracy'] - b['accuracy']) * 100:+.1f} pts")
    return table


def log_accuracy(metrics: MetricsLogger, step: int, accuracy: dict[str, dict]) -> None:
    metrics.log(step, kind="eval", **{f"accuracy/{tier}": v["accuracy"] for tier, v in accuracy.items()})


# ---- the update --------------------------------------------------------------------------------------

@dataclass
class TrainBatch:
    prompts: list[list[int]]
    responses: list[list[int]]
    old_logprobs: list[list[float]]
    advantages: torch.Tensor  # [N]
    loss_mask: list[float]  # 0 drops a whole response from the loss (overlong masking)


def build_batch(groups: list[Group], args: GRPOArgs, max_tokens: int) -> TrainBatch:
    prompts, responses, old, masks, rewards = [], [], [], [], []
    for group in groups:
        group_rewards = []
        for r in group.responses:
            reward = r.reward
            if args.overlong == "soft":
                reward = overlong_reward(reward, len(r.token_ids), max_tokens, args.overlong_cache_tokens)
            group_rewards.append(reward)
            prompts.append(group.prompt_ids)
            responses.append(r.token_ids)
            old.append(r.logprobs)
            masks.append(0.0 if args.overlong == "mask" and r.finish_reason == "length" else 1.0)
        rewards.append(group_rewards)
    advantages = group_advantages(torch.tensor(rewards, dtype=torch.float32)).flatten()
    return TrainBatch(prompts, responses, old, advantages, masks)


def response_logprobs(model: MiMoForCausalLM, prompts: list[list[int]], responses: list[list[int]],
                      temperature: float, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Log-probs and entropies of each response token under the policy, right-padded to [B, T_resp],
    with the mask of real response tokens. The trainer's side of the log-prob consistency check."""
    rows = [p + r for p, r in zip(prompts, responses)]
    width = max(map(len, rows))
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    attention = torch.zeros(len(rows), width, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        attention[i, : len(row)] = 1
    ids, attention = ids.to(device), attention.to(device)
    logits = model(ids, attention_mask=attention, with_mtp=False).logits
    t_resp = max(map(len, responses))
    # Response token j of row i sits at position len(prompt)+j and is predicted by the position before it.
    index = torch.zeros(len(rows), t_resp, dtype=torch.long, device=device)
    mask = torch.zeros(len(rows), t_resp, device=device)
    targets = torch.zeros(len(rows), t_resp, dtype=torch.long, device=device)
    for i, (p, r) in enumerate(zip(prompts, responses)):
        index[i, : len(r)] = torch.arange(len(p) - 1, len(p) + len(r) - 1, device=device)
        targets[i, : len(r)] = torch.tensor(r, device=device)
        mask[i, : len(r)] = 1
    picked = logits.gather(1, index[..., None].expand(-1, -1, logits.shape[-1]))
    logprobs, entropy = token_logprobs_and_entropy(picked, targets, temperature)
    return logprobs, entropy, mask


def pad_float(rows: list[list[float]], width: int, device: torch.device) -> torch.Tensor:
    out = torch.zeros(len(rows), width, device=device)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row, device=device)
    return out


def global_sum(value: float, rt: Runtime) -> float:
    if not rt.distributed:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=rt.device)
    dist.all_reduce(t)
    return t.item()


def update_policy(model, trained, optimizer, batch: TrainBatch, recipe: RLRecipe, rt: Runtime,
                  generator: torch.Generator) -> dict[str, float]:
    """`updates_per_step` optimizer steps over shuffled mini-batches; token-level loss per mini-batch.

    `trained` is the module to run forward (DDP-wrapped under torchrun). Each rank holds an equal share of
    the batch; the token count of a mini-batch is summed over ranks and the loss scaled by the world size,
    so DDP's gradient average equals the gradient of the global token mean."""
    args, temperature, device = recipe.grpo, recipe.rollout.temperature, rt.device
    n = len(batch.responses)
    if args.old_logprobs == "recompute":
        with torch.no_grad():
            for start in range(0, n, args.micro_batch):
                part = slice(start, start + args.micro_batch)
                lp, _, m = response_logprobs(model, batch.prompts[part], batch.responses[part], temperature, device)
                for i, row in enumerate(range(*part.indices(n))):
                    batch.old_logprobs[row] = lp[i, : int(m[i].sum())].tolist()
    order = torch.randperm(n, generator=generator).tolist()
    size = -(-n // args.updates_per_step)
    totals = dict.fromkeys(("loss", "clip_fraction", "clip_low", "clip_high", "approx_kl", "entropy", "grad_norm"), 0.0)
    for update in range(args.updates_per_step):
        mini = order[update * size: (update + 1) * size]
        local_tokens = sum(len(batch.responses[i]) * batch.loss_mask[i] for i in mini)
        tokens = global_sum(local_tokens, rt)
        if tokens == 0:  # every rank sees the same global count, so all skip together
            continue
        starts = list(range(0, len(mini), args.micro_batch))
        for start in starts:
            rows = mini[start: start + args.micro_batch]
            sync = start == starts[-1] or not hasattr(trained, "no_sync")  # all-reduce once per update
            with contextlib.nullcontext() if sync else trained.no_sync():
                lp, entropy, mask = response_logprobs(trained, [batch.prompts[i] for i in rows],
                                                      [batch.responses[i] for i in rows], temperature, device)
                old = pad_float([batch.old_logprobs[i] for i in rows], lp.shape[1], device)
                mask = mask * torch.tensor([batch.loss_mask[i] for i in rows], device=device)[:, None]
                loss, stats = policy_loss(lp, old, batch.advantages[rows].to(device), mask,
                                          args.eps_low, args.eps_high, num_tokens=tokens)
                (loss * rt.world_size).backward()  # DDP averages over ranks; undo that to sum them
            # Statistics of this rank, weighted by the micro-batch's share of this rank's tokens.
            share = float(mask.sum()) / max(local_tokens, 1) / args.updates_per_step
            totals["loss"] += stats.loss * tokens / max(local_tokens, 1) / args.updates_per_step
            totals["clip_fraction"] += stats.clip_fraction * share
            totals["clip_low"] += stats.clip_low_fraction * share
            totals["clip_high"] += stats.clip_high_fraction * share
            totals["approx_kl"] += stats.approx_kl * share
            totals["entropy"] += float((entropy.detach() * mask).sum()) / max(local_tokens, 1) / args.updates_per_step
        grad_norm = torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad],
                                                   recipe.optim.grad_clip)
        totals["grad_norm"] += float(grad_norm) / args.updates_per_step
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return {key: all_mean(value, rt) for key, value in totals.items()}


def served_model(base_url: str) -> str:
    from openai import OpenAI
    return OpenAI(base_url=base_url, api_key="EMPTY").models.list().data[0].id


def sync_remote(engine: RemoteEngine, model: MiMoForCausalLM, run_dir: Path, rt: Runtime) -> None:
    """Write the updated policy (atomically) and have the generation server load it; rank 0 writes."""
    if rt.is_main:
        folder = run_dir / "policy"
        save_model(model, folder)
        engine.sync_weights(folder.resolve())
    if rt.distributed:
        dist.barrier()


# ---- the loop ----------------------------------------------------------------------------------------

def train_rl(recipe: RLRecipe, console: Console | None = None, reward_fn=verifiable_reward) -> Path:
    """Run (or resume) an RL recipe; returns the folder of the final model. `reward_fn(problem, text,
    finish_reason) -> RewardResult` defaults to the verifiable math/code rewards.

    Under torchrun each rank runs its own engine on its replica of the policy, collects
    batch_groups / world_size groups from its own problem stream, and DDP averages the gradients."""
    console = console or Console()
    validate(recipe)
    rt = init_runtime(recipe.train)
    if recipe.rollout.batch_groups % rt.world_size:
        raise RecipeError(f"rollout.batch_groups ({recipe.rollout.batch_groups}) must divide by the number of "
                          f"processes ({rt.world_size})")
    run_dir = Path(recipe.run_dir)
    problems = load_problems(recipe.problems)
    sampler = ProblemSampler(problems, alpha=recipe.grpo.easy_alpha, seed=recipe.problems.seed + 7919 * rt.rank)

    step, start_from, state = 0, Path(recipe.model), None
    resume_from = latest_checkpoint(run_dir)
    if resume_from is not None:
        state = load_training_state(resume_from)
        step, start_from = state["step"], resume_from
        if step >= recipe.steps:
            raise RecipeError(f"{run_dir} already finished {step} RL steps and the recipe asks for {recipe.steps}: "
                              "resuming would train zero steps. Raise `steps` or use a new run_dir.")
    model = MiMoForCausalLM.from_pretrained(start_from, dtype=torch.float32, device=rt.device)
    tokenizer = Tokenizer.from_pretrained(start_from)
    for p in model.model.mtp_layers.parameters():
        p.requires_grad_(not recipe.grpo.freeze_mtp)  # MiMo freezes the MTP layers during RL
    optimizer = make_optimizer(model, recipe.optim)
    trained = wrap_model(model, recipe, rt)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        sampler.load_state_dict(state["sampler"][rt.rank])
        set_rng_state(state["rng"])
        if rt.is_main:
            console.print(f"resuming RL from {resume_from} at step {step} of {recipe.steps}")
    else:
        torch.manual_seed(recipe.train.seed)

    ro = recipe.rollout
    if ro.backend == "remote":
        engine = RemoteEngine(ro.base_url, ro.served_model_name or served_model(ro.base_url),
                              eos_token_ids=set(tokenizer.stop_token_ids), max_batch_size=ro.max_batch_size)
    else:
        engine = Engine(model, tokenizer=tokenizer, max_batch_size=ro.max_batch_size,
                        num_speculative_tokens=ro.num_speculative_tokens, seed=recipe.train.seed + rt.rank)
    rewards = RewardWorkers(reward_fn, workers=ro.reward_workers, deadline_s=ro.reward_deadline_s)
    params = SamplingParams(max_tokens=ro.max_tokens, temperature=ro.temperature, top_p=ro.top_p)

    def encode_prompt(problem: RLProblem) -> list[int]:
        return tokenizer.apply_chat_template([{"role": "user", "content": problem.prompt}],
                                             add_generation_prompt=True)

    collector = RolloutCollector(engine, sampler, rewards, encode_prompt, tokenizer.decode, params, ro.group_size)
    if state is not None:
        collector.informative_seen, collector.complete_seen = state["collector"]
    if rt.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "recipe.yaml").write_text(yaml.safe_dump(dataclasses.asdict(recipe), sort_keys=False))
        console.print(f"RL: {len(problems)} problems, {ro.batch_groups} groups x {ro.group_size} responses per step "
                      f"over {rt.world_size} process(es), {recipe.grpo.updates_per_step} updates per step, "
                      f"{ro.mode} rollout")
    metrics = MetricsLogger(run_dir, enabled=rt.is_main, resume_step=step if state is not None else None)
    evaluating = rt.is_main and recipe.eval.per_tier > 0 and recipe.problems.source == "reasoning"
    eval_file = run_dir / "heldout_accuracy.json"
    if evaluating and state is None:
        before = heldout_accuracy(model, tokenizer, recipe)
        eval_file.write_text(json.dumps({"before": before}, indent=2))
        log_accuracy(metrics, 0, before)
    shuffle = torch.Generator()
    progress = progress_bar(rt.is_main and console.is_terminal, RL_FIELDS)
    shown = ("reward", "pass_rate", "response_length", "entropy", "clip_fraction", "dropped_group_share", "easy_pool",
             "generation_s", "reward_wait_s", "train_s")
    task = progress.add_task("rl", total=recipe.steps, completed=step, **dict.fromkeys(shown, 0.0))
    try:
        progress.start()
        while step < recipe.steps:
            shuffle.manual_seed(recipe.train.seed * 1_000_003 + step)  # a pure function of the step: resumable
            lr = lr_at(step, recipe.steps, recipe.optim)
            for group in optimizer.param_groups:
                group["lr"] = lr
            t0 = time.monotonic()
            model.eval()
            groups, rstats = collector.collect(ro.batch_groups // rt.world_size, mode=ro.mode,
                                               seed=(recipe.train.seed * 7919 + step) * rt.world_size + rt.rank)
            t1 = time.monotonic()
            model.train()
            batch = build_batch(groups, recipe.grpo, ro.max_tokens)
            losses = update_policy(model, trained, optimizer, batch, recipe, rt, shuffle)
            if ro.backend == "remote":
                sync_remote(engine, model, run_dir, rt)
            train_s = time.monotonic() - t1
            step += 1

            responses = [r for g in groups for r in g.responses]
            n = len(responses)
            record = dict(
                reward=sum(r.reward for r in responses) / n,
                pass_rate=sum(r.reward >= 1.0 for r in responses) / n,
                response_length=sum(len(r.token_ids) for r in responses) / n,
                truncated_share=sum(r.finish_reason == "length" for r in responses) / n,
                dropped_group_share=rstats.groups_dropped / max(1, rstats.groups_started - rstats.groups_aborted),
                wasted_sample_share=rstats.wasted_share, easy_pool=len(sampler.easy),
                generation_s=rstats.generation_s, reward_wait_s=rstats.reward_wait_s,
                rollout_s=t1 - t0, train_s=train_s, step_s=time.monotonic() - t0,
                idle_share=rstats.reward_wait_s / (time.monotonic() - t0))
            record = {key: all_mean(value, rt) for key, value in record.items()}
            record.update(losses, lr=lr)
            metrics.log(step, kind="rl", **record)
            progress.update(task, completed=step, **{k: record[k] for k in shown})
            if rt.is_main and not console.is_terminal and (step % 10 == 0 or step == recipe.steps):
                console.print(f"rl step {step}/{recipe.steps} " + RL_FIELDS.format(task=SimpleNamespace(fields=record)))
            if rt.is_main and recipe.log_samples_every and step % recipe.log_samples_every == 0:
                with open(run_dir / "samples.jsonl", "a") as f:
                    for g in groups[:2]:
                        r = g.responses[0]
                        f.write(json.dumps({"step": step, "problem": g.problem.id, "prompt": g.problem.prompt,
                                            "completion": r.text, "reward": r.reward, "reason": r.reason}) + "\n")
            if step % recipe.train.checkpoint_every == 0 or step == recipe.steps:
                samplers = [sampler.state_dict()]
                if rt.distributed:  # every rank's problem stream, so each resumes its own
                    samplers = [None] * rt.world_size
                    dist.all_gather_object(samplers, sampler.state_dict())
                if rt.is_main:
                    save_checkpoint(checkpoint_dir(run_dir, step), model, tokenizer, {
                        "step": step, "optimizer": optimizer.state_dict(), "sampler": samplers,
                        "collector": (collector.informative_seen, collector.complete_seen), "rng": rng_state(),
                        "recipe": dataclasses.asdict(recipe), "mode": "rl"})
                    prune_checkpoints(run_dir, recipe.train.keep_checkpoints)
                if rt.distributed:
                    dist.barrier()
    finally:
        progress.stop()
        rewards.close()
        if ro.backend == "remote":
            engine.close()
    final = run_dir / "model"
    if rt.is_main:
        save_final_model(final, model, tokenizer)
        console.print(f"rl done: {step} steps -> {final}")
    if evaluating:
        after = heldout_accuracy(model, tokenizer, recipe)
        results = {**json.loads(eval_file.read_text()), "after": after}
        eval_file.write_text(json.dumps(results, indent=2))
        log_accuracy(metrics, step, after)
        console.print(accuracy_table(results["before"], after))
    metrics.close()
    if rt.distributed:
        dist.barrier()
    return final


def rl(recipe: Path = typer.Argument(..., help="YAML recipe (see recipes/rl-tiny.yaml)"),
       overrides: list[str] = typer.Argument(None, help="key=value overrides, e.g. rollout.group_size=4")) -> None:
    """RL with verifiable rewards: MiMo's GRPO (no KL, token-level, clip-higher, dynamic sampling, easy pool)."""
    try:
        train_rl(load_recipe(RLRecipe, recipe, overrides or []))
    except (RecipeError, DataError) as e:  # recipe and data mistakes: one line, no traceback
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
