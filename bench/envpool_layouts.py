"""Do EnvPool's C++ MiniGrid layouts follow python MiniGrid's distribution?

The parity test (``tests/test_envpool_parity.py``) copies EnvPool's layouts
into python MiniGrid, so it checks the dynamics, not the layout generators:
EnvPool reimplements every ``_gen_grid`` in C++ with its own random stream.
This benchmark draws K resets of each task from EnvPool and 2 x K from python
MiniGrid (two independent samples, A and B) and compares, feature by feature,
the empirical distributions:

* agent start position and direction, mission text;
* positions of each object type (goal, door, key, ball, box, lava, and the
  interior walls, which carry room/crossing/gap layouts), pooled over the
  objects of a reset; colours of doors, keys, balls and boxes; door states;
  object counts;
* the mission target's position, the agent's distance to the goal or target,
  whether the goal/target is reachable at all (doors passable), and the whole
  layout (grid, agent, mission) as one category.

For each feature: the total-variation distance TV(EnvPool, python A), the
same against python B, the noise floor TV(python A, python B) of two python
samples of the same size, and a permutation p-value of TV(EnvPool, python A)
(resets of the two samples shuffled between them). A feature is flagged when
p < 0.01 and its distance is over 1.5 x the floor. With ~10 features a task
and 24 tasks, expect about one flag in a hundred features by chance where
the distance is only slightly above the floor; a real difference stands far
above it (and the most different categories are printed under the table).

Python layouts come from the raw MiniGrid env (``TaskSpec.factory``), without
the train split's held-out-target exclusion, which EnvPool does not have
either (an EnvPool backend must redraw those episodes itself).

Run (timed runs under the shared lock):
    flock /tmp/omnigrid-bench.lock python bench/envpool_layouts.py
    python bench/envpool_layouts.py --tasks DoorKey-5x5,MultiRoom-N2-S4 --resets 500
"""

from __future__ import annotations

import argparse
import time
import zlib
from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np
from minigrid.core.constants import IDX_TO_COLOR, IDX_TO_OBJECT, OBJECT_TO_IDX

from envs import tasks
from envs.labels import mission_target

WALL, DOOR, KEY, BALL, BOX, GOAL, LAVA = (OBJECT_TO_IDX[n] for n in ("wall", "door", "key", "ball", "box", "goal", "lava"))
BLOCKING = (WALL, LAVA)  # a door counts as passable: reachability, not solvability with keys
ENVPOOL_BATCH = 250


@dataclass(frozen=True)
class Layout:
    """One reset: the full grid (x-major, (W, H, 3) type/colour/state), agent, mission."""

    grid: np.ndarray
    agent: tuple[int, int]
    direction: int
    mission: str


def envpool_layouts(spec: tasks.TaskSpec, n: int, seed: int) -> list[Layout]:
    import envpool

    batch = min(n, ENVPOOL_BATCH)
    env = envpool.make(spec.env_id, env_type="gymnasium", num_envs=batch, seed=seed, max_episode_steps=spec.max_steps)
    out: list[Layout] = []
    ids = list(range(batch))
    while len(out) < n:
        env.reset()
        for state in env.debug_states(ids):
            grid = np.asarray(state.grid, dtype=np.uint8).reshape(state.width, state.height, 3)
            out.append(Layout(grid, (int(state.agent_pos[0]), int(state.agent_pos[1])), int(state.agent_dir), str(state.mission)))
    env.close()
    return out[:n]


def python_layouts(spec: tasks.TaskSpec, n: int, seed: int) -> list[Layout]:
    env = spec.factory()
    out = []
    for i in range(n):
        env.reset(seed=seed if i == 0 else None)
        out.append(Layout(env.grid.encode(), (int(env.agent_pos[0]), int(env.agent_pos[1])), int(env.agent_dir), env.mission))
    env.close()
    return out


# ---------------------------------------------------------------- features


def _cells(layout: Layout, type_id: int) -> list[tuple[int, int]]:
    xs, ys = np.nonzero(layout.grid[..., 0] == type_id)
    return list(zip(xs.tolist(), ys.tolist()))


def _interior_walls(layout: Layout) -> list[tuple[int, int]]:
    w, h = layout.grid.shape[:2]
    return [(x, y) for x, y in _cells(layout, WALL) if 0 < x < w - 1 and 0 < y < h - 1]


