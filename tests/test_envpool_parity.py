"""EnvPool's C++ MiniGrid steps like python MiniGrid, task by task.

For every registered task whose env id EnvPool serves, EnvPool generates
episodes (fixed seeds); each reset state is copied into the python env of
the task (``tests/envpool_mirror.py``), and both then take the same actions.
At reset and after every step the two must agree on what the agent gets:
image, direction, mission tokens, reward (to 1e-6: EnvPool computes it in
float32), terminated, truncated, and the auxiliary labels (view labels and
target cell: python's from CommonObs's info, EnvPool's from ``envs.labels``
on the batch, as the EnvPool backend computes them).

Each task runs a few random-action episodes (with the finishing action taken
whenever the mission's target is in front of the agent, so that successes
happen too) and one turning-only episode that must time out at max_steps.

Known differences are kept as strict xfails whose reason holds the evidence.
"""

from __future__ import annotations

import numpy as np
import pytest
from minigrid.core.constants import OBJECT_TO_IDX

envpool = pytest.importorskip("envpool")

from envs import tasks  # noqa: E402
from envs.labels import GOAL, mission_target, target_cells  # noqa: E402
from envs.wrappers import tokenize  # noqa: E402
from envpool_mirror import reset_to, without_exclusion  # noqa: E402

SERVED = frozenset(envpool.list_all_envs())
PARITY_TASKS = [spec.name for spec in tasks.TASKS.values() if spec.env_id in SERVED]

LEFT, RIGHT, FORWARD, PICKUP, DROP, TOGGLE, DONE = range(7)
# Random actions, biased to moving so that episodes cover the layout.
ACTION_P = np.array([0.2, 0.2, 0.35, 0.07, 0.06, 0.06, 0.06])
# Step budget (the file must stay well under a minute on 2 shared cores, where
# an EnvPool step of a 1-env pool alone takes ~0.4 ms): per task at least
# MIN_EPISODES random episodes, more until MIN_STEPS steps (at most
# MAX_EPISODES); an episode is left after MAX_EPISODE_STEPS steps; and a
# turning-only episode to the time limit where max_steps <= TURNING_MAX_STEPS.
MIN_EPISODES = 2
MIN_STEPS = 300
MAX_EPISODES = 40
MAX_EPISODE_STEPS = 600
TURNING_MAX_STEPS = 360
SEED = 20240


def test_every_envpool_task_is_checked():
    """The parity list is not empty and holds both splits' MiniGrid tasks."""
    splits = {tasks.get_task(name).split for name in PARITY_TASKS}
    assert splits == {"train", "heldout"}, PARITY_TASKS
    minigrid_ids = [s.name for s in tasks.TASKS.values() if s.env_id.startswith("MiniGrid-")]
    assert PARITY_TASKS == minigrid_ids, "a MiniGrid task of the registry is not served by EnvPool"


