"""The training loop shared by `mimo pretrain` and `mimo sft`: recipe, data, model, optimizer, resume.

One plain loop, read top to bottom in `train()`:

    recipe -> validate everything (data files, keys, lengths) -> tokenizer (trained first if asked)
    -> model (fresh from a preset, or a checkpoint) -> AdamW -> resume from the newest complete
    checkpoint if there is one -> for each step: LR/MTP weight from the schedule, grad-accumulated
    micro-batches of packed rows, clip, step, log, checkpoint

Loss: next-token cross-entropy + w * MTP cross-entropy (w per stage, MiMo's 0.3 then 0.1), with targets
that cross a packed document boundary ignored, so a row of packed documents trains exactly like the
documents one at a time. Labels of -100 (SFT: everything but the assistant's tokens) are ignored.

Distributed: the same loop under torchrun. Every rank builds the same data stream, draws the whole
global batch (micro_batch x grad_accum x world_size rows) and trains on its own slice; DDP averages
gradients, so grad_accum x world_size = the same global batch and the same update as one process.
Collectives time out (train.timeout_s) instead of hanging. FSDP2 (`train.fsdp`) shards on GPU.

Exact resume: a checkpoint holds the weights, AdamW state, step, the data stream's position and RNG
states. The learning rate is a pure function of the step. Resuming therefore replays the same
micro-batches with the same accumulation boundaries and, on CPU, the same bits.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import yaml
from rich.console import Console

from mimo.config import MiMoConfig
from mimo.data.corpus import read_chat_jsonl, read_text_corpus
from mimo.data.packing import ListSource, PackedStream, ReasoningSource
from mimo.data.reasoning import DIFFICULTIES, FAMILIES, mixed_problem
from mimo.model import IGNORE_INDEX, MTP_LOSS_WEIGHT, MiMoForCausalLM, shifted_cross_entropy
from mimo.recipe import RecipeError
from mimo.tokenizer import Tokenizer, train_tokenizer
from mimo.train.checkpointing import (checkpoint_dir, latest_checkpoint, load_training_state, prune_checkpoints,
                                      rng_state, save_checkpoint, save_final_model, set_rng_state)
from mimo.train.flops import matmul_peak_gflops, training_flops_per_token, training_memory_bytes
from mimo.train.metrics import MetricsLogger, progress_bar

SOURCE_KINDS = ("reasoning", "reasoning_chat", "text", "chat")


# ---- recipe ------------------------------------------------------------------------------------------

@dataclass
class SourceArgs:
    kind: str = "reasoning"  # reasoning (plain text) | reasoning_chat | text (corpus) | chat (messages JSONL)
    path: str | None = None  # text / chat: a file or folder
    families: list[str] = field(default_factory=lambda: list(FAMILIES))  # reasoning kinds only
    difficulties: list[int] = field(default_factory=lambda: list(DIFFICULTIES))
    text_key: str = "text"  # JSONL corpora: the field holding the text


@dataclass
class StageArgs:
    """One stage of MiMo's staged pretraining: its own mixture, sequence length and MTP weight."""
    steps: int = 100
    seq_len: int = 256
    mixture: dict[str, float] = field(default_factory=lambda: {"reasoning": 1.0})  # source name -> weight
    mtp_loss_weight: float = MTP_LOSS_WEIGHT
    name: str = ""


@dataclass
class ModelArgs:
    preset: str = "mimo-2m"  # fresh model from a preset (vocab_size taken from the tokenizer)
    init_from: str | None = None  # or continue from a checkpoint folder (its tokenizer comes along)
    config: dict[str, Any] = field(default_factory=dict)  # MiMoConfig overrides for a fresh model


@dataclass
class TokenizerArgs:
    path: str | None = None  # an existing tokenizer folder
    train_vocab_size: int | None = None  # or train one on the stage-1 data first
    train_documents: int = 20000  # documents sampled from stage 1 for tokenizer training


@dataclass
class OptimArgs:
    """AdamW with MiMo's betas / weight decay / clipping; warmup, constant, then cosine decay (WSD)."""
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 20
    decay_fraction: float = 0.2  # share of all steps spent decaying to min_lr at the end; 0 = constant
    beta1: float = 0.9
    beta2: float = 0.95
    weight_decay: float = 0.1
    grad_clip: float = 1.0


