"""Training on real MNIST with fixed masks, BN recalibration, evaluation, resuming an interrupted training."""

import pytest
import torch
from torch import nn

from pruner.accuracy.train import evaluate, recalibrate_bn, train
from pruner.model.apply import mask_weights


def test_training_learns_and_masked_zeros_stay_zero(mnist, small_net):
    model = small_net()
    conv = model[3]
    mask_weights(model, {"3": 0.3}, block="1x4")
    zeros = conv.weight == 0
    before = evaluate(model, mnist["val"].loader(500, limit=1000))
    history = train(model, mnist["train"].loader(32, shuffle=True, limit=4000), epochs=3, optimizer="sgd", lr=0.1,
                    val_loader=mnist["val"].loader(500, limit=1000), patience=2)
    after = evaluate(model, mnist["val"].loader(500, limit=1000))
    assert after.top1 > before.top1 + 0.4 and after.loss < before.loss
    assert len(history) == 3 and history[-1]["val_top1"] == pytest.approx(after.top1)
    assert torch.equal(conv.weight == 0, zeros) and zeros.float().mean() == pytest.approx(0.7, abs=0.02)


def test_bn_recalibration_recovers_a_model_with_stale_statistics(mnist, small_net):
    model = small_net()
    train(model, mnist["train"].loader(32, shuffle=True, limit=4000), epochs=1)
    val = mnist["val"].loader(500, limit=1000)
    good = evaluate(model, val)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.add_(3.0)
            m.running_var.mul_(10.0)
    stale = evaluate(model, val)
    recalibrated = evaluate(recalibrate_bn(model, mnist["train"].loader(100), batches=10), val)
    assert stale.top1 < good.top1 - 0.2
    assert recalibrated.top1 > good.top1 - 0.05


class Interrupting:
    """A loader of fixed batches that raises KeyboardInterrupt at batch `stop` of its second pass (None: never)."""

    def __init__(self, batches, stop: int | None = None):
        self.batches, self.stop, self.passes = batches, stop, 0

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        self.passes += 1
        for i, batch in enumerate(self.batches):
            if self.passes == 2 and i == self.stop:
                raise KeyboardInterrupt
            yield batch


def test_an_interrupted_training_resumes_from_its_last_epoch_to_the_same_weights(mnist, small_net, tmp_path):
    batches = list(mnist["train"].loader(64, limit=256))
    whole = small_net()
    train(whole, Interrupting(batches), 3, optimizer="sgd", weight_decay=1e-4)
    resumed, state = small_net(), tmp_path / "net.state"
    with pytest.raises(KeyboardInterrupt):
        train(resumed, Interrupting(batches, stop=2), 3, optimizer="sgd", weight_decay=1e-4, resume=state)
    assert state.is_file()
    resumed = small_net()  # a new process: fresh weights, the state file holds the first epoch
    history = train(resumed, Interrupting(batches), 3, optimizer="sgd", weight_decay=1e-4, resume=state)
    assert [h["epoch"] for h in history] == [1, 2, 3]
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), name
