"""The key queue under two gloo processes: keys and ids are gathered in rank order, every rank holds the same queue."""

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ssdistill.losses.queue import KeyQueue


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        queue = KeyQueue(size=6, dim=2)
        for step in range(2):  # 2 ranks x 2 keys per step: the second step wraps around
            ids = torch.tensor([10 * step + 2 * rank, 10 * step + 2 * rank + 1])
            queue.enqueue(torch.full((2, 2), float(rank)), ids)
        torch.save({"ids": queue.ids, "keys": queue.keys, "pointer": queue.pointer}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_enqueue_gathers_across_two_processes(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    states = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    for state in states:
        # step 0 wrote ids 0,1 (rank 0), 2,3 (rank 1) at 0..3; step 1 wrote 10,11,12,13 at 4,5,0,1
        assert state["ids"].tolist() == [12, 13, 2, 3, 10, 11] and int(state["pointer"]) == 2
        assert state["keys"][:, 0].tolist() == [1.0, 1.0, 1.0, 1.0, 0.0, 0.0]
    assert torch.equal(states[0]["keys"], states[1]["keys"])
