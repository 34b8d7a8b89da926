"""Data-parallel training across processes with torch.distributed, launched by torchrun.

    torchrun --standalone --nproc-per-node 2 train.py --config configs/quick.yaml
    torchrun --nnodes 2 --nproc-per-node 4 --rdzv-backend c10d --rdzv-endpoint host0:29400 \\
        --rdzv-id run1 train.py ...

torchrun starts one process per rank and tells each its ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` through the environment; :func:`setup` reads
them and joins the process group (NCCL when the rank has a GPU, gloo on CPU).
A plain ``python train.py`` is a world of one: nothing here costs it anything.

How a run is split (see :class:`training.loop.Trainer`):

* every rank steps its own ``num_envs`` slots, seeded apart;
* the model is wrapped in ``DistributedDataParallel``: gradients are averaged
  across ranks in the backward pass, so parameters and optimizer states stay
  identical; the loss weighter's state is broadcast from rank 0 after each update;
* the episodes every rank finished are gathered after each rollout and fed, in
  rank order, to every rank's curriculum and statistics: all ranks open the
  same tasks at the same update;
* frame counters and FPS count the frames of all ranks;
* rank 0 alone writes TensorBoard, videos and checkpoints; a checkpoint holds
  every rank's environments, so a resumed run with the same number of ranks
  continues exactly, and it loads in a single process (rank 0's slots) and in
  ``evaluate.py`` like any other.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from agents.ppo import Collectives


@dataclass(frozen=True)
class World:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = World()


def launched_by_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ or ("RANK" in os.environ and "WORLD_SIZE" in os.environ)


def setup(device: str) -> tuple[World, torch.device | None]:
    """Join the process group if torchrun started us; (world, device of this rank or None to decide as usual).

    ``device`` is the run's ``--device`` (auto, cpu, cuda). With CUDA, rank
    ``LOCAL_RANK`` takes GPU ``LOCAL_RANK`` and the backend is NCCL; else gloo.
    """
    if not launched_by_torchrun() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return SINGLE, None
    world = World(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", "0")))
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        if world.local_rank >= torch.cuda.device_count():
            raise ValueError(
                f"LOCAL_RANK={world.local_rank} but this machine has {torch.cuda.device_count()} CUDA devices; "
                "give torchrun --nproc-per-node at most that many, or --device cpu."
            )
        torch.cuda.set_device(world.local_rank)
    if not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if use_cuda else "gloo", timeout=datetime.timedelta(minutes=10)
        )
    return world, torch.device(f"cuda:{world.local_rank}") if use_cuda else torch.device("cpu")


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_gather(value: Any, world: World) -> list[Any]:
    """``value`` of every rank, in rank order (a list of one in a single process)."""
    if not world.distributed:
        return [value]
    out: list[Any] = [None] * world.world_size
    dist.all_gather_object(out, value)
    return out


class RankCollectives(Collectives):
    """:class:`agents.ppo.Collectives` over the process group of a job of two or more ranks."""

    def __init__(self, world: World, device: torch.device) -> None:
        assert world.distributed, "RankCollectives is for a job of two or more ranks"
        self.world, self.device = world, device

    def average_gradients(self, parameters) -> None:
        """Average ``.grad`` of parameters DDP does not own (the loss weighter's: one tensor at most)."""
        for p in parameters:
            if p.grad is None:  # every rank reduces the same tensors, used or not
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad)
            p.grad /= self.world.world_size

    def mean(self, value: float) -> float:
        tensor = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return float(tensor.item()) / self.world.world_size

    def broadcast_module_state(self, module: torch.nn.Module) -> None:
        with torch.no_grad():
            for tensor in [*module.parameters(), *module.buffers()]:
                dist.broadcast(tensor.data, src=0)
        # Non-tensor state (e.g. the names and weights last used, for logging) follows rank 0 too.
        extra = [module.get_extra_state()] if hasattr(module, "get_extra_state") else [None]
        dist.broadcast_object_list(extra, src=0)
        if extra[0] is not None:
            module.set_extra_state(extra[0])
