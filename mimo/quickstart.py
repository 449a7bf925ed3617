"""`mimo quickstart`: MiMo's recipe end to end, on a laptop CPU, in about ten minutes.

    1. train a byte-level BPE tokenizer (digits one per token) on the built-in reasoning problems
    2. pretrain a tiny MiMo with one MTP layer: next-token + MTP loss, two stages (MiMo's idea at toy
       scale: the MTP weight drops from 0.3 to 0.1 and the sequence length grows in the last stage)
    3. SFT on the same kind of problems as ChatML chats, loss on the assistant's tokens, MTP trained too
    4. evaluate greedily on the held-out split (problems never seen in training), per family and tier
    5. print the results table, write curves.png and results.json, and the next commands to try

Everything lands in RUN_DIR (default runs/quickstart); the recipes it ran are saved there as YAML, so
`mimo pretrain RUN_DIR/pretrain/recipe.yaml` reruns (or, with more steps, continues) the same thing.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import torch
import typer
from rich.console import Console
from rich.table import Table

from mimo.data.reasoning import DIFFICULTIES, FAMILIES, heldout_set
from mimo.model import MiMoForCausalLM
from mimo.tokenizer import Tokenizer
from mimo.train.evaluate import accuracy_by_tier, evaluate
from mimo.train.loop import (ModelArgs, OptimArgs, SourceArgs, StageArgs, TokenizerArgs, TrainArgs, TrainRecipe,
                             train)
from mimo.train.plot import plot_runs

# The tiny model: mimo-2m's shape (4 layers, hidden 128, GQA 4:2, one MTP layer) with a 512-token vocabulary.
QUICKSTART_PRESET = "mimo-2m"


def quickstart_recipes(run_dir: Path, pretrain_steps: int, sft_steps: int, threads: int, seed: int):
    """The two recipes the quickstart runs (also a template for your own small runs)."""
    easy, every = SourceArgs(difficulties=[1]), SourceArgs()
    stage1 = max(1, pretrain_steps * 4 // 5)
    pretrain = TrainRecipe(
        run_dir=str(run_dir / "pretrain"),
        model=ModelArgs(preset=QUICKSTART_PRESET),
        tokenizer=TokenizerArgs(train_vocab_size=512, train_documents=5000),
        sources={"easy": easy, "all": every},
        stages=[StageArgs(name="stage1", steps=stage1, seq_len=256, mixture={"easy": 0.5, "all": 0.5},
                          mtp_loss_weight=0.3),
                StageArgs(name="stage2", steps=pretrain_steps - stage1, seq_len=512, mixture={"all": 1.0},
                          mtp_loss_weight=0.1)],
        optim=OptimArgs(lr=3e-3, min_lr=3e-4, warmup_steps=30, decay_fraction=0.25),
        train=TrainArgs(micro_batch=16, threads=threads, seed=seed, checkpoint_every=200),
    )
    sft = TrainRecipe(
        run_dir=str(run_dir / "sft"),
        model=ModelArgs(init_from=str(run_dir / "pretrain" / "model")),
        sources={"chats": SourceArgs(kind="reasoning_chat")},
        stages=[StageArgs(name="sft", steps=sft_steps, seq_len=256, mixture={"chats": 1.0}, mtp_loss_weight=0.1)],
        optim=OptimArgs(lr=1e-3, min_lr=1e-4, warmup_steps=10, decay_fraction=0.5),
        train=TrainArgs(micro_batch=16, threads=threads, seed=seed + 1, checkpoint_every=200),
    )
    return pretrain, sft


def pick_threads(candidates: tuple[int, ...] = (2, 1)) -> int:
    """The fastest CPU thread count right now, by timing matmuls shaped like the quickstart's layers.

    Two threads are ~1.7x faster than one on an idle 2-core machine, but up to 10x slower when another
    program keeps one core busy (every parallel op then waits for a descheduled thread), so measure."""
    x, w = torch.randn(4096, 128), torch.randn(128, 384)
    timings = {}
    for n in candidates:
        torch.set_num_threads(n)
        x @ w  # warm the thread pool
        start = time.perf_counter()
        for _ in range(30):
            x @ w
        timings[n] = time.perf_counter() - start
    return min(timings, key=timings.get)


def results_table(accuracy: dict[tuple[str, int], tuple[float, int]]) -> Table:
    table = Table(title="held-out accuracy (greedy; exact match of \\boxed{} / all tests pass for code)")
    table.add_column("family")
    for d in DIFFICULTIES:
        table.add_column(f"tier {d}", justify="right")
    for family in FAMILIES:
        cells = [f"{accuracy[(family, d)][0]:.1%} (n={accuracy[(family, d)][1]})" if (family, d) in accuracy else "-"
                 for d in DIFFICULTIES]
        table.add_row(family, *cells)
    return table


def results_markdown(accuracy: dict[tuple[str, int], tuple[float, int]]) -> str:
    lines = ["| family | " + " | ".join(f"tier {d}" for d in DIFFICULTIES) + " |",
             "|---|" + "---:|" * len(DIFFICULTIES)]
    for family in FAMILIES:
        lines.append(f"| {family} | " + " | ".join(
            f"{accuracy[(family, d)][0]:.1%}" if (family, d) in accuracy else "-" for d in DIFFICULTIES) + " |")
    return "\n".join(lines)


def quickstart(
    run_dir: Path = typer.Option(Path("runs/quickstart"), help="where everything is written"),
    pretrain_steps: int = typer.Option(800, help="pretraining optimizer steps (16 x 256-512 tokens each)"),
    sft_steps: int = typer.Option(150, help="SFT optimizer steps"),
    eval_per_tier: int = typer.Option(50, help="held-out problems per family and difficulty"),
    threads: int = typer.Option(0, help="CPU threads; 0 = measure whether 2 or 1 is faster right now"),
    seed: int = typer.Option(0),
) -> None:
    """Train a tokenizer and a tiny MiMo (with MTP) from scratch on built-in reasoning data: pretrain, SFT,
    held-out evaluation per family and difficulty, plots and a checkpoint, in ~10 minutes on 2 CPU cores."""
    console = Console()
    threads = threads or pick_threads()
    torch.set_num_threads(threads)
    console.print(f"using {threads} CPU thread(s)")
    start = time.time()
    pretrain_recipe, sft_recipe = quickstart_recipes(run_dir, pretrain_steps, sft_steps, threads, seed)
    for recipe in (pretrain_recipe, sft_recipe):  # a finished earlier quickstart is replaced, not resumed
        if (Path(recipe.run_dir) / "model").exists():
            shutil.rmtree(recipe.run_dir)

    console.rule("1-2. tokenizer + pretraining (next-token + MTP loss)")
    train(pretrain_recipe, "pretrain", console)
    console.rule("3. SFT on chats (assistant tokens only, MTP trained too)")
    final = train(sft_recipe, "sft", console)

    console.rule("4. held-out evaluation")
    eval_start = time.time()
    model = MiMoForCausalLM.from_pretrained(final)
    tokenizer = Tokenizer.from_pretrained(final)
    problems = heldout_set(list(FAMILIES), list(DIFFICULTIES), eval_per_tier, seed=seed)
    graded = evaluate(model, tokenizer, problems)
    accuracy = accuracy_by_tier(graded)
    console.print(f"evaluated {len(problems)} held-out problems in {time.time() - eval_start:.0f}s")

    console.rule("5. results")
    console.print(results_table(accuracy))
    wall = time.time() - start
    (run_dir / "results.json").write_text(json.dumps({
        "accuracy": {f"{f}/tier{d}": {"accuracy": a, "n": n} for (f, d), (a, n) in accuracy.items()},
        "wall_time_s": wall, "pretrain_steps": pretrain_steps, "sft_steps": sft_steps,
        "parameters": model.num_parameters(), "threads": threads, "seed": seed,
        "examples": [{"prompt": g.problem.prompt, "completion": g.completion, "correct": g.correct}
                     for g in graded[:: max(1, len(graded) // 12)]]}, indent=2) + "\n")
    (run_dir / "results.md").write_text(results_markdown(accuracy) + "\n")
    plot = plot_runs([Path(pretrain_recipe.run_dir), Path(sft_recipe.run_dir)], run_dir / "curves.png")
    example = next((g for g in graded if g.correct and g.problem.family == "arithmetic"), graded[0])
    console.print(f"\nexample held-out problem: {example.problem.prompt}\nmodel's answer:\n{example.completion}\n")
    console.print(f"done in {wall / 60:.1f} min. model: {final}   curves: {plot}   table: {run_dir / 'results.md'}\n")
    console.print("next commands to try:")
    for command in (f"mimo rl recipes/rl-tiny.yaml model={final}   # MiMo GRPO, about 7 min",
                    f"mimo chat {final}",
                    f"mimo serve {final} --port 8000",
                    f"mimo info {final}",
                    f"mimo plot {pretrain_recipe.run_dir} {sft_recipe.run_dir}",
                    f"mimo pretrain {pretrain_recipe.run_dir}/recipe.yaml stages.0.steps=3000 run_dir=runs/longer",
                    f"mimo sft {sft_recipe.run_dir}/recipe.yaml model.init_from=runs/longer/model run_dir=runs/longer-sft",
                    f"torchrun --nproc_per_node=2 -m mimo pretrain {pretrain_recipe.run_dir}/recipe.yaml "
                    f"run_dir=runs/ddp train.threads=1"):
        console.print(f"  {command}")
