"""RoB under two gloo processes: its batch statistics are those of the global batch, as the official DINO and MSN code
reduce them. 2 processes x B images give, step after step, the numbers of 1 process x 2B on the same images: the EMA
centre (RoB-DINO), the Sinkhorn targets and the ME-MAX term (RoB-MSN); first through ``RoB.training_step`` itself on
a module built by the real run assembly, then through a whole 2-process Lightning run against a 1-process one."""

import os
import socket
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ssdistill.distributed import global_mean_nograd
from ssdistill.losses.selfsup import memax, sinkhorn
from ssdistill.recipe import build_config

from integration.common import assembled, tiny_config

B, STEPS, WORLD = 4, 3, 2  # per-process batch, steps; the one-process run takes 2B per step


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rows(batch, part: slice):
    """The rows ``part`` of every tensor of a (nested) batch."""
    if isinstance(batch, dict):
        return {key: _rows(value, part) for key, value in batch.items()}
    return batch[part] if isinstance(batch, torch.Tensor) else batch


def _steps(module, batches) -> list[dict]:
    """``training_step`` on each batch: per step the DINO centre after it, the loss terms, the Sinkhorn targets."""
    import ssdistill.methods.rob.msn as rob  # MSN's Sinkhorn targets

    targets = []

    def recorded(*args, **kwargs):
        targets.append(sinkhorn(*args, **kwargs))
        return targets[-1]

    rob.sinkhorn, original = recorded, rob.sinkhorn
    module.log_loss = lambda loss, **terms: (setattr(module, "terms", terms), loss)[1]  # no Lightning trainer here
    module.eval()  # per-sample BatchNorm: the student's outputs do not depend on how the images are split
    records = []
    try:
        for batch in batches:
            targets.clear()
            loss = module.training_step(batch, 0)
            record = {"loss": loss.detach(), **{key: value.detach() for key, value in module.terms.items()}}
            if hasattr(module, "dino_center"):
                record["center"] = module.dino_center.clone()
            if targets:
                record["sinkhorn"] = torch.cat(targets, dim=1)  # [images, 2K]: both global crops' targets
            records.append(record)
    finally:
        rob.sinkhorn = original
    return records