class Pair:
    """One task on both sides: a 1-env EnvPool pool and the python env mirroring it."""

    def __init__(self, name: str, seed: int):
        self.name = name
        self.spec = tasks.get_task(name)
        self.pool = envpool.make(
            self.spec.env_id,
            env_type="gymnasium",
            num_envs=1,
            seed=seed,
            max_episode_steps=self.spec.max_steps,
        )
        self.py = without_exclusion(tasks.make(name))
        self.ids = np.array([0], dtype=np.int32)
        self.target = np.array([(255, 255)])  # the mission's target, set at each reset

    def reset(self):
        obs_e, info_e = self.pool.reset(self.ids)
        debug = self.pool.debug_states([0])[0]
        obs_p, info_p = reset_to(self.py, debug)
        mission = self.pool.decode_mission(obs_e["mission"])[0]
        # The state is copied, mission included; but the text must be one
        # python MiniGrid itself could have generated for the task.
        assert self.py.unwrapped.observation_space["mission"].contains(mission), f"{self.name}: mission {mission!r}"
        self.target = np.array([mission_target(mission, goal=self.spec.target is tasks._goal)])
        self.check("reset", obs_p, info_p, obs_e, info_e)
        assert int(info_e["elapsed_step"][0]) == 0, f"{self.name}: EnvPool's step count at reset"
        return obs_p

    def step(self, t: int, action: int):
        obs_e, rew_e, term_e, trunc_e, info_e = self.pool.step(np.array([action]), self.ids)
        obs_p, rew_p, term_p, trunc_p, info_p = self.py.step(action)
        where = f"step {t} (action {action})"
        self.check(where, obs_p, info_p, obs_e, info_e)
        assert int(info_e["elapsed_step"][0]) == t, f"{self.name} {where}: EnvPool's step count"
        assert rew_p == pytest.approx(float(rew_e[0]), abs=1e-6), f"{self.name} {where}: reward"
        assert (bool(term_p), bool(trunc_p)) == (bool(term_e[0]), bool(trunc_e[0])), (
            f"{self.name} {where}: (terminated, truncated) python {(term_p, trunc_p)}, "
            f"EnvPool {(bool(term_e[0]), bool(trunc_e[0]))}"
        )
        return obs_p, rew_p, term_p, trunc_p

    def check(self, where, obs_p, info_p, obs_e, info_e):
        raw, image = self.py.unwrapped, obs_e["image"]
        mission = self.pool.decode_mission(obs_e["mission"])[0]
        # field: (python, EnvPool). Plain comparisons: numpy's assert helpers
        # cost more than a step here.
        fields = {
            "image": (obs_p["image"], image[0]),
            "direction": (int(obs_p["direction"]), int(obs_e["direction"][0])),
            "mission": (raw.mission, mission),
            "mission tokens": (obs_p["mission"], tokenize(mission)),
            "view_labels": (info_p["view_labels"], image[0, ..., :2]),
            "target_cell": (int(info_p["target_cell"]), int(target_cells(image, self.target)[0])),
            "agent_pos": (tuple(int(v) for v in raw.agent_pos), tuple(int(v) for v in info_e["agent_pos"][0])),
            "step count": (raw.step_count, int(info_e["elapsed_step"][0])),
        }
        wrong = {
            key: (a.tolist(), b.tolist()) if isinstance(a, np.ndarray) else (a, b)
            for key, (a, b) in fields.items()
            if not (np.array_equal(a, b) if isinstance(a, np.ndarray) else a == b)
        }
        if wrong:
            lines = [f"{key}: python {a} | EnvPool {b}" for key, (a, b) in wrong.items()]
            pytest.fail(f"{self.name} {where} differs:\n" + "\n".join(lines))

    def close(self):
        self.pool.close()
        self.py.close()


def _finishing_action(pair: Pair, obs) -> int | None:
    """The action that ends the episode well if the target is right in front."""
    front = obs["image"][3, 5]
    if tuple(front[:2]) != tuple(pair.target[0]):
        return None
    if tuple(pair.target[0]) == GOAL:
        return FORWARD
    if "fetch" in pair.py.unwrapped.mission or "pick up" in pair.py.unwrapped.mission:
        return PICKUP
    return DONE  # GoToDoor, GoToObject: done next to the target


@pytest.mark.parametrize("name", PARITY_TASKS)
def test_envpool_steps_like_minigrid(name):
    spec = tasks.get_task(name)
    pair = Pair(name, SEED + 97 * spec.index)
    rng = np.random.default_rng(spec.index)
    ends = {"success": 0, "failure": 0, "timeout": 0, "cut": 0}
    try:
        episodes = steps = 0
        while episodes < MIN_EPISODES or (steps < MIN_STEPS and episodes < MAX_EPISODES):
            obs = pair.reset()
            episodes += 1
            for t in range(1, min(spec.max_steps, MAX_EPISODE_STEPS) + 1):
                action = _finishing_action(pair, obs)
                if action is None:
                    action = int(rng.choice(7, p=ACTION_P))
                obs, reward, term, trunc = pair.step(t, action)
                steps += 1
                if term or trunc:
                    ends["success" if term and reward > 0 else "timeout" if trunc else "failure"] += 1
                    break
            else:
                ends["cut"] += 1  # left before its end: the next reset is explicit
        if spec.max_steps <= TURNING_MAX_STEPS:
            # Turning only: nothing can end the episode but the time limit.
            pair.reset()
            for t in range(1, spec.max_steps + 1):
                obs, reward, term, trunc = pair.step(t, int(rng.integers(2)))
                if term or trunc:
                    break
            assert (t, reward, term, trunc) == (spec.max_steps, 0.0, False, True), f"{name}: turning episode end"
    finally:
        pair.close()
    print(f"{name}: {episodes} random episodes, {steps} steps, ends {ends}")


