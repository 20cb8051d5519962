"""The serving engine: requests queued, batched across adapters, and run on one shared base model.

adapters (what a served adapter is, the checks it passes) · registry (adapters loaded on demand,
LRU by bytes) · batcher (queue, worker thread, batches) · batch (what one batch runs with) ·
classify / generate (one batch of a task) · stream (text as it is generated) · engine (all of
it, for the HTTP layer).

Built on `lorakit.serve.kernels`; knows nothing of HTTP (`lorakit.serve.http` sits on top).
"""
