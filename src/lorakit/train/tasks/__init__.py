"""The training tasks: what the one training loop needs to know about each kind of model."""

from lorakit.train.config import TrainConfig
from lorakit.train.tasks.base import Task, TaskData
from lorakit.train.tasks.classification import ClassificationTask
from lorakit.train.tasks.generative import CausalLMTask, Seq2SeqTask

TASKS: dict[str, type[Task]] = {"classification": ClassificationTask, "causal-lm": CausalLMTask, "seq2seq": Seq2SeqTask}


def task_for(config: TrainConfig) -> Task:
    """The task object for `config.task`."""
    return TASKS[config.task](config)


__all__ = ["TASKS", "CausalLMTask", "ClassificationTask", "Seq2SeqTask", "Task", "TaskData", "task_for"]
