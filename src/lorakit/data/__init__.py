"""Data for LoRA fine-tuning: load text-classification datasets, tokenize them, batch them.

```python
from lorakit.data import load_classification_data
data = load_classification_data("rotten-tomatoes")          # or a file, a folder, a Hub name
data.train.texts[0], data.label_names[data.train.labels[0]]
```
"""

from lorakit.data.batching import LengthGroupedSampler, pad_collate, padding_fraction, tokenize_split
from lorakit.data.builtin import BUILTIN_DATASETS
from lorakit.data.load import load_classification_data
from lorakit.data.types import ClassificationData, ClassificationSplit

__all__ = [
    "BUILTIN_DATASETS",
    "ClassificationData",
    "ClassificationSplit",
    "LengthGroupedSampler",
    "load_classification_data",
    "pad_collate",
    "padding_fraction",
    "tokenize_split",
]
