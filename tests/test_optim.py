"""FusedAdam: torch's fused Adam step for step, its checkpoint format, and no compiler import."""

import pytest
import torch

from agents.optim import FusedAdam
from tests.conftest import expect, python


def _nets(seed=0):
    torch.manual_seed(seed)
    a = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    b = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    b.load_state_dict(a.state_dict())
    return a, b


def _groups(net, extra):
    return [{"params": list(net.parameters())}, {"params": [extra], "lr": 0.05}]


def _train(net, extra, opt, steps, seed=1, frozen=None):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(16, 5, generator=gen)
        loss = (net(x) * extra).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if frozen is not None:
            frozen.grad = None
        opt.step()


def test_matches_torch_fused_adam_bit_for_bit_with_groups_and_a_frozen_parameter():
    a, b = _nets()
    ea, eb = torch.ones(3, requires_grad=True), torch.ones(3, requires_grad=True)
    ours = FusedAdam(_groups(a, ea), lr=1e-2, eps=1e-5)
    ref = torch.optim.Adam(_groups(b, eb), lr=1e-2, eps=1e-5, fused=True)
    _train(a, ea, ours, 7, frozen=a[0].bias)
    _train(b, eb, ref, 7, frozen=b[0].bias)
    for pa, pb in zip([*a.parameters(), ea], [*b.parameters(), eb]):
        assert torch.equal(pa, pb)
    assert a[0].bias not in ours.state  # never had a gradient: no state, as in torch
    assert ours.state_dict()["state"].keys() == ref.state_dict()["state"].keys()


def test_state_dict_loads_both_ways_with_torch_adam():
    a, b = _nets()
    ea, eb = torch.ones(3, requires_grad=True), torch.ones(3, requires_grad=True)
    ref = torch.optim.Adam(_groups(b, eb), lr=1e-2, eps=1e-5, fused=True)
    _train(b, eb, ref, 3)
    a.load_state_dict(b.state_dict())
    ea.data.copy_(eb)
    ours = FusedAdam(_groups(a, ea), lr=1.0, eps=1e-5)
    ours.load_state_dict(ref.state_dict())  # torch's checkpoint into ours
    assert ours.param_groups[1]["lr"] == 0.05 and ours.param_groups[0]["lr"] == 1e-2
    _train(a, ea, ours, 4, seed=2)
    _train(b, eb, ref, 4, seed=2)
    assert all(torch.equal(x, y) for x, y in zip([*a.parameters(), ea], [*b.parameters(), eb]))
    back = torch.optim.Adam(_groups(b, eb), lr=1.0, eps=1e-5, fused=True)
    back.load_state_dict(ours.state_dict())  # and ours into torch's
    for (i, s), (j, t) in zip(back.state_dict()["state"].items(), ref.state_dict()["state"].items()):
        assert i == j and all(torch.equal(s[k], t[k]) for k in ("step", "exp_avg", "exp_avg_sq"))


def test_load_copies_and_refuses_a_mismatched_state():
    a, _ = _nets()
    e = torch.ones(3, requires_grad=True)
    ours = FusedAdam(_groups(a, e), lr=1e-2)
    _train(a, e, ours, 2)
    saved = ours.state_dict()
    other = FusedAdam(_groups(a, e), lr=1e-2)
    other.load_state_dict(saved)
    _train(a, e, other, 1)
    assert float(saved["state"][0]["step"]) == 2.0  # the loaded copy moved on, the saved one did not
    with pytest.raises(ValueError, match="has 2 parameter groups, this optimizer 1"):
        FusedAdam([{"params": a.parameters()}], lr=1e-2).load_state_dict(saved)
    small = FusedAdam([{"params": a.parameters()}, {"params": [torch.ones(4, requires_grad=True)]}], lr=1e-2)
    with pytest.raises(ValueError, match="shape"):
        small.load_state_dict(saved)
    with pytest.raises(ValueError, match="more than one group"):
        FusedAdam([{"params": [e]}, {"params": [e]}], lr=1e-2)


def test_a_training_process_never_imports_the_compiler():
    """torch.optim imports torch._dynamo (~70 MB resident); a PPO update with checkpoints must not."""
    code = (
        "import sys, tempfile\n"
        "from training.config import RunConfig\n"
        "from training.loop import Trainer\n"
        "c = RunConfig(tasks='Empty-5x5', frames=512, num_envs=4, vectorization='sync', curriculum='none',\n"
        "              video_every=0, checkpoint_every=1, runs_dir=tempfile.mkdtemp(), run_name='x')\n"
        "c.ppo.num_steps = 64\n"
        "Trainer(c, progress=False).run()\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    out = expect(python("-c", code))
    assert out.stdout.strip().splitlines()[-1] == "False"