@dataclass
class TrainArgs:
    micro_batch: int = 8  # rows per forward pass per process
    grad_accum: int = 1  # micro-batches per optimizer step per process
    device: str = "auto"  # auto | cpu | cuda
    compile: bool = False
    fsdp: bool = False  # FSDP2 instead of DDP (GPU, torchrun)
    threads: int | None = None  # CPU intra-op threads (None: torch's default)
    seed: int = 0
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    timeout_s: int = 600  # collective timeout under torchrun


@dataclass
class TrainRecipe:
    run_dir: str = "runs/pretrain"
    model: ModelArgs = field(default_factory=ModelArgs)
    tokenizer: TokenizerArgs = field(default_factory=TokenizerArgs)
    sources: dict[str, SourceArgs] = field(default_factory=lambda: {"reasoning": SourceArgs()})
    stages: list[StageArgs] = field(default_factory=lambda: [StageArgs()])
    optim: OptimArgs = field(default_factory=OptimArgs)
    train: TrainArgs = field(default_factory=TrainArgs)

    @property
    def total_steps(self) -> int:
        return sum(s.steps for s in self.stages)


def validate(recipe: TrainRecipe, mode: str) -> None:
    """Every recipe mistake we can see without data or compute, as one clear error."""
    if not recipe.stages:
        raise RecipeError("the recipe has no stages")
    for i, stage in enumerate(recipe.stages):
        unknown = set(stage.mixture) - set(recipe.sources)
        if unknown:
            raise RecipeError(f"stages[{i}].mixture uses source {sorted(unknown)[0]!r}, not defined under "
                              f"sources ({', '.join(sorted(recipe.sources))})")
        if stage.steps < 0 or stage.seq_len < 8:
            raise RecipeError(f"stages[{i}]: steps must be >= 0 and seq_len >= 8")
    for name, source in recipe.sources.items():
        if source.kind not in SOURCE_KINDS:
            raise RecipeError(f"sources.{name}.kind {source.kind!r} is not one of {SOURCE_KINDS}")
        if source.kind in ("text", "chat") and not source.path:
            raise RecipeError(f"sources.{name}: kind {source.kind!r} needs a path")
        if mode == "sft" and source.kind not in ("chat", "reasoning_chat"):
            raise RecipeError(f"sources.{name}: SFT trains on chats; use kind 'chat' or 'reasoning_chat'")
        bad = set(source.families) - set(FAMILIES) or set(source.difficulties) - set(DIFFICULTIES)
        if bad:
            raise RecipeError(f"sources.{name}: unknown families/difficulties {sorted(map(str, bad))}")
    if mode == "sft" and not recipe.model.init_from:
        raise RecipeError("SFT starts from a trained model: set model.init_from to a checkpoint folder")
    try:
        config = (MiMoConfig.from_json(recipe.model.init_from) if recipe.model.init_from
                  else MiMoConfig.from_preset(recipe.model.preset))
    except ValueError as e:
        raise RecipeError(f"model: {e}") from e
    max_positions = recipe.model.config.get("max_position_embeddings", config.max_position_embeddings)
    longest = max(s.seq_len for s in recipe.stages)
    if longest > max_positions:
        raise RecipeError(f"seq_len {longest} is longer than the model allows (max_position_embeddings="
                          f"{max_positions}); lower stages.*.seq_len or raise model.config.max_position_embeddings")


# ---- schedules and loss ------------------------------------------------------------------------------

