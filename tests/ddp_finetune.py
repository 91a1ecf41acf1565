"""Fine-tune a small block-masked CNN on real MNIST, data-parallel: run under `torchrun --nproc_per_node=2`.

Each rank saves its final state, the number of training batches it read, and its masked conv's last gradient
to OUT/rank{R}.pt (a test harness: a real command lets only rank 0 write); tests/test_ddp.py compares them.
"""

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from pruner.apply import mask_weights
from pruner.data import load_mnist
from pruner.hardware import init_distributed, resolve_device
from pruner.train import train

IMAGES, BATCH = 2048, 32


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1), nn.BatchNorm2d(32),
        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
    )


def main(out: Path) -> None:
    torch.set_num_threads(1)
    device = init_distributed(resolve_device("cpu"))
    model = small_net()
    mask_weights(model, {"3": 0.3}, block="1x4")
    batches = []
    model.register_forward_pre_hook(lambda module, args: batches.append(len(args[0])) if module.training else None)
    data = load_mnist()
    history = train(model, data["train"].loader(BATCH, shuffle=True, limit=IMAGES), epochs=2, lr=1e-2,
                    val_loader=data["val"].loader(500, limit=1000), desc="ddp finetune", device=device)
    torch.save({"state": model.state_dict(), "batches": len(batches), "images": sum(batches), "history": history,
                "grad": model[3].weight_orig.grad}, out / f"rank{dist.get_rank() if dist.is_initialized() else 0}.pt")
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
