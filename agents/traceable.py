"""The exported policy's interface and :class:`PolicyModule`, the agent as a traceable function.

Inputs (:data:`INPUT_NAMES`), every one with a dynamic batch axis ``B``:

* ``image``: uint8 ``(B, 7, 7, 3)`` symbolic view (``(B, 56, 56, 3)`` for an
  ``obs=rgb`` agent), as :class:`envs.wrappers.CommonObs` gives it;
* ``direction``: int64 ``(B,)``;
* ``mission``: int64 ``(B, L)`` token ids (:func:`envs.wrappers.tokenize`),
  ``L = model.space_info["mission_length"]`` fixed;
* ``task``: int64 ``(B,)`` task index; ``family``: int64 ``(B,)`` 0 navigation,
  1 recognition.

Outputs (:data:`OUTPUT_NAMES`): ``logits`` float32 ``(B, 7)`` and ``value``
float32 ``(B,)``. An agent with ``memory=lstm`` takes three more inputs
(:data:`STATE_INPUT_NAMES`): ``state_h`` and ``state_c`` float32 ``(B, hidden)``
(the previous step's ``next_state_*``; zeros at the first step) and
``episode_start`` bool ``(B,)`` (True where an episode begins: that row's state
is zeroed first, as ``model.act(obs, state, episode_start)`` does), and gives
two more outputs, ``next_state_h`` and ``next_state_c``
(:data:`STATE_OUTPUT_NAMES`).

The agent's own forward cannot be traced: its mission encoder deduplicates
rows with numpy and caches embeddings. :class:`PolicyModule` computes the same
function from the agent's submodules with traceable torch ops (the GRU over
every row at the padded length, each row's state after its last word); the
rest (encoder, conditioning, sharing, heads) traces as it is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from agents.model import MultiTaskActorCritic

INPUT_NAMES: tuple[str, ...] = ("image", "direction", "mission", "task", "family")
OUTPUT_NAMES: tuple[str, ...] = ("logits", "value")
STATE_INPUT_NAMES: tuple[str, ...] = ("state_h", "state_c", "episode_start")
STATE_OUTPUT_NAMES: tuple[str, ...] = ("next_state_h", "next_state_c")
OPSET = 17
FORMAT = "omnigrid-policy-1"
"""Version of the exported interface (names, shapes, metadata); bumped when any of them changes meaning."""
METADATA_FILE = "omnigrid.json"
"""The TorchScript extra file holding :func:`metadata`."""


class PolicyModule(nn.Module):
    """``MultiTaskActorCritic`` as a traceable ``forward(image, direction, mission, task, family) -> (logits, value)``.

    Same function as ``model.action_logits(obs)[0]`` and ``model.value(obs)``
    (with memory: ``action_logits(obs, (state_h, state_c), episode_start)``), written with
    ops that ``torch.jit.trace`` and the ONNX exporter follow for any batch size.

    Args:
        model: the agent; it is shared, not copied (put it in eval mode).
    """

    def __init__(self, model: MultiTaskActorCritic) -> None:
        super().__init__()
        self.model = model
        self.recurrent = model.memory is not None

    # ------------------------------------------------------------- mission
    def _mission(self, tokens: torch.Tensor) -> torch.Tensor:
        """``MissionEncoder._encode`` without the numpy row deduplication: ``(B, L) -> (B, hidden)``."""
        encoder = self.model.conditioning.mission
        lengths = (tokens != 0).sum(dim=1).clamp(min=1)  # (B,)
        words = encoder.embed(tokens)  # (B, L, E)
        if encoder.kind == "gru":
            # A GRU's output at step t reads steps <= t only: the padded length gives the same states.
            out, _ = encoder.gru(words)  # (B, L, hidden)
            index = (lengths - 1).view(-1, 1, 1).expand(-1, 1, out.shape[-1])
            return out.gather(1, index).squeeze(1)
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        h = encoder.word(words + encoder.position(positions))  # (B, L, hidden), >= 0
        # Padding masked to 0 never beats a word (>= 0), so the max equals the trimmed one.
        h = h * (positions.unsqueeze(0) < lengths.unsqueeze(1)).unsqueeze(-1).to(h.dtype)
        return encoder.out(h.amax(dim=1))

    def _context(self, mission: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        cond = self.model.conditioning
        ctx = self._mission(mission) if cond.mission is not None else None
        if cond.task is not None:
            ctx = cond.task(task) if ctx is None else ctx + cond.task(task)
        assert ctx is not None, "a conditioning has a mission encoder or a task embedding"
        return ctx

    def _lstm(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``nn.LSTMCell`` written out (its fused op exports as a chunk of unknown size). Gates in torch's order i, f, g, o."""
        cell = self.model.memory
        gates = F.linear(x, cell.weight_ih, cell.bias_ih) + F.linear(h, cell.weight_hh, cell.bias_hh)
        n = cell.hidden_size
        i, f, g, o = (gates[:, k * n : (k + 1) * n] for k in range(4))
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c

    # ------------------------------------------------------------- forward
    def forward(
        self,
        image: torch.Tensor,
        direction: torch.Tensor,
        mission: torch.Tensor,
        task: torch.Tensor,
        family: torch.Tensor,
        state_h: torch.Tensor | None = None,
        state_c: torch.Tensor | None = None,
        episode_start: torch.Tensor | None = None,
    ):
        """Logits ``(B, 7)`` and values ``(B,)``; with memory also the next ``(h, c)``, each ``(B, hidden)``.

        ``episode_start`` bool ``(B,)`` (memory only; None: no row starts an episode).
        """
        model = self.model
        ctx = self._context(mission, task)
        z = model.conditioning.features(model.encoder, image, direction, ctx)
        if self.recurrent:
            assert state_h is not None and state_c is not None, "an agent with memory needs state_h and state_c"
            if episode_start is not None:  # a new episode forgets the previous one (MultiTaskActorCritic._remember)
                keep = 1 - episode_start.to(z.dtype).unsqueeze(1)
                state_h, state_c = state_h * keep, state_c * keep
            state_h, state_c = self._lstm(z, state_h, state_c)
            z = state_h
        towers = model.sharing(z, ctx, family)  # every sharing traces as it is (PLE routes families by a gather)
        logits, value = model.actor(towers["policy"]), model.critic(towers["value"])
        if self.recurrent:
            return logits, value, state_h, state_c
        return logits, value

    # ------------------------------------------------------------- helpers
    def input_names(self) -> tuple[str, ...]:
        return INPUT_NAMES + (STATE_INPUT_NAMES if self.recurrent else ())

    def output_names(self) -> tuple[str, ...]:
        return OUTPUT_NAMES + (STATE_OUTPUT_NAMES if self.recurrent else ())

    def example_inputs(self, batch: int = 2) -> tuple[torch.Tensor, ...]:
        """Zero inputs of the right dtypes and shapes (what tracing runs on)."""
        info = self.model.space_info
        device = self.model.device
        inputs = [
            torch.zeros((batch, *info["image_shape"]), dtype=torch.uint8, device=device),
            torch.zeros(batch, dtype=torch.int64, device=device),
            torch.zeros((batch, info["mission_length"]), dtype=torch.int64, device=device),
            torch.zeros(batch, dtype=torch.int64, device=device),
            torch.zeros(batch, dtype=torch.int64, device=device),
        ]
        if self.recurrent:
            h, c = self.model.initial_state(batch)
            inputs += [h, c, torch.zeros(batch, dtype=torch.bool, device=device)]
        # Distinct missions of distinct lengths, so no branch is specialised on one row.
        inputs[2][:, 0] = 2
        inputs[2][1:, 1] = 3
        if self.recurrent:
            inputs[-1][0] = True
        return tuple(inputs)
