"""The training tasks: what the one training loop needs to know about each kind of model."""

from lorakit.train.config import TrainConfig
from lorakit.train.tasks.base import LossModule, Outcome, Task, TaskData
from lorakit.train.tasks.classification import ClassificationTask
from lorakit.train.tasks.generative import CausalLMTask, GenerativeTask, Seq2SeqTask

_BY_KIND: dict = {task.kind: task for task in (ClassificationTask, CausalLMTask, Seq2SeqTask)}


def task_for(config: TrainConfig) -> Task:
    """The training task for `config.task`."""
    return _BY_KIND[config.task](config)


__all__ = [
    "CausalLMTask",
    "ClassificationTask",
    "GenerativeTask",
    "LossModule",
    "Outcome",
    "Seq2SeqTask",
    "Task",
    "TaskData",
    "task_for",
]
