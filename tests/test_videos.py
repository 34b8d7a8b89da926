"""Rollout GIFs: several captioned episodes per GIF, each episode's end marked, read back from the event file."""

import io

import numpy as np
import pytest
import torch
from minigrid.core.actions import Actions
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from agents.model import MultiTaskActorCritic
from envs.tasks import make
from training.config import RunConfig
from training.logger import Logger, gif_bytes
from training.videos import HOLD_MS, MIN_FRAMES, OUTCOME_COLOURS, Episode, RolloutVideos, caption, wrap

BAND = np.array([24, 24, 24])  # the caption band's background (training/videos.py)


def _always(action: Actions) -> MultiTaskActorCritic:
    """An agent that takes ``action`` whatever it sees (zero last layer, one large bias)."""
    model = MultiTaskActorCritic(make("Empty-5x5").observation_space, RunConfig().agent)
    with torch.no_grad():
        last = model.actor.net[-1]
        last.weight.zero_()
        last.bias.zero_()
        last.bias[int(action)] = 50.0
    return model


def _record(tmp_path, model, task, **config):
    """Record once into a fresh event file; the decoded GIF frames, their durations, and the text summary."""
    config = RunConfig(tasks=task, **config)
    logger = Logger(tmp_path)
    RolloutVideos(config, model).record(logger, [task], updates=1, frames=256)
    logger.close()
    events = EventAccumulator(str(tmp_path), size_guidance={"images": 0, "tensors": 0})
    events.Reload()
    family = "recognition" if "videos/recognition" in events.Tags()["images"] else "navigation"
    (image,) = events.Images(f"videos/{family}")
    assert image.step == 256
    gif = Image.open(io.BytesIO(image.encoded_image_string))
    assert gif.format == "GIF" and (gif.width, gif.height) == (image.width, image.height)
    frames, durations = [], []
    for i in range(gif.n_frames):
        gif.seek(i)
        frames.append(np.asarray(gif.convert("RGB")).astype(int))
        durations.append(gif.info["duration"])
    (text,) = events.Tensors(f"videos/{family}_task/text_summary")
    return frames, durations, text.tensor_proto.string_val[0].decode()


def _near(pixel, colour, tol=10):
    return bool(np.abs(np.asarray(pixel) - np.asarray(colour)).max() <= tol)


def test_episodes_ending_at_the_first_step_still_make_a_long_captioned_gif(tmp_path):
    # "done" ends a GoToDoor episode at once: the one-frame GIFs the first users saw.
    frames, durations, text = _record(tmp_path, _always(Actions.done), "GoToDoor-5x5")
    assert len(frames) >= MIN_FRAMES
    height, width = frames[0].shape[:2]
    assert width == 160 and height > 160  # the 5x5 grid at 32 px a cell, with the caption band under it
    assert all(f.shape == frames[0].shape for f in frames)
    # Every episode is two frames (reset, done): the second is held and framed in its outcome's colour.
    assert len(frames) % 2 == 0
    assert durations[1::2] == [HOLD_MS] * (len(frames) // 2) and max(durations[0::2]) < HOLD_MS
    ends = [OUTCOME_COLOURS["success"], OUTCOME_COLOURS["failure"]]
    assert all(any(_near(f[0, 0], c) and _near(f[-1, -1], c) for c in ends) for f in frames[1::2])
    assert not any(_near(f[0, 0], c) for f in frames[0::2] for c in ends)
    # The caption band holds text: pixels far from its background, and they change with the frame.
    for f in frames:
        band = f[160:]
        assert (np.abs(band - BAND).max(-1) > 60).sum() > 100
    assert not np.array_equal(frames[0][160:], frames[1][160:])  # the step and the outcome
    assert not np.array_equal(frames[0][160:], frames[2][160:])  # the episode number
    # The text summary names the task and lists each episode.
    assert "GoToDoor-5x5" in text
    assert text.count("| go to the ") == len(frames) // 2
    assert all(row.split("|")[3].strip() == "1" for row in text.splitlines() if row.startswith("| ") and "go to" in row)


def test_an_episode_longer_than_the_video_is_cut_and_says_so(tmp_path):
    frames, durations, text = _record(tmp_path, _always(Actions.left), "Empty-5x5", video_max_steps=12)
    assert len(frames) == 12  # video_max_steps bounds the GIF's frames; turning never ends the episode
    assert durations[-1] == HOLD_MS and set(durations[:-1]) == {min(durations)}
    assert _near(frames[-1][0, 0], OUTCOME_COLOURS["cut"]) and not _near(frames[-2][0, 0], OUTCOME_COLOURS["cut"])
    assert "Empty-5x5" in text and "| 1 | get to the green goal square | 11 | cut |" in text


def test_recording_leaves_the_training_random_streams_alone():
    config = RunConfig(tasks="Empty-5x5", video_max_steps=20)
    videos = RolloutVideos(config, _always(Actions.forward))
    before = torch.get_rng_state()
    first = videos.play("Empty-5x5", seed=3)
    assert torch.equal(before, torch.get_rng_state())
    again = videos.play("Empty-5x5", seed=3)
    assert [len(e.frames) for e in first] == [len(e.frames) for e in again]
    assert all(np.array_equal(a, b) for x, y in zip(first, again) for a, b in zip(x.frames, y.frames))


def test_a_long_mission_wraps_onto_more_lines_rather_than_being_cut():
    mission = "use the key to open the door and then get to the goal " * 3
    grid = np.full((160, 160, 3), 100, dtype=np.uint8)
    short, _ = caption([Episode("reach the goal", [grid, grid], reward=0.5, outcome="success")], task="T")
    long, _ = caption([Episode(mission, [grid, grid], reward=0.5, outcome="success")], task="T")
    assert short[0].shape[1] == long[0].shape[1] == 160 and long[0].shape[0] > short[0].shape[0]
    from training.videos import _font

    lines = wrap(mission, _font(10), 152)
    assert " ".join(lines) == " ".join(mission.split()) and len(lines) > 2


def test_gif_frames_share_one_palette_and_keep_their_colours():
    env = make("DoorKey-5x5", render_mode="rgb_array")
    env.reset(seed=0)
    episode = Episode(env.unwrapped.mission, [env.render()])
    for action in [Actions.left, Actions.forward, Actions.right, Actions.forward]:
        env.step(int(action))
        episode.frames.append(env.render())
    frames, durations = caption([episode], task="DoorKey-5x5")
    gif = Image.open(io.BytesIO(gif_bytes(frames, durations=durations)))
    assert gif.n_frames == len(frames)
    for i, frame in enumerate(frames):
        gif.seek(i)
        assert gif.info["duration"] == durations[i]
        assert np.abs(np.asarray(gif.convert("RGB")).astype(int) - frame).max() <= 8  # 5 bits a channel
    with pytest.raises(ValueError, match="2 durations for 5 frames"):
        gif_bytes(frames, durations=[100, 100])
