"""Rollout videos of a training run: episodes played by the current policy, as GIFs in TensorBoard.

:class:`RolloutVideos` keeps one rendering environment per task (built on
first use, outside the training slots, so recording never disturbs the
rollout) and plays it with the agent under training. One GIF per task family
and record holds several episodes when they are short (a recognition episode
often ends with its first action: a one-frame GIF showed nothing, issue "The
first hour"), and every frame carries a caption band under the grid::

    <task>
    <mission, wrapped onto two lines rather than cut>
    episode k/n, step t
    <outcome on the episode's last frame: success / failure / time-out, reward; or cut>

The last frame of each episode is framed in the outcome's colour and held
longer, so the viewer can read how it ended before the next one starts.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from agents.conditioning import remember_missions
from agents.model import MultiTaskActorCritic, ObsBatch
from envs.tasks import TASKS, make
from envs.wrappers import FAMILIES
from training.config import RunConfig
from training.logger import Logger, NullLogger

MIN_FRAMES = 30
"""Episodes are played until a GIF holds this many frames (``video_max_steps`` frames at most)."""
FRAME_MS = 120
"""Duration of a frame, in milliseconds (about 8 frames a second; GIF counts in hundredths of a second)."""
HOLD_MS = 1000
"""Duration of an episode's last frame: long enough to read its outcome."""
MAX_SIDE = 320
"""Renders are scaled (MiniGrid's tile size, 8 to 32 px a cell) to at most this many pixels a side:
MultiRoom's 25x25 grid at 32 px made 800x800 frames, megabytes of GIF per record in the event file."""
MIN_WIDTH = 160
"""Narrower renders are centred on a canvas this wide so that the caption fits."""
MISSION_LINES = 2
"""Lines a mission is wrapped onto; a smaller font is tried before a third line is used."""
FONT_SIZES = (12, 11, 10, 9)
"""Caption font sizes, largest first; the widest canvases start at the largest."""
PAD = 4
"""Caption margin, in pixels."""

Outcome = Literal["success", "failure", "time-out", "cut"]
OUTCOME_COLOURS: dict[str, tuple[int, int, int]] = {
    "success": (90, 220, 90), "failure": (240, 90, 80), "time-out": (240, 90, 80), "cut": (240, 190, 60),
}
_BAND = (24, 24, 24)
_TASK, _MISSION, _STATUS = (170, 170, 170), (255, 255, 255), (200, 200, 200)


@dataclass
class Episode:
    """One played episode.

    Attributes:
        mission: the mission text (the unwrapped env's ``mission``).
        frames: rendered grids, uint8 ``(H, W, 3)``: the reset's, then one per step.
        reward: the episode's return (MiniGrid rewards only a success, at its end).
        outcome: ``success``, ``failure`` (ended otherwise), ``time-out`` (the
            task's step limit) or ``cut`` (the GIF's ``video_max_steps`` frames ran out first).
    """

    mission: str
    frames: list[np.ndarray] = field(repr=False)
    reward: float = 0.0
    outcome: Outcome = "cut"

    @property
    def steps(self) -> int:
        return len(self.frames) - 1

    def outcome_text(self) -> str:
        if self.outcome == "cut":
            return f"cut after {self.steps} steps"
        return f"{self.outcome}, reward {self.reward:.2f}"


