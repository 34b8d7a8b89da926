"""Curricula: unlocking by level, mastered tasks kept at a lower weight, learning progress, state."""

import pytest

from envs.curriculum import CURRICULA, LearningProgressCurriculum, ThresholdCurriculum, make_curriculum

# levels: Empty-5x5 1, LavaGapS5 1, DoorKey-5x5 2, DoorKey-8x8 3
TASKS = ["Empty-5x5", "LavaGapS5", "DoorKey-5x5", "DoorKey-8x8"]


def _feed(cur, task, successes, failures):
    for _ in range(successes):
        cur.record(task, True)
    for _ in range(failures):
        cur.record(task, False)


def test_threshold_opens_level_by_level():
    cur = ThresholdCurriculum(TASKS, window=10, threshold=0.8, mastered_weight=0.25)
    assert cur.unlocked() == ["Empty-5x5", "LavaGapS5"] and cur.level() == 1
    _feed(cur, "Empty-5x5", 10, 0)
    _feed(cur, "LavaGapS5", 7, 3)  # 0.7 < 0.8: level 2 stays shut
    assert cur.unlocked() == ["Empty-5x5", "LavaGapS5"]
    _feed(cur, "LavaGapS5", 3, 0)  # the window slides: the last 10 are 4 ok, 3 failed, 3 ok
    assert cur.success_rate("LavaGapS5") == pytest.approx(0.7)
    assert cur.unlocked() == ["Empty-5x5", "LavaGapS5"]
    _feed(cur, "LavaGapS5", 7, 0)  # the failures slide out
    assert cur.success_rate("LavaGapS5") == pytest.approx(1.0)
    assert cur.unlocked() == ["Empty-5x5", "LavaGapS5", "DoorKey-5x5"] and cur.level() == 2
    probs = cur.probs()
    # two mastered at 0.25, one new at 1: 0.25 / 1.5 each, 1 / 1.5
    assert probs == pytest.approx({"Empty-5x5": 1 / 6, "LavaGapS5": 1 / 6, "DoorKey-5x5": 2 / 3})
    _feed(cur, "DoorKey-5x5", 10, 0)
    assert cur.unlocked() == TASKS and cur.level() == 3


def test_threshold_levels_stay_open_when_a_lower_task_dips():
    cur = ThresholdCurriculum(TASKS, window=10, threshold=0.8, mastered_weight=0.25)
    _feed(cur, "Empty-5x5", 10, 0)
    _feed(cur, "LavaGapS5", 10, 0)
    assert cur.level() == 2
    _feed(cur, "LavaGapS5", 0, 5)  # forgotten for a while: 0.5
    assert cur.unlocked() == ["Empty-5x5", "LavaGapS5", "DoorKey-5x5"] and cur.level() == 2
    probs = cur.probs()  # the dipped task is practised at full weight again
    assert probs["LavaGapS5"] == probs["DoorKey-5x5"] == pytest.approx(1 / 2.25)
    restored = ThresholdCurriculum(TASKS, window=10, threshold=0.8, mastered_weight=0.25)
    restored.load_state_dict(cur.state_dict())
    assert restored.unlocked() == cur.unlocked() and restored.probs() == cur.probs()


def test_a_task_opens_the_next_level_at_threshold_but_keeps_its_weight_until_mastered():
    cur = ThresholdCurriculum(TASKS, window=10, threshold=0.8, mastered_threshold=0.9, mastered_weight=0.25)
    _feed(cur, "Empty-5x5", 10, 0)
    _feed(cur, "LavaGapS5", 8, 2)  # 0.8: good enough to open level 2, not yet mastered
    assert cur.level() == 2 and not cur.mastered("LavaGapS5") and cur.mastered("Empty-5x5")
    # Empty-5x5 at 0.25; LavaGapS5 and DoorKey-5x5 at full weight: 0.25 / 2.25, 1 / 2.25 each
    assert cur.probs() == pytest.approx({"Empty-5x5": 1 / 9, "LavaGapS5": 4 / 9, "DoorKey-5x5": 4 / 9})
    _feed(cur, "LavaGapS5", 9, 0)  # the window slides to one failure and nine successes: 0.9
    assert cur.success_rate("LavaGapS5") == pytest.approx(0.9)
    assert cur.mastered("LavaGapS5")
    assert cur.probs() == pytest.approx({"Empty-5x5": 1 / 6, "LavaGapS5": 1 / 6, "DoorKey-5x5": 2 / 3})
    # One threshold for both, as before the two were split.
    single = ThresholdCurriculum(TASKS, window=10, threshold=0.8, mastered_threshold=0.8, mastered_weight=0.25)
    _feed(single, "Empty-5x5", 10, 0)
    _feed(single, "LavaGapS5", 8, 2)
    assert single.mastered("LavaGapS5") and single.probs()["LavaGapS5"] == pytest.approx(1 / 6)
    with pytest.raises(ValueError, match=r"mastered_threshold=1.2 must be a probability in \[0, 1\]"):
        ThresholdCurriculum(TASKS, mastered_threshold=1.2)


