"""Export trained adapters: merge one into a standalone transformers folder, combine several into one."""

from lorakit.export.combine import combine_adapter_folders
from lorakit.export.merge import merge_to_folder, merged_model, summarize_model_folder

__all__ = ["combine_adapter_folders", "merge_to_folder", "merged_model", "summarize_model_folder"]
