"""Serving adapters: many adapters on one base model, batched across adapters in one forward pass.

    http/     the FastAPI app: routers, middleware, errors, request schemas, OpenAI shapes, metrics
      ↓
    engine/   adapters, registry (LRU by bytes), batcher, per-task batches, token streams, Engine
      ↓
    kernels/  slots (adapters packed once) · bgmv (the LoRA term) · mixed (per-row adapters in one forward)

Arrows point down only: the kernels know no requests, the engine knows no HTTP. `lorakit.serve`
exports the engine and the kernels; the HTTP app is `lorakit.serve.http.app.create_app`.
"""

from lorakit.serve.engine.adapters import AdapterInfo
from lorakit.serve.engine.batcher import Batcher
from lorakit.serve.engine.engine import Engine, load_engine
from lorakit.serve.engine.generate import Generation, GenerationHandle
from lorakit.serve.engine.registry import AdapterRegistry
from lorakit.serve.engine.stream import Piece, TokenLogprob, TokenStream
from lorakit.serve.kernels.mixed import mixed_adapters, plan_rows
from lorakit.serve.kernels.slots import AdapterSlots

__all__ = [
    "AdapterInfo",
    "AdapterRegistry",
    "AdapterSlots",
    "Batcher",
    "Engine",
    "Generation",
    "GenerationHandle",
    "Piece",
    "TokenLogprob",
    "TokenStream",
    "load_engine",
    "mixed_adapters",
    "plan_rows",
]