def test_threshold_needs_a_full_window():
    cur = ThresholdCurriculum(TASKS, window=10, threshold=0.8)
    _feed(cur, "Empty-5x5", 5, 0)
    _feed(cur, "LavaGapS5", 5, 0)  # perfect, but only 5 episodes
    assert cur.unlocked() == ["Empty-5x5", "LavaGapS5"]


def test_learning_progress_prefers_the_task_that_is_changing():
    cur = LearningProgressCurriculum(["Empty-5x5", "DoorKey-5x5", "LavaGapS5"], epsilon=0.1)
    assert cur.probs() == pytest.approx({"Empty-5x5": 1 / 3, "DoorKey-5x5": 1 / 3, "LavaGapS5": 1 / 3})
    _feed(cur, "Empty-5x5", 0, 50)
    _feed(cur, "Empty-5x5", 50, 0)  # climbing fast
    _feed(cur, "DoorKey-5x5", 0, 100)  # flat at 0
    probs = cur.probs()
    assert probs["Empty-5x5"] > 0.8
    assert probs["DoorKey-5x5"] == pytest.approx(0.1 / 3)  # only the exploration floor
    assert sum(probs.values()) == pytest.approx(1.0)


@pytest.mark.parametrize("name", list(CURRICULA))
def test_state_round_trips(name):
    a = make_curriculum(name, TASKS, window=10)
    _feed(a, "Empty-5x5", 10, 0)
    _feed(a, "LavaGapS5", 9, 1)
    b = make_curriculum(name, TASKS, window=10)
    b.load_state_dict(a.state_dict())
    assert b.probs() == a.probs() and b.unlocked() == a.unlocked()
    with pytest.raises(ValueError, match="must match"):
        make_curriculum(name, TASKS[:2], window=10).load_state_dict(a.state_dict())


def test_bad_curriculum_arguments():
    with pytest.raises(ValueError, match="curriculum='easy' is unknown; known: none, threshold, learning-progress"):
        make_curriculum("easy", TASKS)
    with pytest.raises(ValueError, match="threshold=1.5"):
        ThresholdCurriculum(TASKS, threshold=1.5)
    with pytest.raises(ValueError, match="unknown task 'Nope'"):
        make_curriculum("none", ["Nope"])


def test_alternate_schedule_alternates_families():
    from envs.curriculum import FamilySchedule, NoCurriculum

    cur = NoCurriculum(["Empty-5x5", "GoToDoor-5x5", "DoorKey-5x5", "Fetch-5x5-N2"])
    schedule = FamilySchedule("alternate")
    assert schedule.assign(cur, 0, 4) == {"Empty-5x5": 0.5, "DoorKey-5x5": 0.5}
    assert schedule.assign(cur, 1, 4) == {"GoToDoor-5x5": 0.5, "Fetch-5x5-N2": 0.5}
    assert schedule.assign(cur, 2, 4) == schedule.assign(cur, 0, 4)
    only_nav = NoCurriculum(["Empty-5x5"])
    assert schedule.assign(only_nav, 1, 4) == {"Empty-5x5": 1.0}  # the missing family yields
    rr = FamilySchedule("round-robin").assign(cur, 1, 3)
    assert rr == [{"GoToDoor-5x5": 1.0}, {"DoorKey-5x5": 1.0}, {"Fetch-5x5-N2": 1.0}]
    assert FamilySchedule("mixed").assign(cur, 5, 2) == cur.probs()
    with pytest.raises(ValueError, match="schedule='zigzag' is unknown"):
        FamilySchedule("zigzag")


