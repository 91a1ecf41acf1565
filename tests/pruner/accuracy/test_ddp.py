"""Data-parallel fine-tuning and supernet training: two real `torchrun` processes (gloo on CPU) against one
process on the same data."""

import subprocess
import sys
from pathlib import Path

import torch

from tests.pruner.accuracy.ddp_finetune import BATCH, IMAGES, SUPERNET_STEPS
from tests.pruner.accuracy.ddp_finetune import main as run_script

TORCHRUN = Path(sys.executable).parent / "torchrun"
HANG_S = 1200  # what only a hung run takes (about 20 s on an idle machine, minutes beside other jobs)


def test_two_processes_read_half_the_data_each_and_end_with_the_same_weights(tmp_path, free_tcp_port, small_net):
    logs = tmp_path / "logs"
    subprocess.run([str(TORCHRUN), "--nproc_per_node=2", f"--master_port={free_tcp_port}", "--log-dir", str(logs),
                    "--redirects", "3", str(Path(__file__).with_name("ddp_finetune.py")), str(tmp_path)],
                   check=True, timeout=HANG_S, capture_output=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    (tmp_path / "single").mkdir()
    run_script(tmp_path / "single")  # the same script in this process: no process group, the whole loader
    single = torch.load(tmp_path / "single" / "rank0.pt", weights_only=True)

    # fine-tuning: identical parameters, BatchNorm statistics, masks and history on both ranks
    assert ranks[0]["state"].keys() == ranks[1]["state"].keys() == single["state"].keys()
    for key, value in ranks[0]["state"].items():
        assert torch.equal(value, ranks[1]["state"][key]), key
    assert ranks[0]["history"] == ranks[1]["history"]

    # each epoch, each process read a disjoint half of the images the single process read
    for epoch in range(2):
        halves = [set(r["read"][epoch * IMAGES // 2:(epoch + 1) * IMAGES // 2]) for r in ranks]
        assert len(halves[0]) == len(halves[1]) == IMAGES // 2 and not halves[0] & halves[1]
        assert halves[0] | halves[1] == set(single["read"][epoch * IMAGES:(epoch + 1) * IMAGES]) == set(range(IMAGES))
    assert len(ranks[0]["read"]) == len(ranks[1]["read"]) == len(single["read"]) // 2

    # the block mask held: masked weights got zero gradient and stayed zero, the others trained
    mask = ranks[0]["state"]["3.weight_mask"].bool()
    assert 0.6 < 1 - mask.float().mean() < 0.8
    assert torch.all(ranks[0]["grad"][~mask] == 0) and torch.any(ranks[0]["grad"][mask] != 0)
    assert torch.all(ranks[0]["state"]["3.weight_orig"][mask] != small_net()[3].weight.detach()[mask])

    # both runs learned (10% is chance), the data-parallel one with half as many steps of twice the images
    for history in (ranks[0]["history"], single["history"]):
        assert history[-1]["val_top1"] > 0.25 and history[-1]["train_loss"] < history[0]["train_loss"]

    # supernet: the same shared weights on both ranks, trained on different batches, moved from the start
    for key, value in ranks[0]["supernet"].items():
        assert torch.equal(value, ranks[1]["supernet"][key]), key
    assert not torch.equal(ranks[0]["supernet"]["0.weight"], single["supernet"]["0.weight"])
    reads = [set(r["supernet_read"]) for r in ranks]
    assert len(reads[0]) == len(reads[1]) == SUPERNET_STEPS * BATCH and not reads[0] & reads[1]
    assert ranks[0]["losses"] != ranks[1]["losses"]

    # only rank 0 shows progress
    errors = {r: "".join(p.read_text() for p in logs.rglob(f"attempt_0/{r}/stderr.log")) for r in (0, 1)}
    assert "ddp finetune epoch 2/2" in errors[0] and "ddp finetune" not in errors[1]
