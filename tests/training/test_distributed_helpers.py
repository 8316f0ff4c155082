"""lib.training.distributed: a world of one changes nothing; two gloo processes agree on every decision."""

import os

import pytest
import torch

from lib.errors import DataError, ModelError
from lib.server.process import free_port
from lib.training import distributed
from lib.training.distributed import World


def test_a_world_of_one_is_the_one_process_code():
    world = World()
    assert not world.distributed and world.is_main and world.describe() == "1 process"
    generator, same = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(distributed.epoch_order(7, 1, 3, world, generator), torch.randperm(7, generator=same))
    assert torch.equal(generator.get_state(), same.get_state())  # the generator is not reseeded
    assert distributed.shard(5, world).tolist() == [0, 1, 2, 3, 4]
    values = {"loss": 0.5, "images": 3}
    assert distributed.average(values, world) is values and distributed.average(None, world) is None
    assert distributed.any_rank(True, world) and not distributed.any_rank(False, world)
    assert distributed.gather(4, world) == [4] and distributed.from_main(lambda: "x", world) == "x"
    network = torch.nn.Linear(2, 2)
    assert distributed.data_parallel(network, world) == (network, network)


def test_no_launcher_means_a_world_of_one(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with distributed.process_group("cpu") as world:
        assert world == World()
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(DataError, match="WORLD_SIZE='two'"):
        distributed.launched()


def _ranks(rank: int, world_size: int, port: int, results) -> None:
    """One of two gloo processes: every helper, its outcome put on ``results``."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    with distributed.process_group("cpu", rank=rank, world_size=world_size) as world:
        out = {"world": (world.rank, world.world_size, world.backend)}
        orders = [distributed.epoch_order(10, epoch, 7, world, torch.Generator()).tolist() for epoch in (1, 2)]
        out["orders"] = orders
        out["shard"] = distributed.shard(5, world).tolist()
        # rank 0 covers 3 images with mean 1.0, rank 1 covers 1 image with mean 5.0: (3 + 5) / 4 = 2.0
        out["average"] = distributed.average({"loss": [1.0, 5.0][rank], "images": [3, 1][rank], "name": "x"}, world)
        # a count every rank computed alike (the detector's n_images: every rank validates every image) stays whole
        out["counts"] = distributed.average({"n_images": 22, "iou": [0.5, 0.75][rank]}, world)
        out["shards"] = [distributed.epoch_shard(7, 1, 3, world).tolist(), distributed.epoch_seed(3, 1, rank)]
        out["any"] = (distributed.any_rank(rank == 1, world), distributed.any_rank(False, world))
        out["gather"] = distributed.gather(rank * 10, world)
        out["from_main"] = distributed.from_main(lambda: {"checkpoint": torch.arange(3)}, world)["checkpoint"].tolist()
        try:
            distributed.from_main(lambda: (_ for _ in ()).throw(ModelError("bad checkpoint")), world)
        except ModelError as exc:
            out["error"] = str(exc)
        bn = torch.nn.BatchNorm1d(2)
        bn.running_mean.fill_(float(rank + 1))
        distributed.broadcast_buffers(bn, world)
        out["buffers"] = bn.running_mean.tolist()
        network, forward = distributed.data_parallel(torch.nn.Linear(2, 1), world)
        out["ddp"] = type(forward).__name__
        forward(torch.full((1, 2), float(rank + 1))).sum().backward()
        out["grad"] = network.weight.grad.tolist()  # averaged over the ranks
        results.put((rank, out))


@pytest.mark.slow
def test_two_gloo_processes_agree_on_every_decision():
    import torch.multiprocessing as mp

    context = mp.get_context("spawn")
    results = context.SimpleQueue()
    mp.start_processes(_ranks, args=(2, free_port(), results), nprocs=2, start_method="spawn")
    outcome = dict(results.get() for _ in range(2))
    first, second = outcome[0], outcome[1]
    assert first["world"] == (0, 2, "gloo") and second["world"] == (1, 2, "gloo")
    for epoch in (0, 1):  # disjoint shards of one permutation per epoch, as long as each other
        a, b = first["orders"][epoch], second["orders"][epoch]
        assert len(a) == len(b) == 5 and sorted(a + b) == list(range(10))
    assert first["orders"][0] != first["orders"][1]  # reshuffled every epoch
    assert first["shard"] == [0, 2, 4] and second["shard"] == [1, 3]
    (a, seed_a), (b, seed_b) = first["shards"], second["shards"]
    assert len(a) == len(b) == 4 and set(a + b) == set(range(7)) and seed_a != seed_b  # padded to equal shares
    for out in (first, second):
        assert out["average"] == {"loss": 2.0, "images": 4, "name": "x"}
        assert out["counts"] == {"n_images": 22, "iou": 0.625} and type(out["counts"]["n_images"]) is int
        assert out["any"] == (True, False)
        assert out["gather"] == [0, 10] and out["from_main"] == [0, 1, 2]
        assert out["error"] == "bad checkpoint"  # raised on every rank
        assert out["buffers"] == [1.0, 1.0]  # rank 0's running statistics
        assert out["ddp"] == "DistributedDataParallel"
    assert first["grad"] == second["grad"] == [[1.5, 1.5]]  # mean of the inputs (1, 1) and (2, 2)


def test_commands_that_are_not_data_parallel_refuse_a_multi_process_launch(monkeypatch, tmp_path, capsys):
    from lib.__main__ import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["sample-data", "--out", str(tmp_path / "s")]) == 2
    assert "python -m lib sample-data runs in one process; launch it without torchrun" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
