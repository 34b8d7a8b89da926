"""TensorBoard output of a run: per-task curves, losses, loss weights, curriculum, rollout videos.

Every scalar's x-axis is global environment frames. Tags:

* ``tasks/<task>/success``, ``tasks/<task>/return``, ``tasks/<task>/episode_length``
  (moving window of recent episodes), ``families/<family>/success``;
* ``losses/*`` (PPO terms per task, auxiliary terms), ``weights/*`` (the loss
  weights in force), ``aux/*`` (accuracies of the auxiliary heads);
* ``curriculum/level``, ``curriculum/unlocked``, ``curriculum/prob/<task>``;
* ``charts/fps``, ``charts/learning_rate``, ``charts/approx_kl``, ...

Rollout videos are animated GIFs written as *image* summaries: TensorBoard's
Images tab shows them animated, and no video library is needed
(``SummaryWriter.add_video`` silently writes nothing without moviepy).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from tensorboard.compat.proto.summary_pb2 import Summary
from torch.utils.tensorboard import SummaryWriter


def gif_bytes(frames: Sequence[np.ndarray], *, fps: int = 8) -> bytes:
    """Encode RGB frames ``(H, W, 3)`` uint8 as an animated GIF that loops."""
    images = [Image.fromarray(np.asarray(f, dtype=np.uint8)) for f in frames]
    out = io.BytesIO()
    images[0].save(out, format="GIF", save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    return out.getvalue()


class Logger:
    """Writes one run's TensorBoard events under its run folder.

    Args:
        run_dir: the run folder (events go directly in it).
        purge_step: on resume, one past the checkpoint's frame counter:
            TensorBoard hides events at or after it (logged by the interrupted
            run after its last checkpoint).
    """

    def __init__(self, run_dir: str | Path, *, purge_step: int | None = None) -> None:
        self.writer = SummaryWriter(log_dir=str(run_dir), purge_step=purge_step)

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        for tag, value in values.items():
            if value is not None and np.isfinite(value):
                self.writer.add_scalar(tag, float(value), global_step=step)

    def text(self, tag: str, markdown: str, step: int = 0) -> None:
        self.writer.add_text(tag, markdown, global_step=step)

    def gif(self, tag: str, frames: Sequence[np.ndarray], step: int, *, fps: int = 8) -> None:
        """An animated GIF as an image summary (shown animated in the Images tab)."""
        height, width = np.asarray(frames[0]).shape[:2]
        image = Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=gif_bytes(frames, fps=fps))
        self.writer._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class NullLogger:
    """A :class:`Logger` that writes nothing: the other ranks of a distributed run (rank 0 logs)."""

    def scalars(self, values: Mapping[str, float], step: int) -> None: ...
    def text(self, tag: str, markdown: str, step: int = 0) -> None: ...
    def gif(self, tag: str, frames: Sequence[np.ndarray], step: int, *, fps: int = 8) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


def hparams_markdown(flat: Mapping[str, object]) -> str:
    """The run's configuration as a two-column markdown table."""
    rows = "\n".join(f"| {key} | {value} |" for key, value in flat.items())
    return f"| parameter | value |\n|---|---|\n{rows}"
