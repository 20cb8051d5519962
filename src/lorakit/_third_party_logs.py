"""Silence third-party warnings a lorakit user cannot act on. Imported first by `lorakit`.

transformers imports torchao whenever it is installed; torchao 0.18 then warns about its CUDA-only
kernels on a CPU machine, and torch 2.13 about a deprecated registration inside torchao.
bitsandbytes (an optional CUDA backend of `--quantize bnb-nf4`), when installed, reports on every
import that an optional CPU kernel package is missing.
"""

import logging

logging.getLogger("torchao").setLevel(logging.ERROR)
logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
