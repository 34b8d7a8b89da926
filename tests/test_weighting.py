"""Each loss-weighting strategy on a toy problem where its behaviour is known."""

import pytest
import torch
from torch import nn

from agents.weighting import (
    WEIGHTERS,
    DWAWeighting,
    GradNormWeighting,
    PCGradWeighting,
    StaticWeighting,
    UncertaintyWeighting,
    make_weighter,
)


def test_static_coefficients_by_name_and_prefix():
    w = StaticWeighting({"aux/": 0.1, "aux/reward": 0.5})
    losses = {"ppo/a": torch.tensor(2.0), "aux/recognition": torch.tensor(4.0), "aux/reward": torch.tensor(4.0)}
    total = w.combine(losses, [])
    assert total.item() == pytest.approx(2 + 0.4 + 2.0)
    assert w.weights() == {"ppo/a": 1.0, "aux/recognition": 0.1, "aux/reward": 0.5}


def test_static_task_vector_equals_the_named_losses_and_one_task_bit_for_bit():
    """combine_tasks (a vector over task indices, the update's path) is combine over the named losses."""
    names = ["a", "b", "c", "d"]
    w = StaticWeighting({"ppo/b": 0.25, "aux/": 0.1})
    g = torch.Generator().manual_seed(0)
    task_losses = torch.randn(4, generator=g, requires_grad=True)
    present = [0, 1, 3]
    vector = task_losses * torch.tensor([1.0, 1.0, 0.0, 1.0])  # absent tasks are zero
    extra = {"aux/recognition": torch.tensor(3.0)}
    named = {f"ppo/{names[t]}": vector[t] for t in present}
    expected = w.combine({**named, **extra}, [])
    expected_weights = w.weights()
    total = w.combine_tasks(vector, names, present, extra)
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert w.weights() == expected_weights
    (grad,) = torch.autograd.grad(total, task_losses)
    assert grad.tolist() == [1.0, 0.25, 0.0, 1.0]
    one = torch.zeros(4)
    one[2] = 0.123456789
    reference = StaticWeighting().combine({"ppo/c": one[2], **extra}, [])
    assert torch.equal(StaticWeighting().combine_tasks(one, names, [2], extra), reference)  # bit for bit


def test_uncertainty_weights_move_away_from_the_noisier_task():
    torch.manual_seed(0)
    shared = nn.Parameter(torch.zeros(1))
    weighter = UncertaintyWeighting(["quiet", "noisy"])
    opt = torch.optim.Adam([shared, *weighter.parameters()], lr=0.05)
    for _ in range(400):
        quiet = ((shared - (1 + 0.1 * torch.randn(64))) ** 2).mean()
        noisy = ((shared - (1 + 2.0 * torch.randn(64))) ** 2).mean()
        loss = weighter.combine({"quiet": quiet, "noisy": noisy}, [shared])
        opt.zero_grad()
        loss.backward()
        opt.step()
    weights = weighter.weights()
    assert weights["quiet"] > 10 * weights["noisy"], weights
    assert shared.item() == pytest.approx(1.0, abs=0.2)  # the quiet task dominates the estimate


def test_uncertainty_stays_finite_on_negative_losses():
    weighter = UncertaintyWeighting(["policy"])
    opt = torch.optim.Adam(weighter.parameters(), lr=0.1)
    for _ in range(300):
        loss = weighter.combine({"policy": torch.tensor(-0.5)}, [])
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert 1.0 < weighter.weights()["policy"] < 3.0  # optimum exp(-s) = 1/|L| = 2, not infinity


