"""Layers left alone (`keep` globs) and a search space's settings as JSON, on a real MobileNetV2."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pruner.model.apply import apply_candidate, layer_densities
from pruner.model.graph import analyze, measured_channels
from pruner.model.reference import MobileNetV2
from pruner.search.space import SearchSpace, SpaceError, space_settings

SHAPE = (1, 3, 32, 32)
KEEP = ("features.1.*", "features.16.*")


@pytest.fixture(scope="module")
def model_and_graph():
    torch.manual_seed(0)
    model = MobileNetV2(num_classes=10, width_mult=0.35)
    return model, analyze(model, SHAPE)


def test_kept_layers_genes_are_fixed_at_full_width_and_dense(model_and_graph):
    _, graph = model_and_graph
    free, kept = SearchSpace(graph), SearchSpace(graph, keep=KEEP)
    kept_layers = [layer for layer in graph.layers if layer.name.startswith(("features.1.", "features.16."))]
    widths = {g for layer in kept_layers for g, _ in layer.out_groups + layer.in_groups}
    densities = {free.gene_names.index(f"density:{layer.name}") for layer in kept_layers if layer.prunable}
    fixed = sorted(widths | densities)
    assert len(widths) >= 3 and len(densities) >= 2  # features.16 has prunable 1x1 convs on three groups
    assert list(kept.kept_genes) == fixed
    assert (kept.lower[fixed] == kept.upper[fixed]).all() and (free.lower[fixed] < free.upper[fixed]).any()
    others = np.setdiff1d(np.arange(free.n_var), fixed)
    assert (kept.lower[others] == free.lower[others]).all() and (kept.upper == free.upper).all()
    assert (kept.sample(np.random.default_rng(0), 50)[:, fixed] == kept.upper[fixed]).all()


def test_the_smallest_candidate_leaves_kept_layers_untouched(model_and_graph):
    model, graph = model_and_graph
    space = SearchSpace(graph, keep=KEEP)
    pruned = apply_candidate(model, space, space.lower, block="1x4")
    names = [layer.name for layer in graph.layers]
    before, after = measured_channels(model, names), measured_channels(pruned, names)
    kept = [n for n in names if n.startswith(("features.1.", "features.16."))]
    assert all(after[n] == before[n] for n in kept)
    assert sum(after[n] != before[n] for n in names if n not in kept) > 10  # the rest is narrowed
    densities = layer_densities(pruned)
    assert all(densities[n] > 0.99 for n in kept)
    assert min(densities[layer.name] for layer in graph.prunable if layer.name not in kept) < 0.5


def test_a_glob_that_matches_no_layer_is_an_error_naming_it(model_and_graph):
    _, graph = model_and_graph
    with pytest.raises(SpaceError, match=r"keep 'classifer\.\*': matches no layer \(layers are named like features"):
        SearchSpace(graph, keep=("classifier.*", "classifer.*"))


def test_settings_round_trip_through_json(model_and_graph):
    _, graph = model_and_graph
    space = SearchSpace(graph, width_grid=(0.25, 0.5, 0.75, 1.0), density_bounds={"general": 0.5}, multiple=8,
                        keep=("classifier.*",))
    settings = json.loads(json.dumps(space_settings(space)))
    again = SearchSpace(graph, **settings)
    assert space_settings(again) == space_settings(space)
    assert (again.lower == space.lower).all() and (again.upper == space.upper).all()
    assert again.keep == ("classifier.*",) and again.width_grid == (0.25, 0.5, 0.75, 1.0)
