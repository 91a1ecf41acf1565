import math

import numpy as np
import pytest
import torch
from torch import nn

from profiler.errors import UserError
from pruner.model.apply import apply_candidate, layer_densities, make_permanent, mask_weights
from pruner.model.graph import analyze, measured_channels, traced_kernel_specs
from pruner.model.reference import MobileNetV1, MobileNetV2, ResNet18
from pruner.search.space import SearchSpace

MODELS = {
    "mobilenet_v2": lambda: (MobileNetV2(num_classes=10, width_mult=0.35), (1, 3, 32, 32)),
    "mobilenet_v2_mnist": lambda: (MobileNetV2(num_classes=10, width_mult=0.25, in_channels=1), (1, 1, 28, 28)),
    "resnet18": lambda: (ResNet18(num_classes=10, width_mult=0.25), (1, 3, 32, 32)),
    "mobilenet_v1": lambda: (MobileNetV1(num_classes=10, width_mult=0.25), (1, 3, 32, 32)),
}


@pytest.fixture(scope="module", params=list(MODELS))
def case(request):
    torch.manual_seed(0)
    model, shape = MODELS[request.param]()
    return model, SearchSpace(analyze(model, shape))


def block_tolerance(weight: torch.Tensor, block: str) -> float:
    """Half a block, as a fraction of the weight: how far block rounding may move the density."""
    return (0.5 if block == "unstructured" else 2.0) / weight.numel() + 1e-9


def check_candidate(model, space, x, block):
    pruned = apply_candidate(model, space, x, block=block)
    shape = space.graph.input_shape
    out = pruned(torch.randn(2, *shape[1:]))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    names = [layer.name for layer in space.graph.layers]
    assert measured_channels(pruned, names) == space.graph.layer_channels(space.channels(x))
    modules = dict(pruned.named_modules())
    measured = layer_densities(pruned)
    for name, density in space.densities(x).items():
        assert abs(measured[name] - density) <= block_tolerance(modules[name].weight, block), name
    # the KernelSpecs the predictor prices are those of the real pruned model
    planned = space.kernel_specs(x, block)
    traced = traced_kernel_specs(pruned, shape, block)
    assert list(traced) == list(planned)
    for name, spec in planned.items():
        assert traced[name].replace(density=spec.density) == spec, name
        assert math.isclose(traced[name].density, spec.density, abs_tol=0.05), name
    return pruned


def test_every_random_candidate_gives_a_model_with_its_channels_and_densities(case):
    model, space = case
    rng = np.random.default_rng(42)
    candidates = [space.lower, space.full(), *space.sample(rng, 6)]
    for i, x in enumerate(candidates):
        check_candidate(model, space, x, block=("1x4", "4x1", "unstructured")[i % 3])


def test_the_original_model_is_left_untouched(case):
    model, space = case
    before = {k: v.clone() for k, v in model.state_dict().items()}
    apply_candidate(model, space, space.lower)
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(v, after[k]) for k, v in before.items())


def test_masks_persist_through_training_steps_and_become_permanent():
    torch.manual_seed(1)
    model = MobileNetV2(num_classes=10, width_mult=0.35)
    space = SearchSpace(analyze(model, (1, 3, 32, 32)))
    x = space.sample(np.random.default_rng(3), 1)[0]
    pruned = apply_candidate(model, space, x).train()
    zeros = {n: m.weight == 0 for n, m in pruned.named_modules() if hasattr(m, "weight_mask")}
    start = {n: m.weight_orig.detach().clone() for n, m in pruned.named_modules() if hasattr(m, "weight_mask")}
    assert zeros
    opt = torch.optim.SGD(pruned.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    for _ in range(3):
        loss = nn.functional.cross_entropy(pruned(torch.randn(4, 3, 32, 32)), torch.randint(0, 10, (4,)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    pruned(torch.randn(2, 3, 32, 32))  # the masked weight is recomputed on each forward
    modules = dict(pruned.named_modules())
    for name, was_zero in zeros.items():
        assert not torch.equal(modules[name].weight_orig, start[name]), name  # it did train
        assert torch.all(modules[name].weight[was_zero] == 0), name
    densities = layer_densities(pruned)
    make_permanent(pruned)
    assert not any(hasattr(m, "weight_mask") for m in pruned.modules())
    assert all(isinstance(m.weight, nn.Parameter) for m in pruned.modules() if isinstance(m, nn.Conv2d))
    assert layer_densities(pruned) == densities
    assert set(pruned.state_dict()) == set(apply_candidate(model, space, space.full()).state_dict())


def test_1x4_blocks_are_four_consecutive_output_channels():
    conv = nn.Conv2d(8, 16, 3, padding=1, bias=False)
    mask_weights(nn.Sequential(conv), {"0": 0.5}, block="1x4")
    blocks = (conv.weight != 0).reshape(4, 4, 8, 3, 3)  # (cout / 4, 4, cin, kh, kw)
    assert torch.all(blocks.all(dim=1) | ~blocks.any(dim=1))
    assert (conv.weight != 0).float().mean().item() == 0.5


def test_bn_scale_importance_keeps_the_channels_with_the_largest_scale():
    torch.manual_seed(2)
    model = ResNet18(num_classes=10, width_mult=0.25)
    space = SearchSpace(analyze(model, (1, 3, 32, 32)))
    layer = model.layer1[0]
    with torch.no_grad():
        layer.bn1.weight.copy_(torch.arange(16, dtype=torch.float32))
    x = space.full()
    x[1] = 4  # width 0.5 for the group of layer1.0.conv1: keep 8 of 16
    pruned = apply_candidate(model, space, x, importance="bn")
    assert torch.equal(pruned.layer1[0].bn1.weight, torch.arange(8, 16, dtype=torch.float32))
    kept = apply_candidate(model, space, x, importance="l1").layer1[0].conv1.weight
    norms = layer.conv1.weight.abs().sum((1, 2, 3))
    assert torch.equal(kept, layer.conv1.weight[norms.argsort(descending=True)[:8].sort().values])


def test_bad_options_and_masked_models_are_refused():
    model = MobileNetV1(num_classes=10, width_mult=0.25)
    space = SearchSpace(analyze(model, (1, 3, 32, 32)))
    with pytest.raises(UserError, match="sparsity block '2x2'"):
        apply_candidate(model, space, space.lower, block="2x2")
    with pytest.raises(UserError, match="block norm 'l3'"):
        apply_candidate(model, space, space.lower, norm="l3")
    with pytest.raises(UserError, match="channel importance 'taylor'"):
        apply_candidate(model, space, space.lower, importance="taylor")
    masked = apply_candidate(model, space, space.lower)
    with pytest.raises(UserError, match=r"module 'features.1.1.0' holds a weight mask"):
        apply_candidate(masked, space, space.lower)
