"""Modern mobile CNNs end to end (tests/modern_nets.py: a MobileNetV3-small-style net, an EfficientNet-B0-style block
stack and an inception-style net) are analysed, searched briefly, exported to TFLite (both kernels) and ONNX equal to
PyTorch, unpruned and pruned, and measured on local-sparse beside their prediction."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from predictor import LatencyModel
from profiler import xnnpack
from profiler.devices import get_device
from profiler.harness import random_weights
from profiler.kernel import KernelSpec
from profiler.measure import measure_files
from profiler.profile import profile_device
from profiler.runtimes import get_runtime
from profiler.store import ResultsStore
from profiler.tflite_writer import TFLiteModel
from pruner.deploy.export import export
from pruner.model.apply import apply_candidate, make_permanent
from pruner.model.graph import analyze
from pruner.search.engine import SearchConfig, SearchProblem, search
from pruner.search.latency import CandidateLatency
from pruner.search.space import SearchSpace

XNNPACK = get_runtime("xnnpack")
SHAPE = (1, 3, 32, 32)
BLOCK = "4x1"  # local-sparse's


def formula(specs) -> np.ndarray:
    """ms per kernel: MACs / 1e6, times density / 0.4 stored sparse (sparse pays below 0.4), plus 1 us."""
    return np.array([s.macs / 1e6 * (s.density / 0.4 if s.is_sparse else 1.0) + 1e-3 for s in specs])


def searched_candidate(space: SearchSpace, tmp_path) -> np.ndarray:
    """A brief search (2 generations of 8) on the formula's latency and a stand-in loss (kept capacity);
    the cheapest front member that prunes something."""
    latency = CandidateLatency(space, formula, BLOCK)
    span = np.maximum(space.upper - space.lower, 1)

    def evaluate(X: np.ndarray) -> np.ndarray:
        return np.column_stack([((space.upper - X) / span).mean(1), latency(X)])

    problem = SearchProblem(space.lower, space.upper, evaluate, repair=latency.repair)
    result = search(problem, SearchConfig(n_gen=2, pop_size=8), tmp_path / "search", progress=False)
    front = result.front[problem.gene_names()].to_numpy()
    pruned = [x for x in front if (x < space.upper).any()]
    assert pruned, "the search found no pruned candidate"
    return pruned[0]


def assert_exports_equal_torch(model: nn.Module, run_exported) -> dict:
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = model(x).numpy()
    exported = {}
    for runtime in ("xnnpack", "builtin", "onnx"):
        exported[runtime] = export(model, SHAPE, get_runtime(runtime, BLOCK))
        got = run_exported(exported[runtime], x)
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max(), runtime
    return exported


def kernel_rows(specs) -> list[tuple]:
    """Specs keyed for comparison, densities rounded as the exporter measures them."""
    return sorted((name, s.replace(density=round(s.density, 1)).key()) for name, s in specs.items())


def test_analysed_searched_exported_and_priced_consistently(modern_net, run_exported, tmp_path):
    _, model = modern_net
    space = SearchSpace(analyze(model, SHAPE))
    pruned_x = searched_candidate(space, tmp_path)
    for x in (space.full(), pruned_x):
        candidate = make_permanent(apply_candidate(model, space, x, block=BLOCK)).eval()
        exported = assert_exports_equal_torch(candidate, run_exported)
        # the search prices exactly the kernels the exporter deploys: same layers, shapes, activations, densities
        deployed = {layer.name: layer.spec.replace(density=layer.pruned_density) for layer in exported["onnx"].layers}
        assert kernel_rows(deployed) == kernel_rows(space.kernel_specs(x, BLOCK))


def test_the_analysis_couples_squeeze_excite_and_concat_channels(modern_nets):
    graph = analyze(modern_nets["mobilenet_v3_small"](), SHAPE)
    by_name = {layer.name: layer for layer in graph.layers}
    se = "blocks.3.se"
    # the excite conv's output channels are the block's expanded channels: one group with dw and the multiply
    assert by_name[f"{se}.expand"].out_groups == by_name["blocks.3.dw.0"].out_groups
    # the squeeze width is a gene of its own, read by the excite conv
    squeeze = by_name[f"{se}.reduce"].out_groups
    assert len(squeeze) == 1 and by_name[f"{se}.expand"].in_groups == squeeze
    assert [by_name[n].activation for n in ("stem.0", "blocks.3.dw.0", f"{se}.expand", "classifier.0")] == [
        "hardswish", "hardswish", "hardsigmoid", "hardswish"]
    assert by_name["blocks.3.dw.0"].k == 5
    inception = analyze(modern_nets["inception"](), SHAPE)
    layers = {layer.name: layer for layer in inception.layers}
    # mix2's 1x1s read the concat of mix1's four branches (one fixed by the grouped conv) and of the upsampled maps
    assert layers["mix2.a.0"].cin == 80 and len(layers["mix2.a.0"].in_groups) == 4
    assert layers["mix1.b.1.0"].groups == 4 and not layers["mix1.b.1.0"].prunable


@pytest.mark.slow  # about 35 s: 70 kernels profiled, 6 networks timed in 3 passes
def test_measured_on_local_sparse_beside_the_prediction(modern_nets, tmp_path):
    """Each net, full and pruned, exported for local-sparse: every kernel it deploys profiles alone, the file runs
    end to end, and a LatencyModel fitted on those kernels prices it as their sum, plus the per-network overhead
    (the parameter-free ops) once fitted on these networks. The predicted / measured ratio is printed: on a busy
    machine it moves, and bench/modern_bench.py measures it (100% within +-10% there)."""
    device = get_device("local-sparse", "devices.yaml")
    networks, files = [], []
    for name, build in modern_nets.items():
        model = build()
        space = SearchSpace(analyze(model, SHAPE))
        x = space.sample(np.random.default_rng(0), 1)[0]
        for label, genes in (("full", space.full()), ("pruned", x)):
            candidate = make_permanent(apply_candidate(model, space, genes, block=BLOCK)).eval()
            exported = export(candidate, SHAPE, get_runtime("builtin", BLOCK))
            path = tmp_path / f"{name}_{label}.tflite"
            path.write_bytes(exported.model)
            networks.append([layer.spec for layer in exported.layers])
            files.append(path)
    store = ResultsStore(tmp_path / "local-sparse.csv")
    kernels = list({s.key(): s for specs in networks for s in specs}.values())
    assert not profile_device(device, kernels, store).failed and store.measured() == {s.key() for s in kernels}
    predictor = LatencyModel.fit(store.table)
    records = measure_files(device, files, passes=3)
    assert all("error" not in r and r["latency_ms"] > 0 and len(r["passes"]) == 3 for r in records), records
    measured = [r["latency_ms"] for r in records]
    sums = [float(predictor.predict(specs).sum()) for specs in networks]
    for file, specs, kernel_sum, m in zip(files, networks, sums, measured, strict=True):
        print(f"{file.stem:28s} predicted {kernel_sum:.3f} ms (kernels), measured {m:.3f} ms: {kernel_sum / m:.2f}")
        assert kernel_sum > 0 and predictor.predict_network(specs) == pytest.approx(kernel_sum)  # no overhead yet
    predictor.fit_overhead(networks, measured)
    assert sum(predictor.predict_network(specs) for specs in networks) == pytest.approx(sum(measured))


def test_xnnpack_rules_for_the_new_ops(modern_nets):
    """A grouped 1x1 conv blocks XNNPACK's sparse cluster, a squeeze-and-excite gate (1x1 convs, hardsigmoid,
    multiply) does not; the inception net (padded average pool, concatenation) never runs sparse."""
    def cluster(middle: KernelSpec) -> xnnpack.Cluster:
        rng = np.random.default_rng(0)
        m = TFLiteModel()
        stem = KernelSpec("conv", 16, 16, 3, 16, k=3, stride=2, activation="hardswish")
        x = XNNPACK.lower(m, m.input("x", (1, 16, 16, 3)), stem, *random_weights(stem, rng), "stem")
        x = XNNPACK.lower(m, x, middle, *random_weights(middle, rng), "middle")
        m.outputs = [m.mean(x, [1, 2], name="pool")]
        return xnnpack.analyse(m)[0]

    assert "grouped conv 'middle'" in cluster(KernelSpec("conv", 8, 8, 16, 16, groups=4)).blocked
    assert not cluster(KernelSpec("conv", 8, 8, 16, 16, activation="hardswish")).blocked
    assert not cluster(KernelSpec("conv", 8, 8, 16, 16, activation="hardsigmoid")).blocked  # ADD, RELU6 fused, MUL
    inception = export(modern_nets["inception"](), SHAPE, get_runtime("xnnpack", BLOCK))
    assert not inception.verdict["sparse"] and "is not NCHW-compatible" in inception.verdict["reason"]
