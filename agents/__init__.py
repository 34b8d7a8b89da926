"""What learns: the multi-task actor-critic, its losses, loss weighting and PPO.

``agents`` is driven, it does not drive: it never imports ``training``.
"""

from agents.model import AgentConfig, MultiTaskActorCritic, ObsBatch
from agents.persist import load
from agents.ppo import MultiTaskPPO, PPOConfig
from agents.weighting import WEIGHTERS, LossWeighter, make_weighter

__all__ = [
    "WEIGHTERS",
    "AgentConfig",
    "LossWeighter",
    "MultiTaskActorCritic",
    "MultiTaskPPO",
    "ObsBatch",
    "PPOConfig",
    "load",
    "make_weighter",
]
