"""Document sources, mixtures and sequence packing with document boundaries.

A *source* returns document number i as (token ids, loss mask) for any i >= 0, deterministically: the
built-in reasoning generator, a tokenized corpus (reshuffled every epoch from the seed) or tokenized
chats. A `PackedStream` draws documents from a weighted mixture of sources and packs them into rows of
exactly `seq_len` tokens. Every row carries document ids, and the model turns them into a
block-diagonal causal mask (`MiMoForCausalLM(..., document_ids=...)`), so attention never crosses from
one packed document into another and positions restart at each document.

Packing is best-fit over a small window of pending documents: a row takes any pending document that
still fits, and is padded (labels -100) only when none does. A document longer than `seq_len` is cut
into `seq_len`-token pieces for pretraining, and is an error for SFT (a cut conversation loses the
answer it is supposed to teach).

Exact resume: the whole position of a stream is `state_dict()` (documents drawn, per-source cursors,
the pending window). Restoring it and asking for the next batch gives the same tokens as the run that
was never interrupted.
"""

from __future__ import annotations

import random
from typing import Protocol

import torch

from mimo.data.reasoning import mixed_problem
from mimo.model import IGNORE_INDEX

PACKING_WINDOW = 8  # pending documents considered when filling a row


class Source(Protocol):
    def document(self, index: int) -> tuple[list[int], list[bool] | None]: ...


class ReasoningSource:
    """The built-in reasoning problems (train split), as plain text (pretraining) or as chats (SFT)."""

    def __init__(self, tokenizer, families: list[str], difficulties: list[int], seed: int, chat: bool):
        self.tokenizer, self.families, self.difficulties, self.seed, self.chat = (
            tokenizer, families, difficulties, seed, chat)
        self.eot = tokenizer.token_to_id("<|endoftext|>")

    def document(self, index: int) -> tuple[list[int], list[bool] | None]:
        problem = mixed_problem(self.families, self.difficulties, "train", self.seed, index)
        if self.chat:
            return self.tokenizer.encode_chat(problem.messages())
        return self.tokenizer.encode(problem.text()) + [self.eot], None


class ListSource:
    """Pre-tokenized documents, visited in a fresh seeded order every epoch."""

    def __init__(self, documents: list[tuple[list[int], list[bool] | None]], seed: int):
        if not documents:
            raise ValueError("a source needs at least one document")
        self.documents, self.seed = documents, seed
        self._epoch, self._order = -1, []

    def document(self, index: int) -> tuple[list[int], list[bool] | None]:
        epoch, i = divmod(index, len(self.documents))
        if epoch != self._epoch:
            self._epoch, self._order = epoch, list(range(len(self.documents)))
            random.Random(f"{self.seed}:epoch:{epoch}").shuffle(self._order)
        return self.documents[self._order[i]]


class PackedStream:
    """Rows of `seq_len` tokens packed from a weighted mixture of sources; see the module docstring."""

    def __init__(self, sources: dict[str, Source], weights: dict[str, float], seq_len: int, seed: int,
                 pad_id: int, split_long_documents: bool):
        if not sources or set(weights) != set(sources) or min(weights.values()) < 0 or sum(weights.values()) <= 0:
            raise ValueError(f"mixture weights {weights} must be non-negative, sum above 0, and cover the "
                             f"sources {sorted(sources)}")
        self.sources, self.seq_len, self.seed, self.pad_id = sources, seq_len, seed, pad_id
        self.names, self.weights = sorted(sources), [weights[n] for n in sorted(sources)]
        self.split_long_documents = split_long_documents
        self.drawn = 0  # documents drawn from the mixture so far
        self.cursors = {name: 0 for name in self.names}
        self.pending: list[tuple[list[int], list[bool]]] = []

    def _draw(self) -> None:
        """Move the next document(s) of the mixture into the pending window."""
        name = random.Random(f"{self.seed}:pick:{self.drawn}").choices(self.names, self.weights)[0]
        self.drawn += 1
        ids, mask = self.sources[name].document(self.cursors[name])
        where = f"document {self.cursors[name]} of source {name!r}"
        self.cursors[name] += 1
        mask = [True] * len(ids) if mask is None else list(mask)
        if len(ids) > self.seq_len and not self.split_long_documents:
            raise ValueError(f"{where} has {len(ids)} tokens, more than seq_len={self.seq_len}; raise seq_len "
                             f"or shorten the data")
        for start in range(0, len(ids), self.seq_len):
            self.pending.append((ids[start:start + self.seq_len], mask[start:start + self.seq_len]))

    def next_row(self) -> tuple[list[int], list[int], list[int]]:
        """(input ids, labels, document ids), each exactly seq_len long."""
        ids: list[int] = []
        labels: list[int] = []
        docs: list[int] = []
        n_docs = 0
        while True:
            while len(self.pending) < PACKING_WINDOW:
                self._draw()
            space = self.seq_len - len(ids)
            fit = next((i for i, (d, _) in enumerate(self.pending) if len(d) <= space), None)
            if fit is None:
                break
            doc, mask = self.pending.pop(fit)
            docs += [n_docs] * len(doc)
            n_docs += 1
            ids += doc
            labels += [t if m else IGNORE_INDEX for t, m in zip(doc, mask)]
        pad = self.seq_len - len(ids)
        return ids + [self.pad_id] * pad, labels + [IGNORE_INDEX] * pad, docs + [n_docs] * pad

    def next_batch(self, batch_size: int) -> dict[str, torch.Tensor]:
        rows = [self.next_row() for _ in range(batch_size)]
        return {key: torch.tensor([r[i] for r in rows]) for i, key in
                enumerate(("input_ids", "labels", "document_ids"))}

    def state_dict(self) -> dict:
        return {"drawn": self.drawn, "cursors": dict(self.cursors), "pending": [list(p) for p in self.pending]}

    def load_state_dict(self, state: dict) -> None:
        self.drawn, self.cursors = state["drawn"], dict(state["cursors"])
        self.pending = [(list(ids), list(mask)) for ids, mask in state["pending"]]
