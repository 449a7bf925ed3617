"""FLOP and memory estimates of a training step, and the machine's measured matmul peak.

Used for the estimate printed before training starts and by benchmarks/train_throughput.py.
"""

from __future__ import annotations

import time

import torch

from mimo.config import MiMoConfig


def training_flops_per_token(config: MiMoConfig, seq_len: int, with_mtp: bool = True) -> float:
    """Forward + backward FLOPs per token (the usual 6 x matmul parameters + attention scores), counting
    the LM head once per output (main, and each MTP layer) and the MTP decoder blocks."""
    h, kv = config.hidden_size, config.num_key_value_heads * config.head_dim
    q = config.num_attention_heads * config.head_dim
    block = h * q + 2 * h * kv + q * h + 3 * h * config.intermediate_size
    attention = 2 * seq_len * q  # q.k and attn.v over the full window (the PaLM / nanoGPT convention: 12*L*q*T)
    mtp = config.num_nextn_predict_layers if with_mtp else 0
    per_token = (config.num_hidden_layers + mtp) * (block + attention) + (1 + mtp) * h * config.vocab_size
    per_token += mtp * 2 * h * h  # input_proj
    return 6.0 * per_token


def training_memory_bytes(params: int, config: MiMoConfig, tokens_per_micro_batch: int, with_mtp: bool = True,
                          bytes_per_activation: int = 4) -> dict[str, float]:
    """Rough fp32 AdamW training memory: weights + grads + 2 Adam moments, activations, logits."""
    layers = config.num_hidden_layers + (config.num_nextn_predict_layers if with_mtp else 0)
    # ~16 saved activations of width hidden (and ~3 of width intermediate) per token and layer.
    per_token_layer = 16 * config.hidden_size + 3 * config.intermediate_size
    activations = tokens_per_micro_batch * layers * per_token_layer * bytes_per_activation
    heads = 1 + (config.num_nextn_predict_layers if with_mtp else 0)
    logits = 3 * heads * tokens_per_micro_batch * config.vocab_size * 4  # logits, fp32 copy, grad
    return {"weights_and_optimizer": 16.0 * params, "activations": float(activations), "logits": float(logits)}


def matmul_peak_gflops(device: torch.device | str = "cpu", n: int = 1024, seconds: float = 0.3) -> float:
    """Achieved fp32 GFLOP/s of a square matmul: the practical peak that training is measured against."""
    device = torch.device(device)
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b  # warm-up
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        runs += 1
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * n**3 * runs / (time.perf_counter() - start) / 1e9
