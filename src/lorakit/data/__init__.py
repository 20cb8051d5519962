"""Data for LoRA fine-tuning: load text-classification datasets, tokenize them, batch them.

```python
from lorakit.data import load_classification_data
data = load_classification_data("rotten-tomatoes")          # or a file, a folder, a Hub name
data.train.texts[0], data.label_names[data.train.labels[0]]
```

Conversations for instruction tuning and seq2seq: `load_generative_data("chatterbot")` (or a file,
folder, Hub name), then `tokenize_causal` / `tokenize_seq2seq`, `pack_examples` and the collators
of `lorakit.data.chat`.
"""

from lorakit.data.batching import LengthGroupedSampler, pad_collate, padding_fraction, tokenize_split
from lorakit.data.builtin import BUILTIN_DATASETS
from lorakit.data.chat import (
    CausalCollator,
    Seq2SeqCollator,
    generation_prompt,
    pack_examples,
    tokenize_causal,
    tokenize_seq2seq,
)
from lorakit.data.generative import GENERATIVE_BUILTINS, GenerativeData, GenerativeExample, load_generative_data
from lorakit.data.load import load_classification_data
from lorakit.data.types import ClassificationData, ClassificationSplit

__all__ = [
    "BUILTIN_DATASETS",
    "GENERATIVE_BUILTINS",
    "CausalCollator",
    "ClassificationData",
    "ClassificationSplit",
    "GenerativeData",
    "GenerativeExample",
    "LengthGroupedSampler",
    "Seq2SeqCollator",
    "generation_prompt",
    "load_classification_data",
    "load_generative_data",
    "pack_examples",
    "pad_collate",
    "padding_fraction",
    "tokenize_causal",
    "tokenize_seq2seq",
    "tokenize_split",
]