def test_alternate_rollouts_are_one_family_each(tmp_path):
    from training.config import RunConfig
    from training.loop import Trainer

    # Empty-5x5 episodes of an untrained agent outlast a 64-step rollout: slots
    # still in one at the boundary are restarted in the other family.
    config = RunConfig(tasks="Empty-5x5,GoToDoor-5x5", frames=10**6, num_envs=8, seed=0, runs_dir=str(tmp_path),
                       threads=1, video_every=0, schedule="alternate")
    config.ppo.num_steps, config.ppo.batch_size = 64, 128
    trainer = Trainer(config, progress=False)
    shares = []
    for rollout in range(4):
        trainer.collect()
        shares.append(trainer.buffer.family.float().mean().item())  # share of recognition steps
        trainer.update()
    trainer.env.close()
    assert shares == [0.0, 1.0, 0.0, 1.0]
    assert trainer.stats.episodes["Empty-5x5"] > 0 and trainer.stats.episodes["GoToDoor-5x5"] > 0


def test_frame_shares_become_per_episode_probabilities():
    from envs.curriculum import FamilySchedule, NoCurriculum, per_episode

    # Episodes of 10 and 90 steps: drawing a 9:1 gives each half the frames.
    q = per_episode({"a": 0.5, "b": 0.5}, {"a": 10.0, "b": 90.0})
    assert q == pytest.approx({"a": 0.9, "b": 0.1})
    assert q["a"] * 10 == pytest.approx(q["b"] * 90)
    # A task without a finished episode counts at the mean of the others (50 here).
    q = per_episode({"a": 0.25, "b": 0.25, "c": 0.5}, {"a": 10.0, "b": 90.0})
    frames = {"a": q["a"] * 10, "b": q["b"] * 90, "c": q["c"] * 50}
    total = sum(frames.values())
    assert {k: v / total for k, v in frames.items()} == pytest.approx({"a": 0.25, "b": 0.25, "c": 0.5})
    assert per_episode({"a": 0.3, "b": 0.7}, {}) == {"a": 0.3, "b": 0.7}

    cur = NoCurriculum(["Empty-5x5", "GoToDoor-5x5", "DoorKey-5x5", "Fetch-5x5-N2"])
    lengths = {"Empty-5x5": 20.0, "DoorKey-5x5": 60.0, "GoToDoor-5x5": 5.0, "Fetch-5x5-N2": 45.0}
    # equal frame shares: draws proportional to 1/20, 1/5, 1/60, 1/45
    mixed = FamilySchedule("mixed").assign(cur, 0, 4, lengths)
    assert mixed == pytest.approx({"Empty-5x5": 0.1731, "GoToDoor-5x5": 0.6923, "DoorKey-5x5": 0.0577, "Fetch-5x5-N2": 0.0769}, abs=1e-4)
    # alternate: the balance holds within the family of the rollout
    assert FamilySchedule("alternate").assign(cur, 1, 4, lengths) == pytest.approx({"GoToDoor-5x5": 0.9, "Fetch-5x5-N2": 0.1})


@pytest.mark.parametrize("balance", ["frames", "episodes"])
def test_task_balance_shares_out_frames_or_episodes(tmp_path, balance):
    from training.config import RunConfig
    from training.loop import Trainer

    # An untrained agent ends GoToDoor-5x5 episodes within a few steps (any
    # ``done`` ends them) but wanders Empty-5x5 for tens of steps: drawn per
    # episode, GoToDoor-5x5 gets a small share of the frames; drawn per frame,
    # about half once the lengths are known.
    config = RunConfig(tasks="Empty-5x5,GoToDoor-5x5", frames=10**6, num_envs=8, seed=0, runs_dir=str(tmp_path),
                       threads=1, video_every=0, checkpoint_every=0, curriculum="none", task_balance=balance)
    config.ppo.num_steps, config.ppo.batch_size, config.ppo.learning_rate = 64, 128, 1e-9  # the policy stays put
    trainer = Trainer(config, progress=False)
    shares = []
    for _ in range(6):
        trainer.collect()
        shares.append(trainer.buffer.family.float().mean().item())  # GoToDoor-5x5's share of the frames
        trainer.update()
    trainer.env.close()
    later = sum(shares[2:]) / 4
    if balance == "frames":
        assert 0.35 < later < 0.65, shares
    else:
        assert later < 0.3, shares