def lr_at(step: int, total_steps: int, optim: OptimArgs) -> float:
    """Warmup (linear from 0), constant, then cosine decay to min_lr over the last decay_fraction."""
    if step < optim.warmup_steps:
        return optim.lr * (step + 1) / optim.warmup_steps
    decay_steps = int(total_steps * optim.decay_fraction)
    decay_start = total_steps - decay_steps
    if decay_steps == 0 or step < decay_start:
        return optim.lr
    progress = (step - decay_start) / max(1, decay_steps - 1)
    return optim.min_lr + 0.5 * (optim.lr - optim.min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


def stage_at(stages: list[StageArgs], step: int) -> int:
    for i, stage in enumerate(stages):
        if step < stage.steps:
            return i
        step -= stage.steps
    return len(stages) - 1


def within_document(labels: torch.Tensor, document_ids: torch.Tensor, shift: int) -> torch.Tensor:
    """Labels where the target `shift` tokens ahead lies in another packed document are ignored."""
    crossing = document_ids[:, shift:] != document_ids[:, :-shift]
    labels = labels.clone()
    labels[:, shift:] = labels[:, shift:].masked_fill(crossing, IGNORE_INDEX)
    return labels


def packed_loss(out, labels: torch.Tensor, document_ids: torch.Tensor, mtp_weight: float):
    """(total, next-token, MTP) losses of a packed batch; MTP is the mean over MTP layers (or None)."""
    main = shifted_cross_entropy(out.logits, within_document(labels, document_ids, 1), 1)
    mtp = [shifted_cross_entropy(lg, within_document(labels, document_ids, k + 2), k + 2)
           for k, lg in enumerate(out.mtp_logits) if labels.shape[1] > k + 2]
    if not mtp or mtp_weight == 0:
        return main, main, (torch.stack(mtp).mean() if mtp else None)
    mtp_loss = torch.stack(mtp).mean()
    return main + mtp_weight * mtp_loss, main, mtp_loss


# ---- runtime -----------------------------------------------------------------------------------------

@dataclass
class Runtime:
    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def autocast(self):
        # bf16 autocast on GPU (weights and optimizer stay fp32); plain fp32 on CPU.
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()


def init_runtime(args: TrainArgs) -> Runtime:
    """Single process, or torchrun (RANK/WORLD_SIZE set): gloo on CPU, NCCL on GPU, with timeouts."""
    if args.threads:
        torch.set_num_threads(args.threads)
    want_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    local = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device(f"cuda:{local}" if want_cuda else "cpu")
    if want_cuda:
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if want_cuda else "gloo", timeout=timedelta(seconds=args.timeout_s))
    return Runtime(device, rank, world, local)


def all_mean(value: float, rt: Runtime) -> float:
    if not rt.distributed:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=rt.device)
    dist.all_reduce(t)
    return t.item() / rt.world_size


# ---- data, tokenizer, model --------------------------------------------------------------------------

def build_sources(recipe: TrainRecipe, tokenizer: Tokenizer) -> dict[str, Any]:
    """Every source of the recipe, file-backed ones read, checked and tokenized up front."""
    seed = recipe.train.seed
    sources = {}
    for name, s in recipe.sources.items():
        if s.kind in ("reasoning", "reasoning_chat"):
            sources[name] = ReasoningSource(tokenizer, s.families, s.difficulties, seed, chat=s.kind == "reasoning_chat")
        elif s.kind == "text":
            eot = tokenizer.token_to_id("<|endoftext|>")
            docs = [(tokenizer.encode(t) + ([eot] if eot is not None else []), None)
                    for t in read_text_corpus(s.path, s.text_key)]
            sources[name] = ListSource(docs, seed)
        else:
            chats = [tokenizer.encode_chat(messages) for messages in read_chat_jsonl(s.path)]
            longest = max(range(len(chats)), key=lambda i: len(chats[i][0]))
            seq_len = max(st.seq_len for st in recipe.stages if name in st.mixture) if any(
                name in st.mixture for st in recipe.stages) else None
            if seq_len is not None and len(chats[longest][0]) > seq_len:
                raise RecipeError(f"{s.path}: conversation {longest + 1} has {len(chats[longest][0])} tokens, more "
                                  f"than seq_len={seq_len} (raise stages.*.seq_len or drop it)")
            sources[name] = ListSource(chats, seed)
    return sources


def make_stream(recipe: TrainRecipe, stage: StageArgs, sources: dict[str, Any], tokenizer: Tokenizer,
                mode: str) -> PackedStream:
    used = {name: sources[name] for name in stage.mixture}
    return PackedStream(used, stage.mixture, stage.seq_len, recipe.train.seed, tokenizer.pad_token_id or 0,
                        split_long_documents=mode == "pretrain")


