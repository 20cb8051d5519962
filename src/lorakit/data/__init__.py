"""Data for LoRA fine-tuning: load classification and generative datasets, tokenize them, batch them.

```python
from lorakit.data import load_classification_data, load_generative_data
data = load_classification_data("rotten-tomatoes")          # or a file, a folder, a Hub name
data.train.texts[0], data.label_names[data.train.labels[0]]
chats = load_generative_data("chatterbot")                  # conversations for instruction tuning
```

Modules, each importing only those on lower lines::

    classification · generative        per task: columns, labels or conversations, carving, caps
    builtin · chatterbot               the builtin datasets, read as sources
    labels · messages                  class labels → indices; a messages cell → a conversation
    sources · policy · splits          a source name → split tables; the empty-row policy; seeded splitters
    readers · cells · options · types  a file → a table; a cell → text or missing; validated options; results
    wording                            how notes and errors count things and quote a library's error

Loaders take their options as keywords or, built and validated once, as `options=`
(`ClassificationOptions`, `GenerativeOptions`). Then `tokenize_split` and the batching of
`lorakit.data.batching` for classification; `tokenize_causal` / `tokenize_seq2seq`,
`pack_examples` and the collators of `lorakit.data.chat` for generation.
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
from lorakit.data.classification import load_classification_data
from lorakit.data.generative import GENERATIVE_BUILTINS, load_generative_data
from lorakit.data.options import ON_EMPTY_CHOICES, ClassificationOptions, DataOptions, GenerativeOptions
from lorakit.data.types import ClassificationData, ClassificationSplit, GenerativeData, GenerativeExample

__all__ = [
    "BUILTIN_DATASETS",
    "GENERATIVE_BUILTINS",
    "ON_EMPTY_CHOICES",
    "CausalCollator",
    "ClassificationData",
    "ClassificationOptions",
    "ClassificationSplit",
    "DataOptions",
    "GenerativeData",
    "GenerativeExample",
    "GenerativeOptions",
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
