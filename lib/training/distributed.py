"""Data-parallel training over several processes (PyTorch DDP) for every model trained through :func:`~lib.training.loop.fit`.

Launching:

- command line: ``torchrun --nproc_per_node N -m lib train ...`` (or ``train-detector``; one process per
  GPU, or N CPU processes; several machines as ``torchrun --nnodes`` allows). torchrun sets ``RANK``,
  ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`process_group` joins
  the group they describe.
- server: MONAI Label's ``multi_gpu`` request option spawns one process per visible GPU and calls
  the train task with ``(rank, world_size)``; :class:`lib.trainers.core_task.CoreTrainTask` joins the
  group with them (``MASTER_ADDR``/``MASTER_PORT`` come from MONAI Label's train subprocess).

The backend is NCCL when the device is a GPU, gloo on the CPU. Each process uses the GPU of its local
rank (``cuda:LOCAL_RANK``); on the CPU every process uses the CPU. A single process (no launcher) is a
world of one: every function here then does what the one-process code did, bit for bit.

What :func:`~lib.training.loop.fit` does by itself when the world has several processes:

- the epoch records are the same on every rank: the dicts ``train_epoch`` and ``validate`` return are
  averaged over the ranks (:func:`average`: each rank's means weighted by its ``images`` entry, the
  number of images they cover), so every rank takes the same early-stopping decision and stops at the
  same epoch; a cancel (``should_stop``) on any rank stops every rank at the same mini-batch
  (:func:`any_rank`);
- before each validation, rank 0's buffers (batch-norm running statistics) are copied to every rank,
  so all ranks validate the model rank 0 checkpoints;
- rank 0 alone writes the checkpoint, shows the progress bar and calls ``on_epoch``;
- the summary gains ``world_size``, ``rank`` and ``rank_epochs`` (the epochs each rank ran, gathered:
  equal on every rank).

What a model's training function must do to get DDP (as :func:`lib.loris.train.train` and
:func:`lib.detection.train.train_detector` do):

1. Run inside ``with process_group(device) as world:`` (joins a torchrun launch, uses a group already
   joined, e.g. by the server, and is a world of one otherwise) and take its device from
   ``rank_device(device, world)``.
2. Resume from ``from_main(lambda: kind.load_checkpoint(out_dir), world)``: rank 0 reads the checkpoint
   and every rank receives it (no shared disk needed between machines); an error there is raised on
   every rank.
3. Build the network, then ``network, forward = data_parallel(network, world)``: ``network`` is what to
   checkpoint, save and hand to ``fit`` (batch norms synchronized across GPUs: SyncBatchNorm, whose
   state dict is a BatchNorm's), ``forward`` is the module to train through (DDP: gradients averaged
   across ranks at ``backward``). Create the optimizer on ``network.parameters()``.
4. Each epoch, train on ``epoch_order(n, epoch, seed, world, generator)``: one process, a permutation
   drawn from the model's ``generator`` (as before); several, this rank's shard of a permutation
   seeded by ``seed + epoch`` (:class:`torch.utils.data.DistributedSampler`: the same on every rank,
   padded so that every rank has as many images, hence mini-batches: DDP needs every rank to run as
   many backward passes), and ``generator`` reseeded for this epoch and rank (augmentations differ
   between ranks and a resumed run draws the same). A model whose draws come from other generators
   (the detector's numpy ones) takes ``epoch_shard(n, epoch, seed, world)`` and reseeds them with
   ``epoch_seed(seed, epoch, rank)``. ``batch_size`` is per process: the effective
   batch is ``batch_size x world_size``. Return the epoch's means with ``"images"``: how many images
   they cover.
5. Validate on ``shard(n_valid, world)`` (this rank's share of the validation images) with the unwrapped
   ``network`` and return the means with ``"images"``; ``fit`` averages them. A metric that is not a
   mean over images (e.g. a detector's mAP) must be computed on every image by every rank instead
   (then ``images`` is left out and the ranks' equal values average to themselves).
6. Pass ``world=world`` to :func:`~lib.training.loop.fit`; after it, only ``world.is_main`` calibrates
   and writes the model folder; the other ranks return the summary.
7. Let the launchers in: add its command to :data:`lib.__main__.DATA_PARALLEL` (other commands refuse a
   multi-process launch) and set ``data_parallel = True`` on its MONAI Label trainer
   (:class:`lib.trainers.core_task.CoreTrainTask`; with ``multi_gpu`` every rank then trains, else rank 0
   trains alone); print only on rank 0 (``summary["rank"]``).

When training ends, rank 0 calibrates and publishes while the other ranks wait for it at the end of
:func:`process_group` (a barrier: no rank tears down its connections while another still communicates).
A rank that fails ends the launch (torchrun and ``torch.multiprocessing.spawn`` stop the other processes).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, TypeVar

import torch
import torch.distributed as dist

from lib.errors import DataError
from lib.training.devices import resolve_device

T = TypeVar("T")

LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
"""The environment a launcher (torchrun) sets for every process."""


@dataclass(frozen=True)
class World:
    """This process's place among the training processes.

    Attributes:
        rank: 0 .. world_size - 1 (rank 0 writes the files).
        world_size: the number of processes; 1 without a launcher.
        local_rank: the rank on this machine (which GPU it uses).
        backend: ``nccl``, ``gloo``, or None for a world of one.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def describe(self) -> str:
        """``"1 process"`` or ``"world size 2 (gloo), rank 0"``."""
        return "1 process" if not self.distributed else f"world size {self.world_size} ({self.backend}), rank {self.rank}"