def tokenizer_training_texts(recipe: TrainRecipe) -> list[str]:
    """Stage-1 documents for tokenizer training: the raw text of its sources (chats rendered as ChatML)."""
    texts = []
    for name in recipe.stages[0].mixture:
        s = recipe.sources[name]
        if s.kind in ("reasoning", "reasoning_chat"):
            problems = [mixed_problem(s.families, s.difficulties, "train", recipe.train.seed, i)
                        for i in range(recipe.tokenizer.train_documents)]
            texts += [p.text() for p in problems]
            texts += [f"<|im_start|>user\n{p.prompt}<|im_end|>\n<|im_start|>assistant\n" for p in problems[:1000]]
        elif s.kind == "text":
            texts += read_text_corpus(s.path, s.text_key)[: recipe.tokenizer.train_documents]
        else:
            texts += ["\n".join(m["content"] for m in c) for c in read_chat_jsonl(s.path)[: recipe.tokenizer.train_documents]]
    return texts


def prepare_tokenizer(recipe: TrainRecipe, rt: Runtime, console: Console) -> Tokenizer:
    run_tokenizer = Path(recipe.run_dir) / "tokenizer"
    if recipe.model.init_from:
        return Tokenizer.from_pretrained(recipe.model.init_from)
    if recipe.tokenizer.path:
        return Tokenizer.from_pretrained(recipe.tokenizer.path)
    if not recipe.tokenizer.train_vocab_size:
        raise RecipeError("set tokenizer.path, tokenizer.train_vocab_size or model.init_from")
    if not (run_tokenizer / "tokenizer.json").exists():
        if rt.is_main:
            start = time.time()
            tokenizer = train_tokenizer(tokenizer_training_texts(recipe), recipe.tokenizer.train_vocab_size)
            tokenizer.save_pretrained(run_tokenizer)
            console.print(f"trained a {len(tokenizer)}-token tokenizer in {time.time() - start:.1f}s -> {run_tokenizer}")
        if rt.distributed:
            dist.barrier()
    return Tokenizer.from_pretrained(run_tokenizer)


def build_model(recipe: TrainRecipe, tokenizer: Tokenizer, resume_from: Path | None = None) -> MiMoForCausalLM:
    """The model to train: a resumed checkpoint, model.init_from, or a fresh (seeded) model from the preset."""
    if resume_from or recipe.model.init_from:
        model = MiMoForCausalLM.from_pretrained(resume_from or recipe.model.init_from, dtype=torch.float32)
    else:
        config = MiMoConfig.from_preset(recipe.model.preset, vocab_size=len(tokenizer),
                                        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                                        torch_dtype="float32")
        for key, value in recipe.model.config.items():
            if not hasattr(config, key):
                raise RecipeError(f"model.config.{key} is not a MiMoConfig field")
            setattr(config, key, value)
        config = MiMoConfig.from_dict(config.to_dict())  # re-run validation after overrides
        torch.manual_seed(recipe.train.seed)
        model = MiMoForCausalLM(config)
    if len(tokenizer) > model.config.vocab_size:
        raise RecipeError(f"the tokenizer has {len(tokenizer)} tokens but the model only {model.config.vocab_size}")
    return model.train()


def wrap_model(model: MiMoForCausalLM, recipe: TrainRecipe, rt: Runtime) -> torch.nn.Module:
    """DDP (or FSDP2 on GPU), then optional torch.compile. Returns the module to call for training."""
    model.to(rt.device)
    if rt.distributed and recipe.train.fsdp and rt.device.type == "cuda":
        from torch.distributed.fsdp import fully_shard
        for layer in [*model.model.layers, *model.model.mtp_layers]:
            fully_shard(layer)
        fully_shard(model)
        wrapped = model
    elif rt.distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP
        wrapped = DDP(model, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)
    else:
        wrapped = model
    return torch.compile(wrapped) if recipe.train.compile else wrapped


def make_optimizer(model: MiMoForCausalLM, optim: OptimArgs) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices only (not norms and biases), as is standard for LLMs."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=optim.lr, betas=(optim.beta1, optim.beta2), foreach=True)


