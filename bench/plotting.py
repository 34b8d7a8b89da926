"""Success-vs-frames plots shared by the benchmarks (PNG, matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path


def plot_curves(
    curves: dict[str, list[list[tuple[int, float]]]],
    path: Path,
    *,
    title: str,
    threshold: float | None = None,
    ylabel: str = "success rate (last 100 episodes)",
) -> None:
    """One colour per label, one line per run (seed) of that label.

    Args:
        curves: label -> runs, each a list of ``(frames, success)`` points.
        path: where the PNG goes (folders are made).
        threshold: draws a dashed line at this success rate.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, (label, runs) in enumerate(curves.items()):
        for i, curve in enumerate(runs):
            if curve:
                x, y = zip(*curve)
                ax.plot(x, y, color=colours[k % len(colours)], alpha=0.8, linewidth=1.2, label=label if i == 0 else None)
    if threshold is not None:
        ax.axhline(threshold, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("frames")
    ax.set_ylabel(ylabel)
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