@functools.lru_cache(maxsize=None)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's bundled font: nothing to download or find on the system.

    ``load_default(size=...)`` (Pillow >= 10.1, with FreeType) scales; older
    Pillow or one built without FreeType has only the fixed bitmap font.
    """
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):
        return ImageFont.load_default()


def _line_height(font) -> int:
    return font.getbbox("Agy")[3] + 2


_MEASURE = ImageDraw.Draw(Image.new("RGB", (1, 1)))  # textlength: every Pillow the project allows (>= 9)


def wrap(text: str, font, width: int) -> list[str]:
    """``text`` broken between words into lines at most ``width`` pixels wide (a longer word keeps a line alone)."""
    lines: list[str] = []
    for word in text.split():
        if lines and _MEASURE.textlength(f"{lines[-1]} {word}", font=font) <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines or [""]


def _layout(missions: Sequence[str], width: int):
    """The largest font (at most the canvas allows) that fits every mission on :data:`MISSION_LINES` lines.

    Returns:
        ``(font, wrapped missions)``; with the smallest font, missions that still
        do not fit take more lines (a caption never cuts the mission).
    """
    sizes = [s for s in FONT_SIZES if s <= max(FONT_SIZES[-1], width // 14)]
    for size in sizes:
        font = _font(size)
        wrapped = [wrap(m, font, width - 2 * PAD) for m in missions]
        if max(len(w) for w in wrapped) <= MISSION_LINES:
            break
    return font, wrapped


def caption(episodes: Sequence[Episode], *, task: str) -> tuple[list[np.ndarray], list[int]]:
    """The GIF of ``episodes``: each frame over its caption band, and each frame's duration.

    Returns:
        ``(frames, durations_ms)``: uint8 ``(H + band, W, 3)`` frames, all the
        same size, and milliseconds per frame (:data:`HOLD_MS` on each episode's
        last frame, :data:`FRAME_MS` elsewhere).
    """
    assert episodes and all(e.frames for e in episodes), "caption needs at least one episode with a frame"
    height = max(f.shape[0] for e in episodes for f in e.frames)
    width = max(MIN_WIDTH, *(f.shape[1] for e in episodes for f in e.frames))
    font, missions = _layout([e.mission for e in episodes], width)
    line = _line_height(font)
    mission_lines = max(MISSION_LINES, *(len(m) for m in missions))
    band = 2 * PAD + line * (1 + mission_lines + 2)  # task, mission, status, outcome
    canvas = np.empty((height + band, width, 3), dtype=np.uint8)
    frames: list[np.ndarray] = []
    durations: list[int] = []
    for k, (episode, mission) in enumerate(zip(episodes, missions), start=1):
        # What stays the same through an episode is drawn once; each frame copies it.
        template = Image.new("RGB", (width, band), _BAND)
        draw = ImageDraw.Draw(template)
        draw.text((PAD, PAD), task, fill=_TASK, font=font)
        for i, text in enumerate(mission):
            draw.text((PAD, PAD + line * (1 + i)), text, fill=_MISSION, font=font)
        status_y = PAD + line * (1 + mission_lines)
        for step, grid in enumerate(episode.frames):
            last = step == episode.steps
            band_image = template.copy()
            draw = ImageDraw.Draw(band_image)
            draw.text((PAD, status_y), f"episode {k}/{len(episodes)}, step {step}", fill=_STATUS, font=font)
            if last:
                colour = OUTCOME_COLOURS[episode.outcome]
                draw.text((PAD, status_y + line), episode.outcome_text(), fill=colour, font=font)
            canvas[:height] = 0  # a smaller or narrower render is centred on black
            top, left = (height - grid.shape[0]) // 2, (width - grid.shape[1]) // 2
            canvas[top : top + grid.shape[0], left : left + grid.shape[1]] = grid
            canvas[height:] = np.asarray(band_image)
            if last:  # the frame that ends an episode is framed in its outcome's colour
                canvas[:3], canvas[-3:], canvas[:, :3], canvas[:, -3:] = colour, colour, colour, colour
            frames.append(canvas.copy())
            durations.append(HOLD_MS if last else FRAME_MS)
    return frames, durations


def summary_markdown(task: str, episodes: Sequence[Episode]) -> str:
    """The text summary beside a GIF: the task, then one row per episode."""
    wins = sum(e.outcome == "success" for e in episodes)
    rows = "\n".join(
        f"| {k} | {e.mission} | {e.steps} | {e.outcome} | {e.reward:.2f} |" for k, e in enumerate(episodes, start=1)
    )
    return (
        f"**{task}**: {len(episodes)} episodes, {wins} successes\n\n"
        f"| episode | mission | steps | outcome | reward |\n|---|---|---|---|---|\n{rows}"
    )


def tile_size(env) -> int:
    """MiniGrid's pixels per cell for ``env``'s grid: 32 (MiniGrid's own) unless the grid is large."""
    grid = env.unwrapped
    return int(np.clip(MAX_SIDE // max(grid.width, grid.height), 8, 32))


class RolloutVideos:
    """One GIF per open task family, the families' tasks taking turns.

    Args:
        config: the run's config (observation, seed, ``video_every``, ``video_max_steps``).
        model: the agent the videos show.
        min_frames: episodes are played until the GIF holds this many frames.
    """

    def __init__(self, config: RunConfig, model: MultiTaskActorCritic, *, min_frames: int = MIN_FRAMES) -> None:
        self.config = config
        self.model = model
        self.min_frames = min_frames
        self._envs: dict[str, object] = {}

    def _env(self, task: str):
        env = self._envs.get(task)
        if env is None:
            env = self._envs[task] = make(
                task, obs=self.config.obs, mission_length=self.model.space_info["mission_length"],
                render_mode="rgb_array",
            )
        return env

    @torch.no_grad()
    def play(self, task: str, *, seed: int) -> list[Episode]:
        """Episodes of ``task`` until they hold :attr:`min_frames` frames, ``video_max_steps`` frames at most.

        Episode ``k`` resets with its own seed (``seed``, ``k`` mixed), and the
        actions are sampled from a generator of their own: recording leaves
        the training's random streams as they were.
        """
        env, device = self._env(task), self.model.device
        generator = torch.Generator(device=device).manual_seed(seed)
        # video_max_steps bounds the GIF's frames: an episode takes its reset's frame and one per step.
        frames_left, episodes = self.config.video_max_steps, []
        with remember_missions(self.model):  # parameters are fixed while recording
            while not episodes or (frames_left >= 2 and self.config.video_max_steps - frames_left < self.min_frames):
                obs, _ = env.reset(seed=int(np.random.SeedSequence([seed, len(episodes)]).generate_state(1)[0]))
                tile = tile_size(env)
                episode = Episode(mission=str(env.unwrapped.mission), frames=[env.unwrapped.get_frame(tile_size=tile)])
                state, start = self.model.initial_state(1), torch.ones(1, dtype=torch.bool, device=device)
                for _ in range(frames_left - 1):
                    batch = ObsBatch.from_numpy({k: np.asarray(v)[None] for k, v in obs.items()}, device)
                    logits, state = self.model.action_logits(batch, state, start)
                    action = torch.multinomial(torch.softmax(logits, -1), 1, generator=generator)
                    obs, reward, terminated, truncated, info = env.step(int(action))
                    episode.frames.append(env.unwrapped.get_frame(tile_size=tile))
                    episode.reward += float(reward)
                    start = torch.zeros(1, dtype=torch.bool, device=device)
                    if terminated or truncated:
                        success = info.get("success", False)
                        episode.outcome = "success" if success else "failure" if terminated else "time-out"
                        break
                frames_left -= len(episode.frames)
                episodes.append(episode)
        return episodes

    def record(self, logger: Logger | NullLogger, open_tasks: Sequence[str], *, updates: int, frames: int) -> None:
        """One GIF (``videos/<family>``) and its text summary (``videos/<family>_task``) per open family."""
        for family in FAMILIES:
            tasks = [name for name in open_tasks if TASKS[name].family == family]
            if not tasks:
                continue
            task = tasks[(updates // max(1, self.config.video_every)) % len(tasks)]  # take turns
            episodes = self.play(task, seed=self.config.seed * 1_000_003 + updates)
            images, durations = caption(episodes, task=task)
            logger.gif(f"videos/{family}", images, frames, durations=durations)
            logger.text(f"videos/{family}_task", summary_markdown(task, episodes), frames)
