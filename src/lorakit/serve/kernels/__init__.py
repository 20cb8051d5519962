"""Mixed-adapter compute: every row of one forward pass on its own adapter, nothing of serving around it.

slots (`AdapterSlots`: adapters packed once, per layer, by slot) · bgmv (the LoRA term of a mixed
batch from those stacks) · mixed (`mixed_adapters`: the row plan and the forward passes that use it).

Nothing here imports `lorakit.serve.engine` or `lorakit.serve.http`: the kernels know no requests.
"""