def _worker(rank: int, port: int, folder: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        folder, mine = Path(folder), slice(rank * B, (rank + 1) * B)
        batches = [_rows(batch, mine) for batch in torch.load(folder / "batches.pt")]
        out = {base: _steps(torch.load(folder / f"{base}.pt", weights_only=False), batches) for base in ("dino", "msn")}
        # the statistic functions themselves, on this rank's rows of a fixed global matrix
        generator = torch.Generator().manual_seed(0)
        matrix = torch.rand(WORLD * B, 6, generator=generator)
        probabilities = torch.softmax(torch.randn(WORLD * B, 6, generator=generator), dim=1)[mine].requires_grad_()
        regulariser = memax(probabilities, all_ranks=True)
        regulariser.backward()
        out["functions"] = {
            "sinkhorn": sinkhorn(matrix[mine], all_ranks=True),
            "mean": global_mean_nograd(matrix[mine]),
            "memax": regulariser.detach(),
            "memax_grad": probabilities.grad,
        }
        torch.save(out, folder / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _module(tmp_path, **method):
    raw = tiny_config(tmp_path, data={"train_subset": 32})
    raw["method"] = {"name": "rob", "projection_dim": 8, "local_crops": 1, **method}
    return assembled(build_config(raw))


def test_two_processes_reduce_the_centre_sinkhorn_and_memax_over_the_global_batch(tmp_path):
    ctx, prepared, dino = _module(tmp_path, base="dino", center="ema", center_momentum=0.5)
    _, _, msn = _module(tmp_path, base="msn")
    loader = torch.utils.data.DataLoader(prepared.dataset, batch_size=WORLD * B, shuffle=False)
    batches = [batch for _, batch in zip(range(STEPS), loader)]
    torch.save(batches, tmp_path / "batches.pt")
    for base, module in (("dino", dino), ("msn", msn)):
        del module.log_loss  # assembled's lambda: not picklable
        torch.save(module, tmp_path / f"{base}.pt")
    start = dino.dino_center.clone()
    one = {"dino": _steps(dino, batches), "msn": _steps(msn, batches)}

    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]

    for step in range(STEPS):
        centre = one["dino"][step]["center"]
        assert not torch.allclose(centre, start, atol=1e-3)  # the centre moves, so the comparison means something
        for r in range(WORLD):  # every rank holds the one-process centre (not its own half's, nor rank 0's)
            assert torch.allclose(ranks[r]["dino"][step]["center"], centre, atol=1e-6), (step, r)
        reference = one["msn"][step]
        together = torch.cat([ranks[r]["msn"][step]["sinkhorn"] for r in range(WORLD)])
        assert torch.allclose(together, reference["sinkhorn"], atol=1e-6), step  # each rank's rows of the global targets
        for r in range(WORLD):
            assert torch.allclose(ranks[r]["msn"][step]["memax"], reference["memax"], atol=1e-6), (step, r)
        # each rank's cross-entropy is its rows' mean: the mean over the ranks is the global batch's
        cross = torch.stack([ranks[r]["msn"][step]["cross_entropy"] for r in range(WORLD)]).mean()
        assert torch.allclose(cross, reference["cross_entropy"], atol=1e-6), step

    generator = torch.Generator().manual_seed(0)
    matrix = torch.rand(WORLD * B, 6, generator=generator)
    probabilities = torch.softmax(torch.randn(WORLD * B, 6, generator=generator), dim=1).requires_grad_()
    regulariser = memax(probabilities)
    regulariser.backward()
    functions = [rank["functions"] for rank in ranks]
    assert torch.allclose(torch.cat([f["sinkhorn"] for f in functions]), sinkhorn(matrix), atol=1e-6)
    assert not torch.allclose(functions[0]["sinkhorn"], sinkhorn(matrix[:B]), atol=1e-4)  # a local Sinkhorn differs
    for f in functions:
        assert torch.allclose(f["mean"], matrix.mean(0), atol=1e-6) and torch.allclose(f["memax"], regulariser.detach(), atol=1e-6)
    # the gradient reaches each rank's rows undivided; DDP's average over the ranks supplies the 1 / world size
    assert torch.allclose(torch.cat([f["memax_grad"] for f in functions]) / WORLD, probabilities.grad, atol=1e-7)


def test_the_functions_are_unchanged_in_one_process():
    """No process group: the reductions are the identity, bit for bit."""
    generator = torch.Generator().manual_seed(1)
    matrix = torch.rand(8, 5, generator=generator)
    assert torch.equal(sinkhorn(matrix, all_ranks=True), sinkhorn(matrix))
    assert torch.equal(memax(torch.softmax(matrix, 1), all_ranks=True), memax(torch.softmax(matrix, 1)))
    assert torch.equal(global_mean_nograd(matrix), matrix.mean(0))


def test_a_two_process_run_ends_with_the_one_process_run_s_ema_centre(tmp_path):
    """Through Lightning's DDP (its broadcast of rank 0's buffers included): 2 processes x 8 images against 1 x 16, one
    epoch of 32 images. The EMA centre depends on the teacher's targets alone, and every global batch holds the same
    images with the same crops (seeded per image), so the final centres agree although the students do not."""
    from ssdistill import distill

    from integration.test_ddp import _ddp_run

    centres = {}
    for world, batch in ((1, 2 * 8), (2, 8)):
        run = tmp_path / f"world{world}"
        run.mkdir()
        config = tiny_config(
            tmp_path,
            data={"batch_size": batch, "train_subset": 32},
            trainer={"epochs": 1, "devices": world, "accelerator": "cpu"},
            run={"dir": str(run / "runs")},
        )  # one teacher (tiny_config writes random weights once per folder)
        config["method"] = {"name": "rob", "projection_dim": 8, "local_crops": 1, "center": "ema", "center_momentum": 0.5}
        if world == 1:
            distill(config, quiet=True)
        else:
            done = _ddp_run(run, config)
            assert done.returncode == 0, done.stderr[-3000:]
        state = torch.load(run / "runs" / "tiny" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
        assert state["global_step"] == 2
        centres[world] = state["state_dict"]["dino_center"]
    assert centres[1].abs().max() > 1e-3  # it moved from its initial zeros
    assert torch.allclose(centres[2], centres[1], atol=1e-6), (centres[1], centres[2])