def full_state(model: MiMoForCausalLM, optimizer, recipe: TrainRecipe, rt: Runtime):
    """(model to save, optimizer state); under FSDP2 the shards are gathered to rank 0 (a collective every
    rank must join; other ranks get (None, {}))."""
    if rt.distributed and recipe.train.fsdp and rt.device.type == "cuda":
        from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                             get_optimizer_state_dict)
        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        weights = get_model_state_dict(model, options=options)
        opt_state = get_optimizer_state_dict(model, optimizer, options=options)
        if not rt.is_main:
            return None, {}
        plain = MiMoForCausalLM(model.config)
        plain.load_state_dict(weights)
        return plain, opt_state
    return model, optimizer.state_dict()


def load_optimizer_state(model, optimizer, state, recipe: TrainRecipe, rt: Runtime) -> None:
    if rt.distributed and recipe.train.fsdp and rt.device.type == "cuda":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict
        set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))
    else:
        optimizer.load_state_dict(state)


def print_estimate(model: MiMoForCausalLM, recipe: TrainRecipe, rt: Runtime, console: Console) -> None:
    """Parameters, memory and FLOPs per step, and the best tokens/s the machine's matmul peak allows."""
    counts = model.num_parameters()
    rows = recipe.train.micro_batch * recipe.train.grad_accum * rt.world_size
    total_tokens = sum(s.steps * rows * s.seq_len for s in recipe.stages)
    longest = max(s.seq_len for s in recipe.stages)
    flops_token = training_flops_per_token(model.config, longest)
    memory = training_memory_bytes(counts["total"], model.config, recipe.train.micro_batch * longest)
    peak = matmul_peak_gflops(rt.device, seconds=0.2)
    console.print(
        f"model: {counts['trunk']:,} trunk + {counts['mtp']:,} MTP parameters | global batch {rows} rows, "
        f"{recipe.total_steps} steps, {total_tokens / 1e6:.1f}M tokens\n"
        f"estimate per process at seq_len {longest}: memory ~{sum(memory.values()) / 2**20:,.0f} MiB (weights+AdamW "
        f"{memory['weights_and_optimizer'] / 2**20:,.0f}, activations {memory['activations'] / 2**20:,.0f}, logits "
        f"{memory['logits'] / 2**20:,.0f}); {flops_token / 1e6:,.1f} MFLOP/token; fp32 matmul peak {peak:,.0f} "
        f"GFLOP/s -> at most {peak * 1e9 / flops_token:,.0f} tok/s per process, "
        f">= {total_tokens * flops_token / (peak * 1e9 * rt.world_size) / 60:,.1f} min in all")


# ---- the loop ----------------------------------------------------------------------------------------

