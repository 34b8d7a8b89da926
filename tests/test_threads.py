"""training/threads.py: the rule's decisions, OpenMP's wait policy, and evaluate.py --threads."""

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from training.config import RunConfig
from training.loop import Trainer
from training.threads import ROLES, configure_openmp, openmp_env, resolve_threads


def _child(*args, env=None, timeout=300):
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**clean, **(env or {})})


def _why(done):
    return f"exit {done.returncode}; stderr:\n{done.stderr[-3000:]}"


@pytest.mark.parametrize("role", ROLES)
def test_a_requested_count_is_used_as_given(role):
    assert resolve_threads(3, role=role, cores=2, environ={}) == 3
    assert resolve_threads(1, role=role, cores=64, environ={"OMP_NUM_THREADS": "8"}) == 1


@pytest.mark.parametrize("cores", [1, 2, 16])
def test_evaluation_and_benchmarks_take_one_thread_whatever_the_cores(cores):
    assert resolve_threads(0, role="evaluate", cores=cores, environ={}) == 1
    assert resolve_threads(0, role="bench", cores=cores, environ={}) == 1


@pytest.mark.parametrize("cores, expected", [(1, 1), (2, 1), (3, 1), (4, 2), (16, 8)])
def test_training_takes_half_the_cores_so_that_a_second_process_fits(cores, expected):
    assert resolve_threads(0, role="train", cores=cores, environ={}) == expected


def test_async_training_leaves_the_cores_to_its_env_workers():
    assert resolve_threads(0, role="train", vectorization="async", cores=16, environ={}) == 1


def test_omp_num_threads_is_the_users_choice_when_nothing_is_requested():
    assert resolve_threads(0, role="train", cores=16, environ={"OMP_NUM_THREADS": "3"}) == 3
    assert resolve_threads(0, role="evaluate", cores=16, environ={"OMP_NUM_THREADS": "4,2"}) == 4
    for junk in ("", "0", "many", "-2"):  # not a positive count: the rule decides
        assert resolve_threads(0, role="train", cores=16, environ={"OMP_NUM_THREADS": junk}) == 8


def test_bad_requests_are_value_errors_naming_the_value():
    with pytest.raises(ValueError, match=r"--threads=-1 must be an integer >= 0 \(0 = auto\)"):
        resolve_threads(-1, role="evaluate")
    with pytest.raises(ValueError, match="role='serve' is unknown; known: train, evaluate, bench"):
        resolve_threads(0, role="serve")


def test_openmp_waits_passively_unless_the_user_chose():
    env: dict[str, str] = {}
    assert configure_openmp(env) == {"OMP_WAIT_POLICY": "PASSIVE"} and env == {"OMP_WAIT_POLICY": "PASSIVE"}
    for chosen in ({"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "300000"}):
        env = dict(chosen)
        assert openmp_env(env) == {} and configure_openmp(env) == {} and env == chosen


def test_the_threads_module_imports_no_torch():
    """configure_openmp must run before torch loads libgomp, so importing it must not load torch."""
    done = _child("-c", "import sys, training.threads; assert 'torch' not in sys.modules, 'torch imported'")
    assert done.returncode == 0, _why(done)


def test_torchs_bundled_openmp_honours_the_wait_policy():
    """libgomp reads OMP_WAIT_POLICY when it loads: set before torch, no spinning (GOMP_SPINCOUNT 0).

    This fails if a torch release ships another OpenMP runtime or reads the
    variable differently; then the measurements behind the rule need redoing.
    """
    code = "from training.threads import configure_openmp; configure_openmp(); import torch; torch.ones(1)"
    done = _child("-c", code, env={"OMP_DISPLAY_ENV": "VERBOSE"})
    assert done.returncode == 0, _why(done)
    assert "GOMP_SPINCOUNT = '0'" in done.stderr, done.stderr
    # Set after torch is loaded, it comes too late: libgomp keeps its default spin.
    late = "import torch; from training.threads import configure_openmp; configure_openmp(); torch.ones(1)"
    done = _child("-c", late, env={"OMP_DISPLAY_ENV": "VERBOSE"})
    assert "GOMP_SPINCOUNT = '300000'" in done.stderr, done.stderr


def test_evaluate_refuses_a_negative_thread_count_in_one_line(tmp_path):
    done = _child("evaluate.py", tmp_path, "--threads", "-1")
    assert done.returncode == 2, _why(done)
    assert done.stderr.strip() == "evaluate.py: error: --threads=-1 must be an integer >= 0 (0 = auto).", done.stderr


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A one-update run: evaluate.py needs a checkpoint, not a good agent."""
    root = tmp_path_factory.mktemp("runs")
    config = RunConfig(tasks="Empty-5x5", frames=256, num_envs=4, seed=0, runs_dir=str(root), run_name="tiny",
                       threads=1, video_every=0, curriculum="none")
    config.ppo.num_steps, config.ppo.batch_size = 64, 128
    Trainer(config, progress=False).run()
    return root / "tiny"


def test_evaluate_runs_with_the_threads_asked_for_and_openmp_asleep(tiny_run):
    done = _child("evaluate.py", tiny_run, "--tasks", "Empty-5x5", "--episodes", "2", "--num-envs", "2",
                  "--device", "cpu", "--threads", "1", "--no-tensorboard", "--json", tiny_run / "eval.json",
                  env={"OMP_DISPLAY_ENV": "VERBOSE"})
    assert done.returncode == 0, _why(done)
    assert "device cpu, 1 CPU thread(s)" in done.stdout, done.stdout
    assert any(line.startswith("Empty-5x5 ") for line in done.stdout.splitlines()), done.stdout  # its table row
    assert "GOMP_SPINCOUNT = '0'" in done.stderr, "evaluate.py must set the wait policy before it imports torch"


def test_the_benchmark_measures_the_rule_against_libgomps_default():
    from bench.shared_machine import Measure, _median, parse_mode

    old, new = parse_mode("old", 16), parse_mode("new", 16)
    assert (old.train_threads, old.eval_threads, old.env) == (16, 16, {"GOMP_SPINCOUNT": "300000"})
    assert (new.train_threads, new.eval_threads, new.env) == (8, 1, {"OMP_WAIT_POLICY": "PASSIVE"})
    assert parse_mode("half/1/passive", 6).train_threads == 3
    with pytest.raises(ValueError, match="mode 'all/1'"):
        parse_mode("all/1", 2)
    assert _median([Measure(3.0), Measure(1.0), Measure(2.0)]) == Measure(2.0)
    assert _median([Measure(1.0), Measure(3.0)]) == Measure(2.0)
    assert _median([Measure(1.0), Measure(45.0, capped=True)]) == Measure(45.0, capped=True)  # only a bound is known