def test_gradnorm_equalises_gradient_norms():
    torch.manual_seed(0)
    shared = nn.Linear(4, 4)
    heads = nn.ModuleList([nn.Linear(4, 1), nn.Linear(4, 1)])
    x = torch.randn(128, 4)
    y = torch.randn(128, 2)
    weighter = GradNormWeighting(["big", "small"], alpha=0.0, lr=0.05)
    opt = torch.optim.Adam([{"params": [*shared.parameters(), *heads.parameters()], "lr": 1e-3},
                            {"params": weighter.parameters(), "lr": weighter.lr}])

    def losses():
        h = torch.relu(shared(x))
        return {"big": 20 * ((heads[0](h)[:, 0] - y[:, 0]) ** 2).mean(), "small": ((heads[1](h)[:, 0] - y[:, 1]) ** 2).mean()}

    def weighted_norm_ratio():
        ls = losses()
        w = weighter.weights() or {"big": 1.0, "small": 1.0}
        norms = [w[k] * torch.autograd.grad(v, shared.weight, retain_graph=True)[0].norm().item() for k, v in ls.items()]
        return max(norms) / min(norms)

    before = weighted_norm_ratio()
    for _ in range(300):
        total = weighter.combine(losses(), list(shared.parameters()))
        opt.zero_grad()
        total.backward()
        opt.step()
    after = weighted_norm_ratio()
    assert before > 5 and after < 1.5, (before, after)
    assert sum(weighter.weights().values()) == pytest.approx(2.0, rel=0.05)


def test_dwa_favours_the_loss_that_falls_slower():
    weighter = DWAWeighting(["fast", "slow"], temperature=0.5)
    for step, (fast, slow) in enumerate([(4.0, 1.0), (2.0, 1.0), (1.0, 1.0)]):
        weighter.combine({"fast": torch.tensor(fast), "slow": torch.tensor(slow)}, [])
        weighter.end_update()
    w = weighter.current.tolist()
    assert w[1] > w[0] and sum(w) == pytest.approx(2.0)


def test_pcgrad_projects_away_the_conflict():
    g1, g2 = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])
    projected = PCGradWeighting.project(torch.stack([g1, g2]), torch.tensor([0, 1]))
    assert projected[0] @ g2 == pytest.approx(0.0, abs=1e-6)
    assert projected[1] @ g1 == pytest.approx(0.0, abs=1e-6)
    assert projected.tolist() == [[0.5, 0.5], [0.0, 1.0]]
    # agreeing gradients are left alone
    same = PCGradWeighting.project(torch.stack([g1, torch.tensor([1.0, 1.0])]), torch.tensor([1, 0]))
    assert same.tolist() == [[1.0, 0.0], [1.0, 1.0]]


def test_pcgrad_combine_sets_the_projected_gradient_on_shared_params():
    p = nn.Parameter(torch.zeros(2))
    own = nn.Parameter(torch.zeros(1))  # used by one loss only: ordinary gradient
    losses = {"a": torch.tensor([1.0, 0.0]) @ p + 3 * own.sum(), "b": torch.tensor([-1.0, 1.0]) @ p}
    PCGradWeighting().combine(losses, [p]).backward()
    assert p.grad.tolist() == pytest.approx([0.5, 1.5])
    assert own.grad.tolist() == [3.0]


@pytest.mark.parametrize("name", list(WEIGHTERS))
def test_every_weighter_round_trips_its_state(name):
    names = ["ppo/a", "aux/reward"]
    a = make_weighter(name, loss_names=names)
    p = nn.Parameter(torch.ones(3))
    for _ in range(3):
        out = a.combine({"ppo/a": (p**2).sum(), "aux/reward": p.sum()}, [p])
        out.backward()
        a.end_update()
    b = make_weighter(name, loss_names=names)
    b.load_state_dict(a.state_dict())
    assert b.weights() == a.weights()
    for x, y in zip(a.state_dict().values(), b.state_dict().values()):
        if isinstance(x, torch.Tensor):
            assert torch.equal(x.nan_to_num(), y.nan_to_num())


def test_unknown_weighter_lists_the_known_ones():
    with pytest.raises(ValueError, match="weighting='magic' is unknown; known: static, uncertainty, gradnorm, dwa, pcgrad"):
        make_weighter("magic", loss_names=["a"])
