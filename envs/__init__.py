"""What is learned: the task registry, the common observation format, the vector env.

``envs`` knows nothing of the learner: it imports neither ``agents`` nor ``training``.
"""

from envs.recognition import HELDOUT_PAIRS, TRAIN_PAIRS
from envs.tasks import TASKS, TaskSpec, get_task, list_tasks, make, make_external
from envs.slots import TaskSlot
from envs.vector import MultiTaskVectorEnv
from envs.wrappers import FAMILIES, NOT_IN_VIEW, VOCAB, CommonObs, target_cell, tokenize

__all__ = [
    "FAMILIES",
    "HELDOUT_PAIRS",
    "NOT_IN_VIEW",
    "TASKS",
    "TRAIN_PAIRS",
    "VOCAB",
    "CommonObs",
    "MultiTaskVectorEnv",
    "TaskSlot",
    "TaskSpec",
    "get_task",
    "list_tasks",
    "make",
    "make_external",
    "target_cell",
    "tokenize",
]
