"""Split a reply into its reasoning (between <think> and </think>) and its answer, as vLLM's
reasoning parsers do, both for a whole text and for a stream of text deltas."""

from __future__ import annotations

THINK_START, THINK_END = "<think>", "</think>"


class ReasoningParser:
    """Feed text deltas, get (reasoning_delta, content_delta) back. A tag split across deltas is held
    back until it is complete. `thinking=True` when the prompt already opened a <think> block."""

    def __init__(self, thinking: bool = False):
        self.thinking = thinking
        self.seen_content = False
        self._held = ""

    def feed(self, delta: str, final: bool = False) -> tuple[str, str]:
        text, self._held = self._held + delta, ""
        reasoning, content = [], []
        while text:
            tag = THINK_END if self.thinking else THINK_START
            at = text.find(tag)
            if at >= 0:
                (reasoning if self.thinking else content).append(text[:at])
                text = text[at + len(tag):]
                self.thinking = not self.thinking
                continue
            keep = 0 if final else _partial_suffix(text, tag)
            (reasoning if self.thinking else content).append(text[:len(text) - keep])
            self._held = text[len(text) - keep:]
            break
        return "".join(reasoning), "".join(content)


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of text that is a proper prefix of tag."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0


def split_reasoning(text: str, thinking: bool = False) -> tuple[str | None, str]:
    """Whole-text version: (reasoning or None when there was none, answer)."""
    parser = ReasoningParser(thinking)
    opened = thinking or THINK_START in text
    reasoning, content = parser.feed(text, final=True)
    return (reasoning.strip("\n") if opened else None), content.lstrip("\n") if opened else content
