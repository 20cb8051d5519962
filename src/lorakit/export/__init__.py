"""Export trained adapters: merge one into a standalone transformers folder, combine several into one."""

from lorakit.export.combine import combine_adapter_folders
from lorakit.export.merge import merge_to_folder, merged_model, summarize_model_folder
from lorakit.tasks.artifacts import AdapterArtifact, load_base_model, read_adapter_artifact

__all__ = [
    "AdapterArtifact",
    "combine_adapter_folders",
    "load_base_model",
    "merge_to_folder",
    "merged_model",
    "read_adapter_artifact",
    "summarize_model_folder",
]
