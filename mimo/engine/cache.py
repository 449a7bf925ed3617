"""Slot-based KV cache: one row of positions per running sequence, for every layer.

Keys and values share one tensor [layers, slots, 2 * kv_heads, capacity, head_dim] (keys in the
first kv_heads), so a layer stores a step's keys and values with one `index_copy_` straight from the
projection's [tokens, 2 * kv_heads, head_dim] layout.

The engine keeps its running sequences compact in slots 0..B-1 (a finished sequence's slot is filled
by moving the last one into it), so a batched step reads `cache[:B]` as a view and never gathers
(the reads and writes live in mimo/engine/runner.py).
The time axis grows by doubling on demand up to `max_len`, so a server sized for long contexts does
not pay for them until a request needs them.

Entries past a sequence's length may hold stale values from an earlier occupant or a rejected draft;
the attention mask only ever lets a query at position p see keys at positions <= p, and every such
key has been rewritten for the current sequence before it is read.
"""

from __future__ import annotations

import torch


class KVCache:
    def __init__(self, num_layers: int, num_slots: int, num_kv_heads: int, head_dim: int, max_len: int,
                 dtype: torch.dtype, device: torch.device, initial_len: int = 256):
        self.max_len, self.n_kv_heads = max_len, num_kv_heads
        shape = (num_layers, num_slots, 2 * num_kv_heads, min(initial_len, max_len), head_dim)
        self.kv = torch.zeros(shape, dtype=dtype, device=device)
        self._flat_views()

    def _flat_views(self) -> None:
        # Per layer, a [slots * 2 * kv_heads * capacity, head_dim] view that `write` copies rows into.
        self.flat = [layer.view(-1, layer.shape[-1]) for layer in self.kv]

    @property
    def capacity(self) -> int:
        return self.kv.shape[3]

    def reserve(self, length: int) -> None:
        if length <= self.capacity:
            return
        if length > self.max_len:
            raise ValueError(f"KV cache position {length - 1} is past its capacity {self.max_len}")
        new_len = min(max(length, 2 * self.capacity), self.max_len)
        self.kv = torch.nn.functional.pad(self.kv, (0, 0, 0, new_len - self.capacity))  # the time axis
        self._flat_views()

    def copy(self, src: int, dst: int, length: int) -> None:
        """Copy the first `length` positions of slot src into slot dst (prefix sharing, compaction)."""
        self.kv[:, dst, :, :length] = self.kv[:, src, :, :length]

    def rows(self, start: int, positions: torch.Tensor) -> torch.Tensor:
        """Rows of a layer's flat view for slots start..start+B-1 at positions [B, T], in (slot, position,
        head) order -> [B * T * 2 * kv_heads]."""
        heads, capacity = self.kv.shape[2], self.capacity
        head = torch.arange(heads, device=positions.device)
        slot = torch.arange(start, start + positions.shape[0], device=positions.device)[:, None, None]
        return ((slot * heads + head) * capacity + positions[:, :, None]).reshape(-1)

    def write(self, layer: int, rows: torch.Tensor, kv: torch.Tensor) -> None:
        """Store keys then values, [N, 2 * kv_heads, head_dim], at `rows` of one layer."""
        self.flat[layer].index_copy_(0, rows, kv.reshape(-1, kv.shape[-1]))

    def read(self, layer: int, start: int, count: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of slots start..start+count-1 below `length`: [count, kv_heads, length, head_dim] views."""
        H = self.n_kv_heads
        return self.kv[layer, start:start + count, :H, :length], self.kv[layer, start:start + count, H:, :length]


def attention_mask(positions: torch.Tensor, length: int) -> torch.Tensor:
    """[B, T] query positions -> [B, 1, T, length] boolean mask: a query sees keys at positions <= its own."""
    keys = torch.arange(length, device=positions.device)
    return (keys <= positions[..., None])[:, None]