def launched() -> bool:
    """True when a launcher started this process as one of several (``WORLD_SIZE`` > 1)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        raise DataError(f"environment WORLD_SIZE={os.environ['WORLD_SIZE']!r}: expected a whole number") from None


def current() -> World:
    """The world of the process group this process has joined; a world of one when none."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
    return World(dist.get_rank(), dist.get_world_size(), local, str(dist.get_backend()))


def backend_for(device: torch.device) -> str:
    """NCCL for GPUs, gloo for the CPU."""
    return "nccl" if device.type == "cuda" else "gloo"


def rank_device(device: str | torch.device | None, world: World) -> torch.device:
    """This rank's device: ``device`` resolved (``"auto"``: CUDA when available); in a world of several
    processes a GPU request means the GPU of the local rank (``cuda:LOCAL_RANK``)."""
    dev = resolve_device(device)
    if not world.distributed or dev.type != "cuda":
        return dev
    count = torch.cuda.device_count()
    if world.local_rank >= count:
        raise DataError(f"rank {world.rank} (local rank {world.local_rank}) has no GPU of its own: {count} visible; "
                        "launch at most one process per GPU (torchrun --nproc_per_node)")
    return torch.device("cuda", world.local_rank)


@contextmanager
def process_group(device: str | torch.device | None = "auto", *, rank: int | None = None,
                  world_size: int | None = None, local_rank: int | None = None, backend: str | None = None,
                  init_method: str = "env://") -> Iterator[World]:
    """The world this training runs in, for the duration of the ``with`` block.

    - A process group already joined (by the caller, e.g. the server): its world; left joined.
    - ``world_size`` > 1 given (MONAI Label's spawn) or a torchrun launch (``WORLD_SIZE`` > 1): joins the
      group (``init_method``; ``env://`` reads ``MASTER_ADDR``/``MASTER_PORT``), backend NCCL for a GPU
      ``device`` and gloo for the CPU unless ``backend`` is given, selects the local rank's GPU, and
      leaves the group at the end, once every rank has reached it (rank 0's publishing included).
    - Otherwise: a world of one.
    """
    if dist.is_available() and dist.is_initialized():
        yield current()
        return
    if world_size is None and not launched():
        yield World()
        return
    if world_size is None:
        rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
    rank = 0 if rank is None else int(rank)
    local_rank = rank if local_rank is None else int(local_rank)
    if world_size <= 1:
        yield World()
        return
    if not dist.is_available():
        raise DataError("this PyTorch build has no torch.distributed; train with one process")
    dev = resolve_device(device)
    backend = backend or backend_for(dev)
    if dev.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise DataError(f"local rank {local_rank} has no GPU: {torch.cuda.device_count()} visible; launch at "
                            "most one process per GPU")
        torch.cuda.set_device(local_rank)
    os.environ.setdefault("LOCAL_RANK", str(local_rank))
    dist.init_process_group(backend=backend, init_method=init_method, rank=rank, world_size=world_size)
    try:
        yield World(rank, world_size, local_rank, backend)
        dist.barrier()  # no rank leaves (and tears down its connections) while another still communicates
    finally:
        dist.destroy_process_group()


def data_parallel(network: torch.nn.Module, world: World,
                  find_unused_parameters: bool = False) -> tuple[torch.nn.Module, torch.nn.Module]:
    """``(network, forward)``: the module to checkpoint and save, and the module to train through.

    One process: both are ``network``. Several: batch norms become :class:`torch.nn.SyncBatchNorm` on GPUs
    (statistics over the whole distributed mini-batch; the CPU has no synchronized batch norm, each rank
    normalizes its own mini-batch) and ``forward`` is ``DistributedDataParallel(network)``, which averages
    the gradients across ranks (its parameters start as rank 0's). ``network`` must already be on the
    rank's device. ``find_unused_parameters``: some parameters take no part in the loss (e.g. FPN levels
    the head does not read); they then get no gradient, as in one process.
    """
    if not world.distributed:
        return network, network
    device = next(network.parameters()).device
    if device.type == "cuda":
        network = torch.nn.SyncBatchNorm.convert_sync_batchnorm(network)
    ids = [device.index] if device.type == "cuda" else None
    forward = torch.nn.parallel.DistributedDataParallel(network, device_ids=ids,
                                                        output_device=device.index if ids else None,
                                                        find_unused_parameters=find_unused_parameters)
    return network, forward