def test_time_outs_are_checked():
    """Most tasks run a turning-only episode to its time limit."""
    turned = [name for name in PARITY_TASKS if tasks.get_task(name).max_steps <= TURNING_MAX_STEPS]
    assert len(turned) >= len(PARITY_TASKS) - 3, turned


def _last_step_actions(pair: Pair, kind: str) -> list[int]:
    """Actions that end the episode exactly on its last allowed step.

    ``goal``: Empty-5x5 always starts at (1, 1) facing east with the goal at
    (3, 3): five moves reach it, after max_steps - 5 no-ops (``done`` does
    nothing in Empty). ``lava``: LavaGapS5 starts at (1, 1) facing east with
    its lava column at x = 2; with the gap not at (2, 1), one forward step
    enters lava.
    """
    n = pair.spec.max_steps
    if kind == "goal":
        return [DONE] * (n - 5) + [FORWARD, FORWARD, RIGHT, FORWARD, FORWARD]
    return [DONE] * (n - 1) + [FORWARD]


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason=(
        "EnvPool 1.2.5 reports an episode that ends on its last allowed step (goal or lava entered at "
        "step == max_steps) as terminated=False, truncated=True; MiniGrid 3.x reports terminated=True, "
        "truncated=True. Cause: EnvPool's C++ task forces done at step_count >= max_steps, its core sets "
        "trunc = done && elapsed_step >= max_episode_steps (envpool/core/env.h), and the gymnasium "
        "wrapper returns terminated = done & ~trunc (envpool/python/gymnasium_envpool.py). The reward "
        "is the same (0.1 = 1 - 0.9 * 100/100 for the goal on Empty-5x5, 0 for lava). Consequence for "
        "an EnvPool backend: CommonObs's success (terminated and reward > 0) must become reward > 0 at "
        "episode end, and terminated |= truncated & (reward > 0) restores MiniGrid's flag for successes; "
        "a failure on the last step (lava, wrong pick-up, done) stays indistinguishable from a time-out."
    ),
)
@pytest.mark.parametrize("name,kind", [("Empty-5x5", "goal"), ("LavaGapS5", "lava")])
def test_episode_ending_on_its_last_step(name, kind):
    pair = Pair(name, SEED)
    try:
        for _ in range(50):
            pair.reset()
            lava_ahead = pair.py.unwrapped.grid.get(2, 1)
            if kind == "goal" or (lava_ahead is not None and lava_ahead.type == "lava"):
                break
        else:
            pytest.fail(f"{name}: no layout with lava at (2, 1) in 50 resets")
        actions = _last_step_actions(pair, kind)
        for t, action in enumerate(actions[:-1], start=1):
            _, _, term, trunc = pair.step(t, action)
            if term or trunc:
                pytest.fail(f"{name}: ended early at step {t}")  # Failed, not AssertionError: a real failure
        obs_e, rew_e, term_e, trunc_e, _ = pair.pool.step(np.array([actions[-1]]), pair.ids)
        obs_p, rew_p, term_p, trunc_p, info_p = pair.py.step(actions[-1])
        if not ((term_p, trunc_p) == (True, True) and info_p["success"] == (kind == "goal")):
            pytest.fail(f"{name}: python did not end on the last step as expected: {(term_p, trunc_p, info_p)}")
        if rew_p != pytest.approx(float(rew_e[0]), abs=1e-6):
            pytest.fail(f"{name}: rewards differ on the last step: python {rew_p}, EnvPool {rew_e[0]}")
        # The comparison every other step passes; the only AssertionError here.
        assert (term_p, trunc_p) == (bool(term_e[0]), bool(trunc_e[0])), (
            f"{name}: last-step (terminated, truncated) python {(term_p, trunc_p)}, "
            f"EnvPool {(bool(term_e[0]), bool(trunc_e[0]))}; reward {rew_p:.3f} on both"
        )
    finally:
        pair.close()