# ------------------------------------------------------------------ whole slots per task
def test_slot_quotas_apportion_by_largest_remainder():
    from envs.curriculum import slot_quotas

    # 8, 4.8, 3.2: floors 8/4/3, the one slot left to the largest remainder (0.8)
    assert slot_quotas({"a": 0.5, "b": 0.3, "c": 0.2}, 16) == {"a": 8, "b": 5, "c": 3}
    # 15.52, 0.16, 0.32 would give 16/0/0: the tiny shares get their one slot, a the other 14
    assert slot_quotas({"a": 0.97, "b": 0.01, "c": 0.02}, 16) == {"a": 14, "b": 1, "c": 1}
    # the threshold curriculum after level 2 opens: 2.67, 2.67, 10.67, a three-way tie for two slots
    assert slot_quotas({"E": 1 / 6, "L": 1 / 6, "D": 2 / 3}, 16) == {"E": 3, "L": 3, "D": 10}
    # ties go to the task listed first; shares need not sum to 1; a zero share gets no slot
    assert slot_quotas({"a": 0.5, "b": 0.5}, 3) == {"a": 2, "b": 1}
    assert slot_quotas({"b": 0.5, "a": 0.5}, 3) == {"b": 2, "a": 1}
    assert slot_quotas({"a": 2.0, "b": 1.0, "c": 1.0, "z": 0.0}, 8) == {"a": 4, "b": 2, "c": 2}
    assert slot_quotas({"a": 0.9, "b": 0.05, "c": 0.05}, 3) == {"a": 1, "b": 1, "c": 1}
    for bad in [({"a": 1.0}, 0), ({"a": 0.0}, 4), ({"a": 1.0, "b": -0.1}, 4)]:
        with pytest.raises(ValueError, match="slot_quotas needs num_envs >= 1"):
            slot_quotas(*bad)


def test_more_open_tasks_than_slots_take_turns():
    from envs.curriculum import slot_quotas

    tasks = [f"t{i}" for i in range(24)]
    shares = dict(zip(tasks, [0.5] + [0.5 / 23] * 23))  # the shares do not matter here
    quotas = [slot_quotas(shares, 16, rollout=r) for r in range(4)]
    assert all(set(q.values()) == {1} for q in quotas)  # one slot each
    running = [list(q) for q in quotas]
    assert running[0] == tasks[:16]
    assert running[1] == tasks[:8] + tasks[16:]  # t16..t23, then t0..t7, in task order
    assert running[2] == tasks[8:]
    assert running[3] == running[0]
    turns = {name: sum(name in run for run in running[:3]) for name in tasks}
    assert set(turns.values()) == {2}  # every task runs 2 of every 3 rollouts


def test_assign_slots_moves_as_few_slots_as_possible():
    from envs.curriculum import assign_slots

    # level 2 opens: E and L go from 8 slots to 3 each; their first 3 slots stay, the rest go to D
    before = ["E"] * 8 + ["L"] * 8
    after = assign_slots({"E": 3, "L": 3, "D": 10}, before)
    assert after == ["E"] * 3 + ["D"] * 5 + ["L"] * 3 + ["D"] * 5
    assert sum(a != b for a, b in zip(before, after)) == 10  # D's gain, the least possible
    # freed slots go, in slot order, to the gaining tasks in task order
    assert assign_slots({"a": 1, "b": 2, "c": 1}, list("aaab")) == list("abcb")
    assert assign_slots({"a": 2, "b": 2, "c": 2}, list("ababab")) == list("ababcc")
    assert assign_slots({"a": 3, "b": 1}, [None] * 4) == list("aaab")  # the first rollout
    assert assign_slots({"a": 1, "b": 1}, ["gone", "a"]) == ["b", "a"]  # a task no longer open
    with pytest.raises(ValueError, match="must be non-negative and sum to the 3 slots"):
        assign_slots({"a": 2}, ["a"] * 3)


