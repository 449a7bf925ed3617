"""The MiMo model: a Qwen2-style decoder plus multi-token-prediction (MTP) layers, in plain PyTorch.

Architecture (mimo-spec.md section 1):
- pre-RMSNorm decoder blocks: GQA attention with q/k/v bias (no o_proj bias) and RoPE, SwiGLU MLP;
- a final RMSNorm and an (untied, unless the config ties it) LM head;
- `num_nextn_predict_layers` MTP layers. Each one reads the trunk's hidden state h_t taken *before* the
  final norm and the embedding of a future token, and is a full decoder block of its own:

      x = input_proj(cat([hidden_layernorm(h_t), token_layernorm(embed(x_{t+k+1}))]))   # hidden first
      x = decoder_block(x);  logits = lm_head(final_layernorm(x))                       # predicts x_{t+k+2}

  All MTP layers read the trunk's h (the "parallel" wiring of the report's Fig. 2); they share the
  trunk's embedding and LM head, which is why the checkpoint stores neither for them.

Module and parameter names equal the tensor names of the published checkpoints, so a state_dict is
a Hugging Face checkpoint as is (see mimo/checkpoint.py).

Attention goes through `scaled_dot_product_attention`. This file is the reference forward used for
training and scoring; the inference engine (mimo/engine/runner.py) runs the same math over these very
parameters with a KV cache and fused projections, and is tested against this forward.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mimo.config import MiMoConfig

# MiMo's published MTP loss weight for most of pretraining (0.1 in the last stretch); recipes schedule it.
MTP_LOSS_WEIGHT = 0.3
IGNORE_INDEX = -100


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in fp32 and scale after casting back, exactly as Qwen2 does, so bf16 logits match.
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


class RotaryEmbedding(nn.Module):
    """RoPE tables computed from explicit position ids, so any position layout (padding, packing,
    a KV cache at an offset) gets the right rotation."""

    def __init__(self, head_dim: int, theta: float):
        super().__init__()
        self.head_dim, self.theta = head_dim, theta
        self.register_buffer("inv_freq", self._inv_freq(), persistent=False)

    def _inv_freq(self, device: torch.device | None = None) -> torch.Tensor:
        exponents = torch.arange(0, self.head_dim, 2, dtype=torch.int64, device=device).float() / self.head_dim
        return 1.0 / (self.theta**exponents)

    def reset(self, device: torch.device) -> None:
        """Recompute the table (needed after building the model on the meta device)."""
        self.inv_freq = self._inv_freq(device)

    def forward(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = position_ids[..., None].float() * self.inv_freq  # [B, T, D/2]
        emb = torch.cat([freqs, freqs], dim=-1)
        return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # x: [B, H, T, D]; cos/sin: [B, T, D] -> broadcast over heads.
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    return x * cos + rotate_half(x) * sin


class Attention(nn.Module):
    def __init__(self, config: MiMoConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = (
            config.num_attention_heads, config.num_key_value_heads, config.head_dim)
        q_dim, kv_dim = self.n_heads * self.head_dim, self.n_kv_heads * self.head_dim
        self.q_proj = nn.Linear(config.hidden_size, q_dim, bias=config.attention_bias)
        self.k_proj = nn.Linear(config.hidden_size, kv_dim, bias=config.attention_bias)
        self.v_proj = nn.Linear(config.hidden_size, kv_dim, bias=config.attention_bias)
        self.o_proj = nn.Linear(q_dim, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        # mask=None means plain causal attention (SDPA's fused path, the common case in training).
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None, enable_gqa=True)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim))


class MLP(nn.Module):
    def __init__(self, config: MiMoConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, config: MiMoConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Attention(config)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = MLP(config)

    def forward(self, x, cos, sin, mask) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class MTPLayer(DecoderLayer):
    """One multi-token-prediction layer: a decoder block fed by [norm(h_t), norm(embed(next token))]."""

    def __init__(self, config: MiMoConfig):
        super().__init__(config)
        self.token_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.hidden_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.input_proj = nn.Linear(2 * config.hidden_size, config.hidden_size, bias=False)
        self.final_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, hidden, next_embeds, cos, sin, mask) -> torch.Tensor:
        """hidden: the trunk's pre-final-norm state at t; next_embeds: embedding of the token MTP conditions
        on. Returns the normalised state to feed the shared LM head."""
        x = self.input_proj(torch.cat([self.hidden_layernorm(hidden), self.token_layernorm(next_embeds)], dim=-1))
        return self.final_layernorm(super().forward(x, cos, sin, mask))


class MiMoModel(nn.Module):
    """Embedding, decoder stack and final norm; MTP layers live here too (checkpoint prefix `model.`)."""

    def __init__(self, config: MiMoConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mtp_layers = nn.ModuleList(MTPLayer(config) for _ in range(config.num_nextn_predict_layers))
        self.rotary = RotaryEmbedding(config.head_dim, config.rope_theta)

    def forward(self, input_ids, position_ids, mask):
        """Returns (pre-final-norm hidden states, (cos, sin)) so MTP layers can reuse both."""
        x = self.embed_tokens(input_ids)
        cos, sin = self.rotary(position_ids, x.dtype)
        for layer in self.layers:
            x = layer(x, cos, sin, mask)
        return x, (cos, sin)


@dataclass
class ModelOutput:
    logits: torch.Tensor  # [B, T, V]
    mtp_logits: list[torch.Tensor] = field(default_factory=list)  # one [B, T, V] per MTP layer
    loss: torch.Tensor | None = None  # main_loss + mtp_loss_weight * mtp_loss
    main_loss: torch.Tensor | None = None
    mtp_loss: torch.Tensor | None = None  # mean over MTP layers
    hidden_states: torch.Tensor | None = None  # trunk output before the final norm


def attention_mask_to_4d(attention_mask: torch.Tensor) -> torch.Tensor:
    """[B, T] 1/0 padding mask -> [B, 1, T, T] boolean causal mask (True = may attend).

    Padding queries attend to themselves only: a fully masked row would make SDPA return NaN, and
    NaN in a padding row can leak into real rows through the backward pass."""
    B, T = attention_mask.shape
    keep = attention_mask.bool()
    causal = torch.ones(T, T, dtype=torch.bool, device=attention_mask.device).tril()
    mask = causal[None] & keep[:, None, :]
    mask = mask | torch.eye(T, dtype=torch.bool, device=attention_mask.device)[None]
    return mask[:, None]


def document_mask(document_ids: torch.Tensor) -> torch.Tensor:
    """[B, T] ids of packed documents -> [B, 1, T, T] block-diagonal causal mask (True = may attend):
    a token sees only earlier tokens of its own document, so packed sequences never leak into each other."""
    T = document_ids.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool, device=document_ids.device).tril()
    return (causal[None] & (document_ids[:, :, None] == document_ids[:, None, :]))[:, None]


def positions_from_documents(document_ids: torch.Tensor) -> torch.Tensor:
    """Positions restart at 0 at the first token of every packed document (documents are contiguous)."""
    idx = torch.arange(document_ids.shape[1], device=document_ids.device).expand_as(document_ids)
    starts = torch.ones_like(document_ids, dtype=torch.bool)
    starts[:, 1:] = document_ids[:, 1:] != document_ids[:, :-1]
    return idx - torch.cummax(torch.where(starts, idx, 0), dim=1).values


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Real tokens get positions 0..n-1 whatever the padding side, so padding never shifts RoPE."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def shifted_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, shift: int) -> torch.Tensor:
    """Cross-entropy of logits[:, t] against labels[:, t + shift], averaged over non-ignored targets."""
    T = labels.shape[1]
    logits, targets = logits[:, : T - shift], labels[:, shift:]
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1),
                           ignore_index=IGNORE_INDEX)


class MiMoForCausalLM(nn.Module):
    def __init__(self, config: MiMoConfig):
        super().__init__()
        self.config = config
        self.model = MiMoModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)

    # ---- forward ------------------------------------------------------------------------------

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        mtp_loss_weight: float = MTP_LOSS_WEIGHT,
        with_mtp: bool = True,
        document_ids: torch.Tensor | None = None,
    ) -> ModelOutput:
        """Full-sequence forward for training and scoring.

        `labels` follow the Hugging Face convention (same positions as input_ids, shifted inside;
        IGNORE_INDEX = -100 is skipped; padding positions are ignored automatically). MTP layer k's
        logits at position t predict token t+k+2; its last k+1 positions have no target and are padding.

        `document_ids` [B, T] marks packed documents (contiguous runs of equal ids): attention stays within
        a document and positions restart at each one unless `position_ids` are given. The built-in loss does
        not know documents; packed training masks cross-document targets itself (mimo/train/loop.py).
        """
        if attention_mask is not None and bool(attention_mask.all()):
            attention_mask = None  # no padding: take SDPA's fused causal path
        if position_ids is None and document_ids is not None:
            position_ids = positions_from_documents(document_ids)
        if position_ids is None:
            position_ids = (positions_from_mask(attention_mask) if attention_mask is not None else
                            torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids))
        mask = attention_mask_to_4d(attention_mask) if attention_mask is not None else None
        if document_ids is not None:
            mask = document_mask(document_ids) if mask is None else mask & document_mask(document_ids)

        hidden, (cos, sin) = self.model(input_ids, position_ids, mask)
        logits = self.lm_head(self.model.norm(hidden))
        mtp_logits = [self.lm_head(y) for y in self.mtp_forward(hidden, input_ids, cos, sin, mask)] if with_mtp else []
        out = ModelOutput(logits=logits, mtp_logits=mtp_logits, hidden_states=hidden)

        if labels is not None:
            if attention_mask is not None:
                labels = labels.masked_fill(attention_mask == 0, IGNORE_INDEX)
            out.main_loss = shifted_cross_entropy(logits, labels, shift=1)
            out.loss = out.main_loss
            usable = [(k, lg) for k, lg in enumerate(mtp_logits) if labels.shape[1] > k + 2]
            if usable:
                out.mtp_loss = torch.stack([shifted_cross_entropy(lg, labels, shift=k + 2) for k, lg in usable]).mean()
                out.loss = out.main_loss + mtp_loss_weight * out.mtp_loss
        return out

    def mtp_forward(self, hidden, input_ids, cos, sin, mask) -> list[torch.Tensor]:
        """Run every MTP layer over a full sequence; layer k pairs h_t with embed(x_{t+k+1})."""
        outputs = []
        for k, layer in enumerate(self.model.mtp_layers):
            # Shift the tokens left by k+1; the tail has no future token, so it gets token 0 (ignored by the loss).
            future = F.pad(input_ids[:, k + 1:], (0, k + 1), value=0)
            outputs.append(layer(hidden, self.model.embed_tokens(future), cos, sin, mask))
        return outputs

    # ---- bookkeeping --------------------------------------------------------------------------

    def num_parameters(self) -> dict[str, int]:
        """Parameter counts: the trunk (embedding, decoder, norm, head) and the MTP layers."""
        seen, counts = set(), {"trunk": 0, "mtp": 0}
        for name, p in self.named_parameters():
            if id(p) in seen:
                continue
            seen.add(id(p))
            counts["mtp" if name.startswith("model.mtp_layers.") else "trunk"] += p.numel()
        counts["total"] = counts["trunk"] + counts["mtp"]
        return counts

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.lm_head.weight.dtype

    # ---- checkpoints (Hugging Face layout; implementation in mimo/checkpoint.py) ----------------

    @classmethod
    def from_pretrained(cls, path: str | Path, dtype: torch.dtype | str | None = None,
                        device: torch.device | str = "cpu") -> "MiMoForCausalLM":
        from mimo.checkpoint import load_model
        return load_model(path, dtype=dtype, device=device)

    def save_pretrained(self, path: str | Path, max_shard_size: int | str = "5GB", dtype: Any = None) -> None:
        from mimo.checkpoint import save_model
        save_model(self, path, max_shard_size=max_shard_size, dtype=dtype)