def epoch_order(n: int, epoch: int, seed: int, world: World, generator: torch.Generator) -> torch.Tensor:
    """The training indices this rank visits in ``epoch`` (1-based), in order (see the module docstring, 4)."""
    if not world.distributed:
        return torch.randperm(n, generator=generator)
    generator.manual_seed(epoch_seed(seed, epoch, world.rank))
    return epoch_shard(n, epoch, seed, world)


def epoch_shard(n: int, epoch: int, seed: int, world: World) -> torch.Tensor:
    """This rank's share of a permutation of ``n`` training indices for ``epoch``, the same permutation on every
    rank (:class:`torch.utils.data.DistributedSampler`, padded so that every rank gets as many)."""
    from torch.utils.data import DistributedSampler

    sampler = DistributedSampler(range(n), num_replicas=world.world_size, rank=world.rank, shuffle=True, seed=seed)
    sampler.set_epoch(epoch)
    return torch.tensor(list(sampler), dtype=torch.long)


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """The seed of a rank's random draws (augmentations) in ``epoch`` of a data-parallel training: distinct per
    rank and epoch, and the same when a resumed training draws that epoch again."""
    return (int(seed) * 1_000_003 + epoch * 9_973 + rank) % (2 ** 63)


def shard(n: int, world: World) -> torch.Tensor:
    """This rank's share of ``n`` evaluation items: ``rank, rank + world_size, ...`` (all of them for one process)."""
    return torch.arange(world.rank, n, world.world_size, dtype=torch.long)


def _communication_device(world: World) -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if world.backend == "nccl" else torch.device("cpu")


def average(values: dict | None, world: World) -> dict | None:
    """The mean over every rank's images of each number in ``values`` (this rank's means).

    Each rank's means are weighted by its ``values["images"]`` (1 when absent); ``images`` becomes the
    total. The result is rank 0's reduction, broadcast, so it is bit for bit the same on every rank.
    Non-numbers are kept as they are; a whole number whose mean is whole stays a whole number (a count every
    rank computed alike). One process: ``values`` unchanged.
    """
    if values is None or not world.distributed:
        return values
    keys = sorted(k for k, v in values.items() if k != "images" and isinstance(v, (int, float)) and not isinstance(v, bool))
    weight = float(values.get("images", 1))
    dev = _communication_device(world)
    t = torch.tensor([weight] + [float(values[k]) * weight for k in keys], dtype=torch.float64, device=dev)
    dist.all_reduce(t)
    dist.broadcast(t, src=0)
    total = float(t[0])
    out = dict(values)
    for i, k in enumerate(keys):
        out[k] = float(t[i + 1]) / total if total > 0 else float("nan")
        if isinstance(values[k], int) and out[k].is_integer():
            out[k] = int(out[k])  # a count the ranks agree on stays a count
    if "images" in values:
        out["images"] = int(round(total))
    return out


def any_rank(flag: bool, world: World) -> bool:
    """True on every rank when ``flag`` is True on at least one (one process: ``flag``)."""
    if not world.distributed:
        return bool(flag)
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=_communication_device(world))
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def broadcast_buffers(module: torch.nn.Module, world: World) -> None:
    """Copy rank 0's buffers (batch-norm running statistics) into every rank's ``module``."""
    if not world.distributed:
        return
    for buffer in module.buffers():
        dist.broadcast(buffer.data, src=0)


def gather(value, world: World) -> list:
    """``[value of rank 0, value of rank 1, ...]`` on every rank (picklable values)."""
    if not world.distributed:
        return [value]
    out = [None] * world.world_size
    dist.all_gather_object(out, value)
    return out


def from_main(fn: Callable[[], T], world: World) -> T:
    """``fn()`` run on rank 0, its result sent to every rank; an exception it raises is raised on every rank."""
    if not world.distributed:
        return fn()
    box: list = [None]
    if world.is_main:
        try:
            box[0] = ("ok", fn())
        except Exception as exc:  # noqa: BLE001 - re-raised on every rank below
            box[0] = ("error", exc)
    dist.broadcast_object_list(box, src=0, device=_communication_device(world))
    status, payload = box[0]
    if status == "error":
        raise payload
    return payload
