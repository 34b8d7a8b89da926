"""MultiTaskActorCritic: one network for every task.

    obs -> encoder under conditioning (FiLM from the mission, or concat / task id) -> features
        -> [LSTM memory] -> sharing (hard | MMoE | PLE) -> heads:
           policy (7 logits), value, recognition (per-cell labels, target cell),
           reward (UNREAL, on three consecutive steps)

The model learns the sizes it needs (vocabulary, number of tasks, image shape)
from the observation space; everything else comes from :class:`AgentConfig`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal, NamedTuple

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical

from agents.conditioning import CONDITIONINGS, MISSION_ENCODERS, Conditioning
from agents.encoders import Encoder
from agents.heads import ActorHead, CriticHead, RecognitionHead, RewardHead
from agents.sharing import SHARINGS

AUX_HEADS: tuple[str, ...] = ("recognition", "reward")
MEMORIES: tuple[str, ...] = ("none", "lstm")


@dataclass
class AgentConfig:
    """Architecture of the multi-task actor-critic."""

    conditioning: Literal["film", "concat", "task-id"] = "film"
    """How the task reaches the features: FiLM from the mission, mission concatenated, or task id only."""
    mission_encoder: Literal["gru", "bow"] = "gru"
    """How the mission's words become one vector: a GRU, or an order-aware bag of words (~10x cheaper)."""
    task_embedding: bool = False
    """Add a learned task-id embedding to the mission embedding (film and concat)."""
    sharing: Literal["hard", "mmoe", "ple"] = "hard"
    """Parameter sharing between heads: one trunk, mixture of experts, or progressive layered extraction."""
    num_experts: int = 4
    """Experts of MMoE; shared and per-family experts of PLE."""
    memory: Literal["none", "lstm"] = "none"
    """Recurrent memory over steps (truncated BPTT over rollout chunks)."""
    aux: str = "recognition,reward"
    """Auxiliary heads on the shared features, comma-separated: recognition, reward; or none."""
    hidden_size: int = 128
    """Width of the features, mission embedding and towers."""
    channels: int = 64
    """Channels of the encoder's last convolution (the two before it have half)."""

    @property
    def aux_heads(self) -> tuple[str, ...]:
        """The auxiliary heads named by :attr:`aux`."""
        if self.aux.strip().lower() in ("", "none"):
            return ()
        return tuple(name.strip() for name in self.aux.split(",") if name.strip())

    def validate(self) -> None:
        if self.conditioning not in CONDITIONINGS:
            raise ValueError(f"conditioning={self.conditioning!r} is unknown; known: {', '.join(CONDITIONINGS)}.")
        if self.mission_encoder not in MISSION_ENCODERS:
            raise ValueError(
                f"mission_encoder={self.mission_encoder!r} is unknown; known: {', '.join(MISSION_ENCODERS)}."
            )
        if self.sharing not in SHARINGS:
            raise ValueError(f"sharing={self.sharing!r} is unknown; known: {', '.join(SHARINGS)}.")
        if self.memory not in MEMORIES:
            raise ValueError(f"memory={self.memory!r} is unknown; known: {', '.join(MEMORIES)}.")
        unknown = [a for a in self.aux_heads if a not in AUX_HEADS]
        if unknown:
            raise ValueError(f"aux={self.aux!r} names unknown heads {unknown}; use any of {', '.join(AUX_HEADS)}, or none.")
        for name in ("num_experts", "hidden_size", "channels"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive integer.")


class ObsBatch(NamedTuple):
    """Observation tensors, on the model's device.

    Attributes:
        image: uint8 ``(B, 7, 7, 3)`` symbolic or ``(B, 56, 56, 3)`` pixels.
        direction: int64 ``(B,)``.
        mission: int64 ``(B, L)`` token ids.
        task: int64 ``(B,)`` task index.
        family: int64 ``(B,)`` 0 navigation, 1 recognition.
    """

    image: torch.Tensor
    direction: torch.Tensor
    mission: torch.Tensor
    task: torch.Tensor
    family: torch.Tensor

    @classmethod
    def from_numpy(cls, obs: dict[str, np.ndarray], device: torch.device | str) -> "ObsBatch":
        return cls(*(torch.as_tensor(np.asarray(obs[k]), device=device) for k in cls._fields))

    def index(self, idx: Any) -> "ObsBatch":
        return ObsBatch(*(t[idx] for t in self))


class ActOutput(NamedTuple):
    """What a rollout step needs. Shapes ``(B,)``; ``state`` is the memory after the step."""

    action: torch.Tensor
    logprob: torch.Tensor
    value: torch.Tensor
    state: tuple[torch.Tensor, torch.Tensor] | None


class EvalOutput(NamedTuple):
    """What the loss needs.

    Attributes:
        logprob, entropy, value: ``(B,)``.
        recognition: dict of recognition logits (see RecognitionHead) or None.
        reward: reward-prediction logits ``(W, 3)`` of the ``reward_obs`` windows, or None.
        log_probs: the policy's log-probabilities of every action ``(B, 7)``.
    """

    logprob: torch.Tensor
    entropy: torch.Tensor
    value: torch.Tensor
    recognition: dict[str, torch.Tensor] | None
    reward: torch.Tensor | None = None
    log_probs: torch.Tensor | None = None


def _space_info(space: gym.spaces.Dict) -> dict[str, Any]:
    try:
        return {
            "image_shape": tuple(int(s) for s in space["image"].shape),
            "vocab_size": int(space["mission"].high.max()) + 1,
            "mission_length": int(space["mission"].shape[0]),
            "num_tasks": int(space["task"].n),
        }
    except (KeyError, AttributeError, TypeError) as err:
        raise ValueError(
            f"observation space {space} is not the common task format "
            "(image, direction, mission, task, family): wrap the env with envs.make."
        ) from err


class MultiTaskActorCritic(nn.Module):
    """The multi-task agent.

    Args:
        observation_space: the common observation space (``envs.make(...).observation_space``).
        config: architecture choices.
    """

    def __init__(self, observation_space: gym.spaces.Dict | dict[str, Any], config: AgentConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or AgentConfig()
        config.validate()
        self.space_info = (
            dict(observation_space) if isinstance(observation_space, dict) else _space_info(observation_space)
        )
        shape = tuple(self.space_info["image_shape"])
        encoder = "symbolic" if shape == (7, 7, 3) else "pixels"
        if encoder == "pixels" and shape != (56, 56, 3):
            raise ValueError(f"image shape {shape} is neither the symbolic (7, 7, 3) nor the rgb (56, 56, 3) view.")
        hidden = config.hidden_size
        half = max(1, config.channels // 2)
        self.encoder = Encoder(encoder, channels=(half, half, config.channels))
        self.conditioning = Conditioning(
            config.conditioning,
            encoder=self.encoder,
            vocab_size=self.space_info["vocab_size"],
            num_tasks=self.space_info["num_tasks"],
            task_embedding=config.task_embedding,
            hidden=hidden,
            mission_encoder=config.mission_encoder,
            mission_length=self.space_info["mission_length"],
        )
        self.memory = nn.LSTMCell(hidden, hidden) if config.memory == "lstm" else None
        self.sharing = SHARINGS[config.sharing](hidden, hidden, context_dim=hidden, num_experts=config.num_experts)
        self.actor = ActorHead(hidden)
        self.critic = CriticHead(hidden)
        self.recognition = RecognitionHead(hidden) if "recognition" in config.aux_heads else None
        self.reward = RewardHead(hidden) if "reward" in config.aux_heads else None

    # ----------------------------------------------------------------- helpers
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def constructor_args(self) -> dict[str, Any]:
        """Everything needed to rebuild this model (saved with checkpoints)."""
        return {"space_info": dict(self.space_info), "config": asdict(self.config)}

    @classmethod
    def from_constructor_args(cls, args: dict[str, Any]) -> "MultiTaskActorCritic":
        return cls(dict(args["space_info"]), AgentConfig(**args["config"]))

    def shared_parameters(self) -> list[nn.Parameter]:
        """Parameters every task's loss flows through (encoder, conditioning, memory, sharing).

        The weight of :meth:`last_shared_layer` comes last, where GradNorm looks for it.
        """
        last = self.last_shared_layer().weight
        modules = [self.encoder, self.conditioning, self.memory, self.sharing]
        params = {id(p): p for m in modules if m is not None for p in m.parameters()}
        params.pop(id(last))
        return [*params.values(), last]

    def freeze_shared(self) -> list[str]:
        """Stop training what every task shares; returns the names of the frozen parameters.

        Frozen: encoder, mission encoder, FiLM/projection, memory, and the shared
        trunk or experts. Still trained: heads, the sharing gates and the
        task-id embedding (the task-specific parts).
        """
        frozen = []
        for name, param in self.named_parameters():
            shared = name.split(".")[0] in ("encoder", "conditioning", "memory", "sharing")
            specific = "gate" in name or name.startswith("conditioning.task.")
            if shared and not specific:
                param.requires_grad_(False)
                frozen.append(name)
        return frozen

    def last_shared_layer(self) -> nn.Linear:
        """The last shared weight layer (GradNorm measures gradient norms here)."""
        return self.sharing.last_shared_layer()

    def initial_state(self, batch: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        if self.memory is None:
            return None
        zeros = torch.zeros(batch, self.config.hidden_size, device=self.device)
        return zeros, zeros.clone()

    # ---------------------------------------------------------------- forward
    def _features(self, obs: ObsBatch):
        return self.conditioning(self.encoder, obs.image, obs.direction, obs.mission, obs.task)

    def _remember(self, z, state, episode_start, steps: int):
        """Run the LSTM over ``steps`` time-major steps of ``z`` ``(steps * B, D)``."""
        if self.memory is None:
            return z, None
        batch = z.shape[0] // steps
        h, c = state if state is not None else self.initial_state(batch)
        starts = episode_start.view(steps, batch, 1).to(z.dtype) if episode_start is not None else None
        outs = []
        for t, z_t in enumerate(z.view(steps, batch, -1)):
            if starts is not None:  # a new episode forgets the previous one
                h, c = h * (1 - starts[t]), c * (1 - starts[t])
            h, c = self.memory(z_t, (h, c))
            outs.append(h)
        return torch.cat(outs, dim=0), (h, c)

    def _heads_input(self, obs: ObsBatch, state=None, episode_start=None, steps: int = 1):
        z, ctx = self._features(obs)
        z, state = self._remember(z, state, episode_start, steps)
        return self.sharing(z, ctx, obs.family), state

    @torch.no_grad()
    def act(
        self,
        obs: ObsBatch,
        state: tuple[torch.Tensor, torch.Tensor] | None = None,
        episode_start: torch.Tensor | None = None,
        *,
        deterministic: bool = False,
    ) -> ActOutput:
        """One rollout step for a batch of slots."""
        towers, state = self._heads_input(obs, state, episode_start)
        dist = Categorical(logits=self.actor(towers["policy"]))
        action = dist.probs.argmax(-1) if deterministic else dist.sample()
        return ActOutput(action, dist.log_prob(action), self.critic(towers["value"]), state)

    def action_logits(
        self, obs: ObsBatch, state: tuple[torch.Tensor, torch.Tensor] | None = None, episode_start: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        """The policy's logits ``(B, 7)`` and the next memory state (for callers that sample themselves)."""
        towers, state = self._heads_input(obs, state, episode_start)
        return self.actor(towers["policy"]), state

    @torch.no_grad()
    def logits_and_value(self, obs: ObsBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``(B, 7)`` and values ``(B,)`` from one pass of the trunk (a memory-less agent, as served)."""
        towers, _ = self._heads_input(obs)
        return self.actor(towers["policy"]), self.critic(towers["value"])

    @torch.no_grad()
    def value(self, obs: ObsBatch, state=None, episode_start=None) -> torch.Tensor:
        """State values ``(B,)`` (for bootstrapping truncated episodes)."""
        towers, _ = self._heads_input(obs, state, episode_start)
        return self.critic(towers["value"])

    def forward(self, *args, **kwargs) -> EvalOutput:
        """:meth:`evaluate`: what the PPO update differentiates (and DistributedDataParallel wraps)."""
        return self.evaluate(*args, **kwargs)

    def evaluate(
        self,
        obs: ObsBatch,
        actions: torch.Tensor,
        *,
        state: tuple[torch.Tensor, torch.Tensor] | None = None,
        episode_start: torch.Tensor | None = None,
        steps: int = 1,
        reward_obs: ObsBatch | None = None,
        recognition_rows: int | None = None,
    ) -> EvalOutput:
        """Log-probabilities, entropy, values and aux predictions for the loss.

        With memory, ``obs`` holds ``steps`` time-major steps of ``B`` sequences
        (``steps * B`` rows), ``state`` their initial memory and
        ``episode_start`` where memory is reset.

        ``reward_obs`` (windows of 3 steps for the reward head, see
        :meth:`reward_logits`) go through the encoder in the same pass as
        ``obs``: one forward and backward for both instead of two.
        ``recognition_rows``: decode only the first rows of ``obs`` with the
        recognition head (its output layer is the model's largest; None: all).
        """
        n = obs.image.shape[0]
        both = obs if reward_obs is None else ObsBatch(*(torch.cat([a, b]) for a, b in zip(obs, reward_obs)))
        z, ctx = self._features(both)
        reward = None
        if self.memory is None:
            towers = self.sharing(z, ctx, both.family)
            if reward_obs is not None:
                reward = self._reward_from(towers["reward"][n:])
                towers = {head: h[:n] for head, h in towers.items()}
        else:
            main, _ = self._remember(z[:n], state, episode_start, steps)
            towers = self.sharing(main, ctx[:n], obs.family)
            if reward_obs is not None:  # the reward head reads features without memory
                reward = self._reward_from(self.sharing(z[n:], ctx[n:], reward_obs.family)["reward"])
        dist = Categorical(logits=self.actor(towers["policy"]))
        recognition = None
        if self.recognition is not None:
            recognition = self.recognition(towers["recognition"][:recognition_rows])
        return EvalOutput(
            dist.log_prob(actions), dist.entropy(), self.critic(towers["value"]), recognition, reward, dist.logits
        )

    def _reward_from(self, h: torch.Tensor) -> torch.Tensor:
        assert self.reward is not None, "reward predictions need the reward head (aux includes reward)"
        return self.reward(h.view(-1, 3, h.shape[-1]))

    def reward_logits(self, obs: ObsBatch) -> torch.Tensor:
        """UNREAL reward prediction for windows of 3 consecutive steps.

        ``obs`` holds ``B * 3`` rows, window-major (``[w0s0, w0s1, w0s2, w1s0, ...]``).
        Memory is skipped: the head reads the shared features of each step.
        Returns logits ``(B, 3)`` over (zero, positive, negative).
        """
        z, ctx = self._features(obs)
        return self._reward_from(self.sharing(z, ctx, obs.family)["reward"])

    # ------------------------------------------------------ SB3-style predict
    def predict(
        self,
        observation: dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """Stable-Baselines3's ``predict``: numpy in, ``(actions, state)`` out.

        Accepts one observation or a batch (as from a ``VecEnv``). With memory,
        ``state`` is ``(h, c)`` numpy arrays of shape ``(B, hidden)``; None
        starts fresh.
        """
        single = np.asarray(observation["image"]).ndim == 3
        if single:
            observation = {k: np.asarray(v)[None] for k, v in observation.items()}
        obs = ObsBatch.from_numpy(observation, self.device)
        torch_state = tuple(torch.as_tensor(s, device=self.device) for s in state) if state is not None else None
        starts = torch.as_tensor(np.asarray(episode_start), device=self.device) if episode_start is not None else None
        was_training = self.training
        self.eval()
        out = self.act(obs, torch_state, starts, deterministic=deterministic)
        self.train(was_training)
        actions = out.action.cpu().numpy()
        new_state = tuple(s.cpu().numpy() for s in out.state) if out.state is not None else None
        return (actions.squeeze(axis=0) if single else actions), new_state
