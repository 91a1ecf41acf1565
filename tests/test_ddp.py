"""Data-parallel fine-tuning: two real `torchrun` processes (gloo on CPU) against one process on the same data."""

import subprocess
import sys
from pathlib import Path

import torch

from tests.conftest import free_port
from tests.ddp_finetune import main as finetune
from tests.ddp_finetune import small_net

TORCHRUN = Path(sys.executable).parent / "torchrun"


def test_two_process_finetune_shards_the_data_and_ends_with_the_same_masked_weights(tmp_path):
    logs = tmp_path / "logs"
    subprocess.run([str(TORCHRUN), "--nproc_per_node=2", f"--master_port={free_port()}", "--log-dir", str(logs),
                    "--redirects", "3", str(Path(__file__).with_name("ddp_finetune.py")), str(tmp_path)],
                   check=True, timeout=120, capture_output=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    single_dir = tmp_path / "single"
    single_dir.mkdir()
    finetune(single_dir)  # the same script in this process: no process group, the whole loader
    single = torch.load(single_dir / "rank0.pt", weights_only=True)

    assert ranks[0]["state"].keys() == ranks[1]["state"].keys() == single["state"].keys()
    for key, value in ranks[0]["state"].items():  # parameters, BatchNorm statistics and masks alike
        assert torch.equal(value, ranks[1]["state"][key]), key
    assert ranks[0]["history"] == ranks[1]["history"]

    # each process read half the batches and half the images of the single process
    assert ranks[0]["batches"] == ranks[1]["batches"] == single["batches"] // 2
    assert ranks[0]["images"] + ranks[1]["images"] == single["images"]

    # the block mask held: masked weights are zero and got zero gradient, the others trained
    mask = ranks[0]["state"]["3.weight_mask"].bool()
    assert 0.6 < 1 - mask.float().mean() < 0.8
    assert torch.all(ranks[0]["grad"][~mask] == 0) and torch.any(ranks[0]["grad"][mask] != 0)
    initial = small_net()[3].weight.detach()
    assert torch.all(ranks[0]["state"]["3.weight_orig"][mask] != initial[mask])

    # both runs learned (10% is chance), the data-parallel one with half as many steps of twice the images
    for history in (ranks[0]["history"], single["history"]):
        assert history[-1]["val_top1"] > 0.25 and history[-1]["train_loss"] < history[0]["train_loss"]

    # only rank 0 shows progress
    errors = {r: "".join(p.read_text() for p in logs.rglob(f"attempt_0/{r}/stderr.log")) for r in (0, 1)}
    assert "ddp finetune epoch 2/2" in errors[0] and "ddp finetune" not in errors[1]
