"""Terminal clients that run the engine in-process: `mimo generate` (one completion) and `mimo chat`
(an interactive conversation: streaming, reasoning dimmed, history kept, /reset clears it)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable

from rich.console import Console
from rich.text import Text

from mimo.engine import Engine, SamplingParams
from mimo.serve.reasoning import THINK_START, ReasoningParser
from mimo.serve.server import load_engine


def stream(engine: Engine, prompt: list[int], params: SamplingParams, on_text: Callable[[str], None]):
    """Run one request to completion, calling on_text with each new piece of text; returns its Sample."""
    request_id = engine.add_request(prompt, params)
    sent = 0
    try:
        while engine.has_unfinished():
            for out in engine.step():
                if out.request_id != request_id:
                    continue
                sample = out.samples[0]
                on_text(sample.text[sent:])
                sent = len(sample.text)
                if out.finished:
                    return sample
    finally:
        engine.abort(request_id)  # a no-op once finished; frees the cache after Ctrl-C
    raise RuntimeError("the engine finished without completing the request")


def _load(checkpoint: Path, speculative_tokens: int, dtype: str, max_seq_len: int = 0) -> Engine:
    return load_engine(checkpoint, max_batch_size=1, max_seq_len=max_seq_len or None,
                       speculative_tokens=None if speculative_tokens < 0 else speculative_tokens, dtype=dtype or None)


def generate(checkpoint: Path, prompt: str, max_tokens: int = 256, temperature: float = 0.0, top_p: float = 1.0,
             seed: int = -1, chat: bool = False, speculative_tokens: int = -1, dtype: str = "") -> None:
    """Complete PROMPT with CHECKPOINT and print the text as it is generated.

    --chat formats the prompt as one user message with the checkpoint's chat template; seed -1 = random;
    speculative_tokens -1 = one MTP draft where the checkpoint has MTP layers. Speed goes to stderr."""
    engine = _load(checkpoint, speculative_tokens, dtype)
    tokenizer = engine.tokenizer
    ids = (tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True)
           if chat else tokenizer.encode(prompt))
    params = SamplingParams(max_tokens=min(max_tokens, engine.max_seq_len - len(ids)), temperature=temperature,
                            top_p=top_p, seed=None if seed < 0 else seed)
    start = time.perf_counter()
    sample = stream(engine, ids, params, lambda t: print(t, end="", flush=True))
    seconds = time.perf_counter() - start
    print()
    note = f"{len(sample.token_ids)} tokens in {seconds:.2f}s ({len(sample.token_ids) / seconds:.1f} tok/s)"
    if engine.k:
        note += ", draft acceptance " + " ".join(f"{r:.2f}" for r in engine.stats.acceptance_rate)
    print(note, file=sys.stderr)


def chat(checkpoint: Path, max_tokens: int = 1024, temperature: float = 0.6, top_p: float = 0.95,
         system: str = "", speculative_tokens: int = -1, dtype: str = "") -> None:
    """Chat with CHECKPOINT in the terminal: replies stream in, reasoning is shown dimmed, the
    conversation is kept as history; /reset starts over, /exit (or Ctrl-D) quits."""
    engine = _load(checkpoint, speculative_tokens, dtype)
    tokenizer = engine.tokenizer
    console = Console(highlight=False, soft_wrap=True)
    history: list[dict] = [{"role": "system", "content": system}] if system else []
    console.print(f"[bold]mimo chat[/] with {checkpoint} - /reset clears the history, /exit quits")
    while True:
        try:
            line = console.input("[bold green]> [/]")
        except (EOFError, KeyboardInterrupt):
            break
        command = line.strip()
        if not command:
            continue
        if command == "/exit":
            break
        if command == "/reset":
            history = history[:1] if system else []
            console.print("[dim](history cleared)[/]")
            continue
        history.append({"role": "user", "content": line})
        text = tokenizer.apply_chat_template(history, add_generation_prompt=True, tokenize=False)
        prompt = tokenizer.encode(text)
        room = engine.max_seq_len - len(prompt)
        if room < 1:
            console.print("[red]the conversation no longer fits the context; /reset to start over[/]")
            history.pop()
            continue
        parser = ReasoningParser(thinking=text.rstrip().endswith(THINK_START))
        answer: list[str] = []

        def show(delta: str, final: bool = False) -> None:
            reasoning, content = parser.feed(delta, final)
            if reasoning:
                console.print(Text(reasoning, style="dim"), end="")
            if content:
                console.print(content, end="", markup=False)
                answer.append(content)

        params = SamplingParams(max_tokens=min(max_tokens, room), temperature=temperature, top_p=top_p)
        try:
            stream(engine, prompt, params, show)
            show("", final=True)
        except KeyboardInterrupt:
            console.print("[dim] (interrupted)[/]", end="")
        console.print()
        # Earlier turns keep only their answers, as MiMo's and Qwen3's templates drop old reasoning.
        history.append({"role": "assistant", "content": "".join(answer).strip()})