def train(recipe: TrainRecipe, mode: str = "pretrain", console: Console | None = None) -> Path:
    """Run (or resume) a pretraining or SFT recipe. Returns the folder of the final model."""
    console = console or Console()
    validate(recipe, mode)
    rt = init_runtime(recipe.train)
    run_dir = Path(recipe.run_dir)
    tokenizer = prepare_tokenizer(recipe, rt, console)
    sources = build_sources(recipe, tokenizer)  # reads and checks every data file before compute
    total = recipe.total_steps

    step, stream_state = 0, None
    resume_from = latest_checkpoint(run_dir)
    if resume_from is not None:
        state = load_training_state(resume_from)
        step = state["step"]
        if step >= total:
            raise RecipeError(f"{run_dir} already finished {step} steps and the recipe asks for {total}: resuming "
                              f"would train zero steps. Raise the stage steps or use a new run_dir.")
        # A checkpoint taken exactly at a stage boundary holds the finished stage's stream: start the new one fresh.
        stream_state = state["data"] if state["stage"] == stage_at(recipe.stages, step) else None
        if rt.is_main:
            console.print(f"resuming from {resume_from} at step {step} of {total}")
    model = build_model(recipe, tokenizer, resume_from)
    optimizer = make_optimizer(model, recipe.optim)
    trained = wrap_model(model, recipe, rt)
    if resume_from is not None:
        load_optimizer_state(model, optimizer, state["optimizer"], recipe, rt)
        set_rng_state(state["rng"])
    if rt.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "recipe.yaml").write_text(yaml.safe_dump(dataclasses.asdict(recipe), sort_keys=False))
        print_estimate(model, recipe, rt, console)
    metrics = MetricsLogger(run_dir, enabled=rt.is_main, resume_step=step if resume_from else None)

    A, W, B = recipe.train.grad_accum, rt.world_size, recipe.train.micro_batch
    stage_index = stage_at(recipe.stages, step)
    stream = make_stream(recipe, recipe.stages[stage_index], sources, tokenizer, mode)
    if stream_state is not None:
        stream.load_state_dict(stream_state)

    progress = progress_bar(rt.is_main and console.is_terminal)
    task = progress.add_task(mode, total=total, completed=step, loss=0.0, mtp=0.0, tps=0.0, lr=0.0)
    with progress:
        while step < total:
            if stage_at(recipe.stages, step) != stage_index:  # entering the next stage: new mixture and length
                stage_index = stage_at(recipe.stages, step)
                stream = make_stream(recipe, recipe.stages[stage_index], sources, tokenizer, mode)
            stage = recipe.stages[stage_index]
            lr = lr_at(step, total, recipe.optim)
            for group in optimizer.param_groups:
                group["lr"] = lr
            start = time.perf_counter()
            batch = stream.next_batch(B * A * W)  # the global batch; this rank trains on its slice
            losses = torch.zeros(3, dtype=torch.float64)
            for micro in range(A):
                rows = slice((rt.rank * A + micro) * B, (rt.rank * A + micro + 1) * B)
                mb = {k: v[rows].to(rt.device) for k, v in batch.items()}
                sync = micro == A - 1 or not hasattr(trained, "no_sync")
                with (contextlib.nullcontext() if sync else trained.no_sync()), rt.autocast():
                    out = trained(mb["input_ids"], document_ids=mb["document_ids"], with_mtp=stage.mtp_loss_weight > 0)
                    loss, main, mtp = packed_loss(out, mb["labels"], mb["document_ids"], stage.mtp_loss_weight)
                    (loss / A).backward()
                losses += torch.tensor([loss.item(), main.item(), mtp.item() if mtp is not None else 0.0]) / A
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.optim.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1

            loss_value, main_value, mtp_value = (all_mean(v, rt) for v in losses.tolist())
            elapsed = time.perf_counter() - start
            tokens = B * A * W * stage.seq_len
            metrics.log(step, loss=loss_value, main_loss=main_value, mtp_loss=mtp_value, lr=lr,
                        mtp_weight=stage.mtp_loss_weight, grad_norm=float(grad_norm), tokens=tokens,
                        tokens_per_s=tokens / elapsed, stage=stage_index)
            progress.update(task, completed=step, loss=main_value, mtp=mtp_value, tps=tokens / elapsed, lr=lr)
            if rt.is_main and not console.is_terminal and (step % 50 == 0 or step == total):
                console.print(f"{mode} step {step}/{total} loss {main_value:.4f} mtp {mtp_value:.4f} "
                              f"{tokens / elapsed:,.0f} tok/s lr {lr:.2e}")

            if step % recipe.train.checkpoint_every == 0 or step == total:
                to_save, opt_state = full_state(model, optimizer, recipe, rt)
                if rt.is_main:
                    save_checkpoint(checkpoint_dir(run_dir, step), to_save, tokenizer, {
                        "step": step, "optimizer": opt_state, "data": stream.state_dict(), "stage": stage_index,
                        "rng": rng_state(),
                        "recipe": dataclasses.asdict(recipe), "mode": mode})
                    prune_checkpoints(run_dir, recipe.train.keep_checkpoints)
                if rt.distributed:
                    dist.barrier()

    final = run_dir / "model"
    to_save = full_state(model, optimizer, recipe, rt)[0]  # a collective under FSDP: every rank takes part
    if rt.is_main:
        save_final_model(final, to_save, tokenizer)
        console.print(f"{mode} done: {step} steps -> {final}")
    metrics.close()
    if rt.distributed:
        dist.barrier()
    return final