# ---------------------------------------------------------------- layouts
# The parity test above copies EnvPool's layouts, so it cannot see a layout
# python MiniGrid would never generate. bench/envpool_layouts.py compares the
# layout distributions; this checks the one property every navigation task
# guarantees: the goal can be reached.

SOLVABLE_RESETS = 200
_MULTIROOM_REASON = (
    "EnvPool 1.2.5's MultiRoom generator makes unsolvable layouts: the goal is unreachable in "
    "31-32% of MultiRoom-N2-S4 and 85-87% of MultiRoom-N4-S5 resets (1000 and 2000 resets; python "
    "MiniGrid: none of 2000; bench/envpool_layouts.py, feature 'target reachable'). Cause: "
    "placing the next room, python draws its corner coordinate with _rand_int(y - sizeY + 2, y), "
    "i.e. at most y - 1 (MiniGrid's multiroom.py _placeRoom), while "
    "EnvPool's MultiRoomTask::PlaceRoom draws RandInt(y - size_y + 2, y + 1), allowing y itself "
    "(minigrid_room_tasks.cc); the room then starts at the door's row/column, and the door opens "
    "onto the new room's side wall. E.g. rows of one reset: '#A.#' over '#D###' over '.#..#' - "
    "the door D leads into the next room's wall."
)


def _goal_reachable(grid: np.ndarray, start: tuple[int, int]) -> bool:
    """Walls and lava block; doors (even locked: a key is always reachable) and objects do not."""
    blocking = {OBJECT_TO_IDX["wall"], OBJECT_TO_IDX["lava"]}
    goal = OBJECT_TO_IDX["goal"]
    width, height = grid.shape[:2]
    seen, frontier = {start}, [start]
    while frontier:
        x, y = frontier.pop()
        if grid[x, y, 0] == goal:
            return True
        for nx, ny in ((x + 1, y), (x - 1, y), (x, y + 1), (x, y - 1)):
            if 0 <= nx < width and 0 <= ny < height and (nx, ny) not in seen and grid[nx, ny, 0] not in blocking:
                seen.add((nx, ny))
                frontier.append((nx, ny))
    return False


NAVIGATION = [name for name in PARITY_TASKS if tasks.get_task(name).target is tasks._goal]


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(name, marks=pytest.mark.xfail(strict=True, raises=AssertionError, reason=_MULTIROOM_REASON))
        if name.startswith("MultiRoom")
        else name
        for name in NAVIGATION
    ],
)
def test_envpool_goal_is_always_reachable(name):
    spec = tasks.get_task(name)
    pool = envpool.make(
        spec.env_id, env_type="gymnasium", num_envs=SOLVABLE_RESETS, seed=SEED, max_episode_steps=spec.max_steps
    )
    pool.reset()
    unreachable = []
    for i, state in enumerate(pool.debug_states(list(range(SOLVABLE_RESETS)))):
        grid = np.asarray(state.grid, dtype=np.uint8).reshape(state.width, state.height, 3)
        if not _goal_reachable(grid, tuple(int(v) for v in state.agent_pos)):
            unreachable.append(i)
    pool.close()
    # The same check on python MiniGrid's own layouts always passes.
    raw = spec.factory()
    raw.reset(seed=SEED)
    for _ in range(20):
        raw.reset()
        if not _goal_reachable(raw.grid.encode(), tuple(int(v) for v in raw.agent_pos)):
            pytest.fail(f"{name}: the reachability check fails on a python MiniGrid layout")
    assert not unreachable, f"{name}: goal unreachable in {len(unreachable)} of {SOLVABLE_RESETS} EnvPool resets"
