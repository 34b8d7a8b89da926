"""TensorBoard output of a run: per-task curves, losses, loss weights, curriculum, rollout videos.

Every scalar's x-axis is global environment frames. Tags, in the order of their
groups (TensorBoard's Time Series sorts groups, the first component, by name, so
the names are chosen to put the success curves first):

* ``curriculum/level``, ``curriculum/unlocked``;
* ``families/<family>/success``;
* ``tasks/<task>/success``, ``tasks/<task>/return``, ``tasks/<task>/episode_length``
  (moving window of recent episodes), ``tasks/<task>/curriculum_prob`` and the
  per-task diagnostics (:mod:`agents.diagnostics`);
* ``train/fps``, ``train/learning_rate``, ``train/approx_kl``, ..., ``train/loss/*``
  (PPO terms per task, auxiliary terms), ``train/aux/*`` (accuracies of the
  auxiliary heads), as Stable-Baselines3 groups its learner's curves under ``train/``;
* ``weights/*`` (the loss weights in force).

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


def gif_bytes(frames: Sequence[np.ndarray], *, fps: int = 8, durations: Sequence[int] | None = None) -> bytes:
    """Encode RGB frames ``(H, W, 3)`` uint8 as an animated GIF that loops.

    Args:
        fps: frames a second, when ``durations`` is not given.
        durations: milliseconds per frame (e.g. an episode's last frame held
            longer); as many as ``frames``.
    """
    if durations is not None and len(durations) != len(frames):
        raise ValueError(f"{len(durations)} durations for {len(frames)} frames: give one duration per frame.")
    arrays = [np.asarray(f, dtype=np.uint8) for f in frames]
    if len({a.shape for a in arrays}) == 1:
        images = shared_palette(np.stack(arrays))
    else:  # frames of several sizes: Pillow quantises each on its own
        images = [Image.fromarray(a) for a in arrays]
    duration = list(durations) if durations is not None else int(1000 / fps)
    out = io.BytesIO()
    images[0].save(out, format="GIF", save_all=True, append_images=images[1:], duration=duration, loop=0)
    return out.getvalue()


def shared_palette(frames: np.ndarray) -> list[Image.Image]:
    """RGB frames ``(N, H, W, 3)`` uint8 as palette images sharing one palette of at most 256 colours.

    Pillow quantises each RGB frame on its own (median cut, ~8 ms for a
    160x240 frame): most of the time a rollout GIF took inside training. Here
    colours are binned at 5 bits a channel (an error of at most 4/255, not
    visible), which leaves a few hundred bins for rendered grids and captions;
    the 256 most frequent are the palette and rarer ones (anti-aliasing
    blends) take their nearest palette colour.
    """
    r, g, b = (frames[..., i].astype(np.uint16) >> 3 for i in range(3))
    codes = (r << 10) | (g << 5) | b  # (N, H, W) in [0, 32768)
    counts = np.bincount(codes.ravel(), minlength=1 << 15)
    present = np.flatnonzero(counts)
    present = present[np.argsort(-counts[present], kind="stable")]
    bins = np.stack([(present >> 10) & 31, (present >> 5) & 31, present & 31], axis=1)
    colours = (bins * 255 + 15) // 31  # bin -> 8-bit value; 0 and 31 map to 0 and 255 exactly
    palette, rest = colours[:256], colours[256:]
    lut = np.zeros(1 << 15, dtype=np.uint8)
    lut[present[:256]] = np.arange(len(palette))
    if len(rest):
        distance = ((rest[:, None, :] - palette[None, :, :]) ** 2).sum(-1)  # (rare colours, 256)
        lut[present[256:]] = distance.argmin(1)
    flat_palette = palette.astype(np.uint8).ravel().tolist()
    images = []
    for indices in lut[codes]:
        image = Image.fromarray(indices)  # uint8 (H, W): mode L
        image.putpalette(flat_palette)  # L + palette = P
        images.append(image)
    return images


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

    def gif(
        self, tag: str, frames: Sequence[np.ndarray], step: int, *, fps: int = 8, durations: Sequence[int] | None = None
    ) -> None:
        """An animated GIF as an image summary (shown animated in the Images tab); see :func:`gif_bytes`."""
        height, width = np.asarray(frames[0]).shape[:2]
        encoded = gif_bytes(frames, fps=fps, durations=durations)
        image = Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=encoded)
        self.writer._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class NullLogger:
    """A :class:`Logger` that writes nothing: the other ranks of a distributed run (rank 0 logs)."""

    def scalars(self, values: Mapping[str, float], step: int) -> None: ...
    def text(self, tag: str, markdown: str, step: int = 0) -> None: ...
    def gif(
        self, tag: str, frames: Sequence[np.ndarray], step: int, *, fps: int = 8, durations: Sequence[int] | None = None
    ) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


def hparams_markdown(flat: Mapping[str, object]) -> str:
    """The run's configuration as a two-column markdown table."""
    rows = "\n".join(f"| {key} | {value} |" for key, value in flat.items())
    return f"| parameter | value |\n|---|---|\n{rows}"
