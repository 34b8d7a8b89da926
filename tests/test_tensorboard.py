"""TensorBoard output: curves per task against frames, and rollout GIFs a real TensorBoard serves."""

import io
import json
import re
import subprocess
import sys
import time
import urllib.request

import pytest
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import tail
from training.config import RunConfig
from training.loop import Trainer


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    config = RunConfig(tasks="Empty-5x5,GoToDoor-5x5", frames=1024, num_envs=4, seed=0, runs_dir=str(root),
                       run_name="tb", threads=1, video_every=1, video_max_steps=30)
    config.ppo.num_steps, config.ppo.batch_size = 64, 128
    Trainer(config, progress=False).run()
    return root / "tb"


def test_scalars_per_task_on_a_frames_axis(run_dir):
    events = EventAccumulator(str(run_dir))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for tag in ["tasks/Empty-5x5/success", "tasks/Empty-5x5/return", "tasks/Empty-5x5/episode_length",
                "families/navigation/success", "train/loss/policy/Empty-5x5", "train/loss/value/GoToDoor-5x5",
                "train/loss/recognition/target", "weights/ppo/Empty-5x5", "train/aux/recognition_object_accuracy",
                "curriculum/unlocked", "tasks/GoToDoor-5x5/curriculum_prob", "train/fps", "train/learning_rate"]:
        assert tag in tags, tag
    steps = [e.step for e in events.Scalars("train/fps")]
    assert steps == [256, 512, 768, 1024]  # x-axis = env frames after each update
    assert "hparams/text_summary" in events.Tags()["tensors"]


def test_time_series_lists_the_success_curves_before_the_learners(run_dir):
    """TensorBoard's Time Series groups scalars by the tag's first component and sorts the groups by name."""
    events = EventAccumulator(str(run_dir))
    events.Reload()
    groups = sorted({tag.split("/", 1)[0] for tag in events.Tags()["scalars"]})
    assert all(re.fullmatch("[a-z]+", g) for g in groups), groups  # no digits or '_': TensorBoard's order is plain name order
    assert groups == ["curriculum", "families", "tasks", "train", "weights"], groups


def _get(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read(), response.headers.get("Content-Type")


def test_rollout_videos_are_animated_gifs_served_by_tensorboard(run_dir, tmp_path):
    log = tmp_path / "tensorboard.err"  # a file, not a pipe: nobody reads a pipe while the server runs, and a full one blocks it
    with open(log, "w") as err:
        server = subprocess.Popen(
            [sys.executable, "-m", "tensorboard.main", "--logdir", str(run_dir.parent), "--host", "127.0.0.1", "--port", "0"],
            stdout=subprocess.DEVNULL, stderr=err,
        )
    try:
        # Port 0: the OS picks a free port as TensorBoard binds it, and TensorBoard prints its URL. A port
        # picked here beforehand could be taken by another process (another test run) in between.
        deadline, base = time.time() + 60, None
        while True:
            found = re.search(r"http://127\.0\.0\.1:(\d+)/", log.read_text())
            base = base or (found and f"http://127.0.0.1:{found.group(1)}/data/plugin/images")
            try:
                tags = json.loads(_get(f"{base}/tags")[0]) if base else {}
                if tags.get("tb"):
                    break
            except OSError:
                pass
            if server.poll() is not None or time.time() > deadline:
                state = f"exited with {server.returncode}" if server.poll() is not None else "did not come up within 60 s"
                pytest.fail(f"TensorBoard {state}; last lines of its stderr:\n{tail(log.read_text())}")
            time.sleep(0.5)
        assert set(tags["tb"]) == {"videos/navigation", "videos/recognition"}
        samples = json.loads(_get(f"{base}/images?tag=videos%2Fnavigation&run=tb")[0])
        assert [s["step"] for s in samples] == [256, 512, 768, 1024]
        blob, content_type = _get(f"{base}/individualImage?{samples[-1]['query']}")
        assert content_type == "image/gif" and blob.startswith(b"GIF89a")
        gif = Image.open(io.BytesIO(blob))
        assert gif.n_frames > 1 and gif.width == 160 and gif.height > 160  # Empty-5x5 at 32 px a cell, caption band under it
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_the_first_update_records_a_gif_then_every_video_every(tmp_path):
    # Six updates of 256 frames with --video-every 4: GIFs at the first update (256 frames) and the fourth (1,024),
    # so the Images tab has something from the first minute instead of after 50 updates.
    config = RunConfig(tasks="Empty-5x5,GoToDoor-5x5", frames=1536, num_envs=4, seed=0, runs_dir=str(tmp_path),
                       run_name="early", threads=1, video_every=4, video_max_steps=30)
    config.ppo.num_steps, config.ppo.batch_size = 64, 128
    Trainer(config, progress=False).run()
    events = EventAccumulator(str(tmp_path / "early"), size_guidance={"images": 0}).Reload()
    for family in ("navigation", "recognition"):
        assert [e.step for e in events.Images(f"videos/{family}")] == [256, 1024], family
