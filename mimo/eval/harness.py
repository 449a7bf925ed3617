"""`mimo eval`: sample k replies per problem, grade them with the rewards, report pass@1 (avg@k), pass@k and
a 95% confidence interval.

Every graded sample is appended to the output JSONL at once (prompt, completion, extracted answer, verdict,
reason), so an interrupted run, a crash or an endpoint that goes away loses nothing: running the same
command again skips the samples already in the file. The settings travel in `<output>.settings.json`,
and resuming with different settings is refused rather than mixing two experiments in one file.
"""

import json
import os
import sys
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import asdict
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from mimo.eval.benchmarks import LOADERS, DatasetError, Problem, grade, load_benchmark
from mimo.eval.generators import EndpointError, Generator, LocalGenerator, OpenAIGenerator, SamplingSettings
from mimo.eval.metrics import Summary, summarize
from mimo.rewards import SandboxPool, audit_math
console = Console(stderr=True)


def read_finished(output: Path) -> list[dict]:
    """Records already in `output`. A last line cut off by a kill mid-write is dropped from the file."""
    if not output.exists():
        return []
    records, good_bytes = [], 0
    with output.open("rb") as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break
            good_bytes += len(line)
    if good_bytes != output.stat().st_size:
        with output.open("r+b") as f:
            f.truncate(good_bytes)
    return records


def check_settings(output: Path, settings: dict) -> None:
    path = output.with_name(output.name + ".settings.json")
    if path.exists():
        previous = json.loads(path.read_text())
        changed = {k: (previous.get(k), v) for k, v in settings.items() if previous.get(k) != v}
        if changed:
            raise DatasetError(f"{output} holds samples made with other settings {changed} (old, new); "
                               "pass another --output or delete the file")
    path.write_text(json.dumps(settings, indent=2))


def run_eval(problems: list[Problem], generator: Generator, output: Path, samples: int = 1,
             settings: SamplingSettings = SamplingSettings(), concurrency: int = 16,
             pool: SandboxPool | None = None, run_settings: dict | None = None) -> Summary:
    """Generate and grade `samples` replies per problem, appending each to `output`; skip those already
    there. Raises EndpointError once the generator fails for good, after the finished samples are saved."""
    output.parent.mkdir(parents=True, exist_ok=True)
    check_settings(output, {**asdict(settings), "samples": samples, **(run_settings or {})})
    ids = {p.id for p in problems}
    done = {(r["id"], r["sample"]): r for r in read_finished(output) if r["id"] in ids}
    todo = [(p, s) for p in problems for s in range(samples) if (p.id, s) not in done]
    pool = pool or SandboxPool()

    def sample(problem: Problem, index: int) -> dict:
        generation = generator.generate(problem, settings)
        # Math is graded on the main thread (math-verify's timeouts need it); code here, in the sandbox.
        verdict = grade(problem, generation.text, pool) if problem.kind == "code" else None
        return {"id": problem.id, "sample": index, "prompt": generation.prompt, "completion": generation.text,
                "verdict": verdict}

    failure = None
    with output.open("a", encoding="utf-8") as out, _progress() as progress, \
            ThreadPoolExecutor(max_workers=concurrency) as executor:
        task = progress.add_task(f"{len(done)} done before", total=len(todo))
        pending = {executor.submit(sample, p, s): p for p, s in todo}
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                problem = pending.pop(future)
                try:
                    record = future.result()
                except EndpointError as e:
                    if failure is None:  # stop asking; samples already in flight still get saved
                        failure = e
                        for other in pending:
                            other.cancel()
                    continue
                except Exception as e:  # noqa: BLE001 - a bad reply must not end the run
                    failure = failure or EndpointError(f"generation failed on {problem.id}: {e}")
                    continue
                verdict = record.pop("verdict") or grade(problem, record["completion"])
                record.update(extracted=verdict.extracted, correct=verdict.score == 1.0, score=verdict.score,
                              reason=verdict.reason)
                out.write(json.dumps(record) + "\n")
                out.flush()
                done[(record["id"], record["sample"])] = record
                progress.advance(task)
            pending = {f: p for f, p in pending.items() if not f.cancelled()}
    if failure is not None:
        raise EndpointError(f"{failure}\n{len(done)} of {len(problems) * samples} samples are saved in {output}; "
                            "run the same command again to resume")
    correct = {p.id: [done[(p.id, s)]["correct"] for s in range(samples)] for p in problems}
    return summarize(correct)


