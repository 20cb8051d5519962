"""Serving adapters: many adapters on one base model, batched across adapters in one forward pass.

mixed (per-row adapters in one forward) · slots (adapters packed once for mixed batches) ·
adapters (what a served adapter is, checks) · registry (load on demand, LRU by bytes) · batcher
(queue, worker, batches) · classify / generate (one batch of a task) · stream (text as it is
generated) · engine (all of it, for the HTTP layer).
"""

from lorakit.serve.adapters import AdapterInfo
from lorakit.serve.batcher import Batcher
from lorakit.serve.engine import Engine, load_engine
from lorakit.serve.generate import Generation, GenerationHandle
from lorakit.serve.mixed import mixed_adapters, plan_rows
from lorakit.serve.registry import AdapterRegistry
from lorakit.serve.slots import AdapterSlots
from lorakit.serve.stream import TokenStream

__all__ = [
    "AdapterInfo",
    "AdapterRegistry",
    "AdapterSlots",
    "Batcher",
    "Engine",
    "Generation",
    "GenerationHandle",
    "TokenStream",
    "load_engine",
    "mixed_adapters",
    "plan_rows",
]
