"""Fine-tune a small block-masked CNN, then train a supernet of it, on real MNIST, data-parallel: run under
`torchrun --nproc_per_node=2 tests/pruner/accuracy/ddp_finetune.py OUT` (or plainly, as one process, for comparison).

Each rank saves to OUT/rank{R}.pt its final weights, the dataset indices each phase read, its history and its
masked conv's last gradient (a test harness: a real command lets only rank 0 write); tests/pruner/accuracy/test_ddp.py
compares them.
"""

import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from pruner.accuracy.hardware import init_distributed, resolve_device
from pruner.accuracy.supernet import build_supernet, train_supernet
from pruner.accuracy.train import train
from pruner.data.mnist import load_mnist
from pruner.model.apply import mask_weights
from pruner.model.graph import analyze
from pruner.search.space import SearchSpace

IMAGES, BATCH, SUPERNET_STEPS = 2048, 32, 6


class Recorded(Dataset):
    """A dataset that remembers which indices were read."""

    def __init__(self, dataset: Dataset):
        self.dataset, self.read = dataset, []

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        self.read.append(index)
        return self.dataset[index]


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1), nn.BatchNorm2d(32),
        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
    )


def loader(split, seed: int) -> DataLoader:
    dataset = Recorded(TensorDataset(split.x[:IMAGES], split.y[:IMAGES]))
    return DataLoader(dataset, BATCH, shuffle=True, generator=torch.Generator().manual_seed(seed))


def main(out: Path) -> None:
    torch.set_num_threads(1)
    device = init_distributed(resolve_device("cpu"))
    data = load_mnist()

    model = small_net()
    mask_weights(model, {"3": 0.3}, block="1x4")
    finetune = loader(data["train"], 0)
    history = train(model, finetune, epochs=2, lr=1e-2, val_loader=data["val"].loader(500, limit=1000),
                    desc="ddp finetune", device=device)
    grad = model[3].weight_orig.grad

    supernet = build_supernet(small_net(), SearchSpace(analyze(small_net(), (1, 1, 28, 28))), device=device)
    sandwich = loader(data["train"], 1)
    losses = train_supernet(supernet, sandwich, SUPERNET_STEPS, rng=np.random.default_rng(0))

    rank = dist.get_rank() if dist.is_initialized() else 0
    torch.save({"state": model.state_dict(), "read": finetune.dataset.read, "history": history, "grad": grad,
                "supernet": supernet.model.state_dict(), "supernet_read": sandwich.dataset.read, "losses": losses},
               out / f"rank{rank}.pt")
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