def _progress() -> Progress:
    return Progress(TextColumn("[bold]eval[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("{task.description}"), console=console)


def print_summary(summary: Summary, settings: dict) -> None:
    table = Table(title="mimo eval", show_header=False)
    for key, value in settings.items():
        table.add_row(key, str(value))
    table.add_row("problems", str(summary.problems))
    table.add_row("samples per problem", str(summary.samples_per_problem))
    for k, value in summary.pass_at.items():
        table.add_row(f"pass@{k} (unbiased)", f"{100 * value:.2f}%")
    console.print(table)
    low, high = summary.ci95
    console.print(f"pass@1 (avg@{summary.samples_per_problem}): [bold]{100 * summary.pass1:.2f}%[/] "
                  f"(95% CI {100 * low:.2f}-{100 * high:.2f}%)")


def print_audit(problems: list[Problem]) -> None:
    audit = audit_math([(p.id, p.gold) for p in problems])
    for form, rate in audit.self_verified.items():
        console.print(f"gold verifies against itself, {form:<10} {100 * rate:.2f}%")
    console.print(f"perturbed gold accepted          {100 * audit.perturbed_accepted:.2f}%")
    console.print(f"gold parse failures              {100 * audit.gold_parse_failures:.2f}%")
    for item_id, check, reason in audit.failures:
        console.print(f"  {item_id}: {check}: {reason}")


def eval_command(
    benchmark: str = typer.Option(..., help=f"One of: {', '.join(LOADERS)} (math/code: your own JSONL, see docs/rewards.md)."),
    data: Path = typer.Option(..., help="The benchmark's JSONL file."),
    model: str = typer.Option(None, help="Local checkpoint directory (generation through mimo.engine)."),
    base_url: str = typer.Option(None, help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1."),
    model_name: str = typer.Option(None, help="Model name to request from --base-url."),
    api: str = typer.Option("chat", help="chat, or completions for base models."),
    samples: int = typer.Option(1, "--samples", "-k", help="Samples per problem (MiMo: 32 for AIME, 8 for code)."),
    temperature: float = typer.Option(0.6),
    top_p: float = typer.Option(0.95),
    max_tokens: int = typer.Option(32768),
    concurrency: int = typer.Option(16, help="Requests in flight at once."),
    retries: int = typer.Option(4, help="Retries per request, with exponential backoff."),
    limit: int = typer.Option(None, help="Only the first N problems."),
    output: Path = typer.Option(None, help="Per-sample JSONL (default runs/eval/BENCHMARK-MODEL.jsonl); resumed if present."),
    audit: bool = typer.Option(False, help="Math only: audit the verifier on the gold answers; no model needed."),
) -> None:
    """Evaluate a model on a math or code benchmark: pass@1 (avg@k), unbiased pass@k, 95% CI."""
    try:
        problems = load_benchmark(benchmark, data)[:limit]
        if audit:
            if problems[0].kind != "math":
                raise DatasetError("--audit checks the math verifier; pick a math benchmark")
            print_audit(problems)
            return
        if (model is None) == (base_url is None) or (base_url and not model_name):
            raise typer.BadParameter("give --model CHECKPOINT, or --base-url URL with --model-name NAME")
        name = model_name or Path(model).name
        output = output or Path("runs/eval") / f"{benchmark}-{name.replace('/', '_')}.jsonl"
        generator = (OpenAIGenerator(base_url, model_name, api=api, max_retries=retries) if base_url
                     else LocalGenerator(model, api=api))
        settings = SamplingSettings(temperature=temperature, top_p=top_p, max_tokens=max_tokens)
        run_settings = {"benchmark": benchmark, "data": str(data), "model": name, "api": api}
        with SandboxPool(workers=os.cpu_count()) as pool:
            summary = run_eval(problems, generator, output, samples, settings, concurrency, pool, run_settings)
        print_summary(summary, {**run_settings, **asdict(settings), "output": str(output)})
        output.with_name(output.name + ".summary.json").write_text(json.dumps(
            {**run_settings, **asdict(settings), **asdict(summary)}, indent=2))
    except (DatasetError, EndpointError, RuntimeError) as e:
        console.print(f"[red]error:[/] {e}")
        sys.exit(2)
