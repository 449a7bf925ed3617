"""Slot-based KV cache: one row of positions per running sequence, for every layer.

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
        self.max_len = max_len
        shape = (num_layers, num_slots, num_kv_heads, min(initial_len, max_len), head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self._flat_views()

    def _flat_views(self) -> None:
        # Per layer, [slots * kv_heads * capacity, head_dim] views that `write` copies rows into.
        self.k_rows = [layer.view(-1, layer.shape[-1]) for layer in self.k]
        self.v_rows = [layer.view(-1, layer.shape[-1]) for layer in self.v]

    @property
    def capacity(self) -> int:
        return self.k.shape[3]

    def reserve(self, length: int) -> None:
        if length <= self.capacity:
            return
        if length > self.max_len:
            raise ValueError(f"KV cache position {length - 1} is past its capacity {self.max_len}")
        new_len = min(max(length, 2 * self.capacity), self.max_len)
        grow = (0, 0, 0, new_len - self.capacity)  # pad the time axis (dim 3 of 5)
        self.k = torch.nn.functional.pad(self.k, grow)
        self.v = torch.nn.functional.pad(self.v, grow)
        self._flat_views()

    def copy(self, src: int, dst: int, length: int) -> None:
        """Copy the first `length` positions of slot src into slot dst (prefix sharing, compaction)."""
        self.k[:, dst, :, :length] = self.k[:, src, :, :length]
        self.v[:, dst, :, :length] = self.v[:, src, :, :length]

    def rows(self, start: int, positions: torch.Tensor) -> torch.Tensor:
        """Flat rows of one layer's [slots * kv_heads * capacity, head_dim] view for slots start..start+B-1
        at positions [B, T], in (slot, position, kv head) order -> [B * T * kv_heads]."""
        _, _, n_kv_heads, capacity, _ = self.k.shape
        heads = torch.arange(n_kv_heads, device=positions.device)
        slots = torch.arange(start, start + positions.shape[0], device=positions.device)[:, None, None]
        return ((slots * n_kv_heads + heads) * capacity + positions[:, :, None]).reshape(-1)

    def write(self, layer: int, rows: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store keys/values [N, kv_heads, head_dim] at `rows` (from `rows`) of one layer."""
        D = self.k.shape[-1]
        self.k_rows[layer].index_copy_(0, rows, k.reshape(-1, D))
        self.v_rows[layer].index_copy_(0, rows, v.reshape(-1, D))

    def read(self, layer: int, start: int, count: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys/values of slots start..start+count-1, positions < length: [count, kv_heads, length, head_dim] views."""
        return self.k[layer, start:start + count, :, :length], self.v[layer, start:start + count, :, :length]


def attention_mask(positions: torch.Tensor, length: int) -> torch.Tensor:
    """[B, T] query positions -> [B, 1, T, length] boolean mask: a query sees keys at positions <= its own."""
    keys = torch.arange(length, device=positions.device)
    return (keys <= positions[..., None])[:, None]