def test_assign_slots_is_minimal_and_deterministic_on_random_cases():
    import random
    from collections import Counter

    from envs.curriculum import assign_slots, slot_quotas

    rng = random.Random(0)
    names = list("abcdef")
    for _ in range(200):
        num_envs = rng.randint(1, 20)
        current = [rng.choice(names + [None]) for _ in range(num_envs)]
        shares = {name: rng.choice([0.0, rng.random()]) for name in names}
        shares[rng.choice(names)] = 1.0
        quotas = slot_quotas(shares, num_envs, rollout=rng.randint(0, 5))
        after = assign_slots(quotas, current)
        assert sum(quotas.values()) == num_envs and Counter(after) == Counter({k: v for k, v in quotas.items() if v})
        kept = sum(min(count, quotas.get(task, 0)) for task, count in Counter(current).items() if task)
        assert sum(a != b for a, b in zip(current, after)) == num_envs - kept  # nobody moves who could stay
        assert assign_slots(dict(quotas), list(current)) == after


def test_schedule_slots_for_each_kind():
    from envs.curriculum import FamilySchedule, NoCurriculum

    cur = NoCurriculum(["Empty-5x5", "GoToDoor-5x5", "DoorKey-5x5", "Fetch-5x5-N2"])
    mixed = FamilySchedule("mixed")
    assert mixed.slots(cur, 0, 8) == [name for name in cur.names for _ in range(2)]
    # 1.5 slots each: the two slots left go to the first two tasks; one slot stays on Fetch-5x5-N2
    after = ["Fetch-5x5-N2", "Empty-5x5", "Empty-5x5", "GoToDoor-5x5", "GoToDoor-5x5", "DoorKey-5x5"]
    assert mixed.slots(cur, 3, 6, ["Fetch-5x5-N2"] * 6) == after
    alternate = FamilySchedule("alternate")
    nav = alternate.slots(cur, 0, 4)
    assert nav == ["Empty-5x5", "Empty-5x5", "DoorKey-5x5", "DoorKey-5x5"]
    assert alternate.slots(cur, 1, 4, nav) == ["GoToDoor-5x5", "GoToDoor-5x5", "Fetch-5x5-N2", "Fetch-5x5-N2"]
    assert alternate.slots(NoCurriculum(["Empty-5x5"]), 1, 2) == ["Empty-5x5"] * 2  # the missing family yields
    rr = FamilySchedule("round-robin")
    assert rr.slots(cur, 1, 3) == ["GoToDoor-5x5", "DoorKey-5x5", "Fetch-5x5-N2"]
    for rollout in range(5):  # the same rotation as assign's, one task per slot
        assert rr.slots(cur, rollout, 6) == [next(iter(p)) for p in rr.assign(cur, rollout, 6)]
    # More tasks of a family than slots: the family's tasks take turns over its own rollouts.
    turns = [alternate.slots(NoCurriculum(["Empty-5x5", "DoorKey-5x5", "GoToDoor-5x5"]), r, 1) for r in range(4)]
    assert turns == [["Empty-5x5"], ["GoToDoor-5x5"], ["DoorKey-5x5"], ["GoToDoor-5x5"]]
    with pytest.raises(ValueError, match="current has 2 slots, num_envs=3"):
        mixed.slots(cur, 0, 3, ["Empty-5x5"] * 2)


def test_schedule_slots_follow_a_level_opening():
    from envs.curriculum import FamilySchedule

    cur = ThresholdCurriculum(TASKS, window=10, threshold=0.8, mastered_weight=0.25)
    schedule = FamilySchedule("mixed")
    before = schedule.slots(cur, 0, 16)
    assert before == ["Empty-5x5"] * 8 + ["LavaGapS5"] * 8
    _feed(cur, "Empty-5x5", 10, 0)
    _feed(cur, "LavaGapS5", 10, 0)  # both mastered, level 2 opens: shares 1/6, 1/6, 2/3
    after = schedule.slots(cur, 1, 16, before)
    assert after == ["Empty-5x5"] * 3 + ["DoorKey-5x5"] * 5 + ["LavaGapS5"] * 3 + ["DoorKey-5x5"] * 5
    assert schedule.slots(cur, 2, 16, after) == after  # quotas unchanged: nothing moves
