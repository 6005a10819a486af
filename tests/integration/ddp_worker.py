"""Run by test_ddp.py: a 2-process CPU DDP distillation that records which samples each rank saw."""

import json
import os
import sys
from pathlib import Path

import lightning as L

from ssdistill import distill


class RecordIndices(L.Callback):
    def __init__(self, out: Path) -> None:
        self.out, self.seen = out, []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.seen += batch["index"].tolist()

    def on_train_epoch_end(self, trainer, module):
        path = self.out / f"indices-rank{trainer.global_rank}-epoch{trainer.current_epoch}.json"
        path.write_text(json.dumps({"rank": trainer.global_rank, "world": trainer.world_size, "indices": self.seen}))
        self.seen = []


if __name__ == "__main__":
    config, out = sys.argv[1], Path(sys.argv[2])
    distill(config, callbacks=[RecordIndices(out)], quiet=os.environ.get("LOCAL_RANK", "0") != "0")