def _target_cells(spec: tasks.TaskSpec, layout: Layout) -> list[tuple[int, int]]:
    kind, color = mission_target(layout.mission, goal=spec.target is tasks._goal)
    if kind == 255:
        return []
    xs, ys = np.nonzero((layout.grid[..., 0] == kind) & (layout.grid[..., 1] == color))
    return list(zip(xs.tolist(), ys.tolist()))


def _reachable(layout: Layout) -> set[tuple[int, int]]:
    grid = layout.grid
    w, h = grid.shape[:2]
    seen = {layout.agent}
    queue = deque([layout.agent])
    while queue:
        x, y = queue.popleft()
        for nx, ny in ((x + 1, y), (x - 1, y), (x, y + 1), (x, y - 1)):
            if 0 <= nx < w and 0 <= ny < h and (nx, ny) not in seen:
                kind = grid[nx, ny, 0]
                if kind in BLOCKING or kind in (KEY, BALL, BOX):
                    continue
                seen.add((nx, ny))
                queue.append((nx, ny))
    return seen


def _target_reachable(spec: tasks.TaskSpec, layout: Layout) -> list[bool]:
    """Goal: can be walked onto; an object or door: a walkable cell is next to it."""
    targets = _target_cells(spec, layout)
    if not targets:
        return []
    seen = _reachable(layout)
    if spec.target is tasks._goal:
        return [any(t in seen for t in targets)]
    return [any((x + dx, y + dy) in seen for x, y in targets for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1)))]


def _distance(spec: tasks.TaskSpec, layout: Layout) -> list[int]:
    targets = _target_cells(spec, layout)
    ax, ay = layout.agent
    return [min(abs(x - ax) + abs(y - ay) for x, y in targets)] if targets else []


def _colors(layout: Layout, type_id: int) -> list[str]:
    return [IDX_TO_COLOR[int(layout.grid[x, y, 1])] for x, y in _cells(layout, type_id)]


def _whole(layout: Layout) -> list[int]:
    return [zlib.crc32(layout.grid.tobytes() + bytes([*layout.agent, layout.direction]) + layout.mission.encode())]


Feature = Callable[[Layout], Iterable]


def features(spec: tasks.TaskSpec) -> dict[str, Feature]:
    feats: dict[str, Feature] = {
        "agent pos": lambda l: [l.agent],
        "agent dir": lambda l: [l.direction],
        "mission": lambda l: [l.mission],
        "grid size": lambda l: [l.grid.shape[:2]],
        "interior walls": _interior_walls,
    }
    for type_id in (GOAL, DOOR, KEY, BALL, BOX, LAVA):
        name = IDX_TO_OBJECT[type_id]
        feats[f"{name} pos"] = lambda l, t=type_id: _cells(l, t)
        feats[f"#{name}"] = lambda l, t=type_id: [len(_cells(l, t))]
        if type_id in (DOOR, KEY, BALL, BOX):
            feats[f"{name} colour"] = lambda l, t=type_id: _colors(l, t)
    feats["door state"] = lambda l: [int(l.grid[x, y, 2]) for x, y in _cells(l, DOOR)]
    feats["target pos"] = lambda l: _target_cells(spec, l)
    feats["agent-target dist"] = lambda l: _distance(spec, l)
    feats["target reachable"] = lambda l: _target_reachable(spec, l)
    feats["whole layout"] = _whole
    return feats


# ---------------------------------------------------------------- statistics


@dataclass
class Items:
    """A feature over a set of resets: category ids, and the reset of each item."""

    cat: np.ndarray
    reset: np.ndarray
    n_resets: int


def encode(values: list[list], categories: dict) -> Items:
    cat, reset = [], []
    for i, vals in enumerate(values):
        for v in vals:
            cat.append(categories.setdefault(v, len(categories)))
            reset.append(i)
    return Items(np.asarray(cat, dtype=np.int64), np.asarray(reset, dtype=np.int64), len(values))


def tv(a: np.ndarray, b: np.ndarray) -> float:
    """Total variation distance of two count vectors (each normalised)."""
    sa, sb = a.sum(), b.sum()
    if sa == 0 and sb == 0:
        return 0.0
    if sa == 0 or sb == 0:
        return 1.0
    return 0.5 * float(np.abs(a / sa - b / sb).sum())


