"""Inference: a KV-cached, continuously batching engine with MTP self-speculative decoding.

    engine = Engine(model, max_batch_size=32)
    outs = engine.generate([[1, 2, 3]], SamplingParams(max_tokens=16, temperature=0))
    outs[0].samples[0].token_ids

`Engine.add_request / step / abort` is the incremental interface; `AsyncEngine` runs an engine on a
background thread for asyncio servers.
"""

from mimo.engine.async_engine import AsyncEngine, EngineBusy
from mimo.engine.engine import Engine, EngineStats, RequestOutput, Sample
from mimo.engine.sampling import SamplingParams

__all__ = ["AsyncEngine", "Engine", "EngineBusy", "EngineStats", "RequestOutput", "Sample", "SamplingParams"]