def permutation_p(x: Items, y: Items, n_cat: int, observed: float, perms: int, rng: np.random.Generator) -> float:
    """P(TV >= observed) when the resets of x and y are shuffled between the two."""
    cat = np.concatenate([x.cat, y.cat])
    reset = np.concatenate([x.reset, y.reset + x.n_resets])
    n = x.n_resets + y.n_resets
    total = np.bincount(cat, minlength=n_cat)
    hits = 0
    for _ in range(perms):
        in_x = np.zeros(n, dtype=bool)
        in_x[rng.choice(n, x.n_resets, replace=False)] = True
        cx = np.bincount(cat[in_x[reset]], minlength=n_cat)
        hits += tv(cx, total - cx) >= observed - 1e-12
    return (hits + 1) / (perms + 1)


@dataclass
class Row:
    feature: str
    n_cat: int
    tv_a: float
    tv_b: float
    floor: float
    p: float
    flagged: bool
    worst: str


def compare(spec: tasks.TaskSpec, ep: list[Layout], py_a: list[Layout], py_b: list[Layout], perms: int, seed: int) -> list[Row]:
    rng = np.random.default_rng(seed)
    rows = []
    for name, fn in features(spec).items():
        categories: dict = {}
        items = [encode([list(fn(l)) for l in sample], categories) for sample in (ep, py_a, py_b)]
        n_cat = len(categories)
        if n_cat <= 1:
            continue  # constant (or absent) on every side: nothing to compare
        ce, ca, cb = (np.bincount(i.cat, minlength=n_cat) for i in items)
        tv_a, tv_b, floor = tv(ce, ca), tv(ce, cb), tv(ca, cb)
        p = permutation_p(items[0], items[1], n_cat, tv_a, perms, rng)
        flagged = p < 0.01 and tv_a > 1.5 * max(floor, 1e-9)
        # The category whose share differs most between EnvPool and python (A + B).
        share_e = ce / max(ce.sum(), 1)
        share_p = (ca + cb) / max(ca.sum() + cb.sum(), 1)
        k = int(np.argmax(np.abs(share_e - share_p)))
        label = {v: key for key, v in categories.items()}[k]
        worst = f"{label!r}: EnvPool {share_e[k]:.3f}, python {share_p[k]:.3f}"
        rows.append(Row(name, n_cat, tv_a, tv_b, floor, p, flagged, worst))
    return rows


def print_table(name: str, rows: list[Row], n: int, seconds: float) -> None:
    print(f"\n== {name}  (K = {n} resets a sample; {seconds:.0f} s)")
    print(f"{'feature':<18} {'cats':>5} {'TV(EP,PyA)':>10} {'TV(EP,PyB)':>10} {'floor':>7} {'perm p':>7}  flag")
    if not rows:
        print("(every feature takes one and the same value in all three samples)")
    for r in rows:
        flag = "!!" if r.flagged else ""
        print(f"{r.feature:<18} {r.n_cat:>5} {r.tv_a:>10.3f} {r.tv_b:>10.3f} {r.floor:>7.3f} {r.p:>7.3f}  {flag}")
    for r in rows:
        if r.flagged:
            print(f"   !! {r.feature}: most different {r.worst}")
    print(end="", flush=True)


def served_tasks() -> list[str]:
    import envpool

    served = set(envpool.list_all_envs())
    return [spec.name for spec in tasks.TASKS.values() if spec.env_id in served]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default="", help="comma-separated task names (default: every task EnvPool serves)")
    parser.add_argument("--resets", type=int, default=2000, help="K: resets per sample (EnvPool, python A, python B)")
    parser.add_argument("--perms", type=int, default=200, help="permutations for the p-value")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    names = [t for t in args.tasks.split(",") if t] or served_tasks()
    flagged = []
    for name in names:
        spec = tasks.get_task(name)
        start = time.perf_counter()
        ep = envpool_layouts(spec, args.resets, seed=10_000 + args.seed)
        py_a = python_layouts(spec, args.resets, seed=20_000 + args.seed)
        py_b = python_layouts(spec, args.resets, seed=30_000 + args.seed)
        rows = compare(spec, ep, py_a, py_b, args.perms, args.seed)
        print_table(name, rows, args.resets, time.perf_counter() - start)
        flagged += [f"{name}: {r.feature} (TV {r.tv_a:.3f} vs floor {r.floor:.3f}; {r.worst})" for r in rows if r.flagged]
    print("\nFlagged (p < 0.01 and TV > 1.5 x floor):" if flagged else "\nNothing flagged.")
    for line in flagged:
        print("  " + line)


if __name__ == "__main__":
    main()
