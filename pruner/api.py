"""One Python entry point, model to measured file: `JCW(model, example_inputs, device=..., predictor=..., data=...)`.

Everything that must agree with the target device comes from its devices.yaml entry (its runtime, profiler.runtimes)
and the predictor fitted on it, never from a second argument: the sparsity block weights are pruned in, the export
format, XNNPACK's cluster pricing and repair (or the built-in kernels' dense-where-faster repair), the per-network
overhead, the density floors and the joint method's weight stage.

    jcw = JCW(model, torch.zeros(1, 3, 224, 224), device="pixel", predictor="pixel.jcwm", data=(train, val))
    fronts = jcw.search(budgets=[30, 45], out="runs/mine")
    tuned = jcw.finetune(fronts.budgets.genes[0], epochs=5)
    print(jcw.measure(jcw.export(tuned, "mine.tflite")))
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from predictor.persist import load
from profiler.devices import Device, get_device
from profiler.errors import UserError
from profiler.measure import measure_files
from pruner.accuracy.estimate import proxy_data, proxy_estimator
from pruner.accuracy.hardware import init_distributed, resolve_device
from pruner.accuracy.train import train
from pruner.data.loading import check_head, class_count, load_data
from pruner.deploy.export import Exported, export
from pruner.model.apply import apply_candidate
from pruner.model.checkpoint import parse_genes
from pruner.model.graph import analyze
from pruner.search.engine import SearchConfig
from pruner.search.fronts import METHODS, Fronts, run_fronts
from pruner.search.latency import device_latency
from pruner.search.space import SearchSpace, density_bounds, space_settings

Genes = str | Sequence[int] | np.ndarray  # a `genes` cell of pareto.csv / budgets.csv, or grid indices


class JCW:
    """A trained classifier, the device it will run on and its data: search, prune, fine-tune, export, measure.

    `example_inputs` is one input batch (its shape is used: (1, C, H, W)) or that shape. `predictor` is a latency
    model file fitted on `device` (`jcw fit`); one of another device is refused unless `allow_other_device`.
    `data` is (train_loader, val_loader) of (images, labels), or a spec of pruner.data.loading.load_data ("mnist",
    "imagefolder:DIR", "FILE.py:factory"); the class count it gives must match the model's head. The search
    estimates accuracy on `val_loader`, so keep the test split out of it. `keep` holds globs of layer names left
    at full width and density. `torch_device` ("auto", "cpu", "cuda[:N]", "mps") is where candidates are scored and
    fine-tuned; under torchrun, fine-tuning is data-parallel. `devices` is the devices file (None: ./devices.yaml,
    else the one in the user's config directory).
    """

    def __init__(
        self,
        model: nn.Module,
        example_inputs: torch.Tensor | Sequence[int],
        device: str,
        predictor: str | Path,
        data: tuple[Iterable, Iterable] | str,
        keep: Sequence[str] = (),
        torch_device: str = "auto",
        devices: str | Path | None = None,
        allow_other_device: bool = False,
    ):
        self.model = model.eval()
        shape = example_inputs.shape if isinstance(example_inputs, torch.Tensor) else example_inputs
        self.input_shape = (1, *(int(v) for v in tuple(shape)[-3:]))
        self.device: Device = get_device(device, devices)
        self.predictor_path = Path(predictor)
        self.predictor = load(predictor, self.device, allow_other_device)
        self.train_loader, self.val_loader, self.data_source = _loaders(data, self.model, self.input_shape)
        self.torch_device = init_distributed(resolve_device(torch_device))
        self.runtime = self.device.runtime
        export(self.model, self.input_shape, self.runtime)  # unexportable: refused now
        self.space = SearchSpace(analyze(self.model, self.input_shape),
                                 density_bounds=density_bounds(self.runtime), keep=tuple(keep))
        self.latency = device_latency(self.space, self.model, self.input_shape, self.runtime, self.predictor)

    def search(
        self,
        budgets: Sequence[float] = (),
        out: str | Path = "runs/jcw",
        generations: int = 32,
        population: int = 64,
        methods: Sequence[str] = METHODS,
        val_batches: int | None = None,
        bn_batches: int = 10,
        workers: int = 1,
        seed: int = 0,
    ) -> Fronts:
        """The accuracy-latency fronts of each method and the best joint candidate under each budget (ms), written
        to `out` (pareto.csv, budgets.csv, fronts.png, ...; an interrupted search resumes from it).

        Accuracy is the proxy estimate: each candidate's pruned copy, BatchNorm recalibrated on `bn_batches`
        training batches, scored on the first `val_batches` validation batches (all when None), on `workers`
        processes. summary.json holds the run's provenance."""
        held_out = self.val_loader if val_batches is None else itertools.islice(self.val_loader, val_batches)
        data = proxy_data(self.train_loader, held_out, bn_batches)
        estimator = proxy_estimator(self.model, self.space, data, self.runtime.block, device=self.torch_device,
                                    workers=workers)
        try:
            return run_fronts(self.space, self.latency, estimator, out,
                              SearchConfig(n_gen=generations, pop_size=population, seed=seed), budgets, methods,
                              repair=self.latency.repair, weight_stage=self.runtime.weight_stage,
                              record=self.provenance())
        finally:
            estimator.close()

    def apply(self, genes: Genes, norm: str = "l1") -> nn.Module:
        """A pruned copy of the model: channels narrowed, weights masked in the device's block (masks stay attached
        through training). `norm` ranks weight blocks: "l1" as the search scores candidates, "l2" to fine-tune."""
        return apply_candidate(self.model, self.space, self._checked(genes), self.runtime.block, norm=norm)

    def _checked(self, genes: Genes) -> np.ndarray:
        """Grid indices from a `genes` cell or a vector, checked against the space (one-line errors)."""
        return self.space.check(parse_genes(genes) if isinstance(genes, str) else genes)

    def finetune(
        self,
        genes_or_model: Genes | nn.Module,
        epochs: int = 1,
        lr: float | None = None,
        optimizer: str = "adam",
        patience: int | None = None,
    ) -> nn.Module:
        """A candidate (its genes, or a model from `apply`) trained on the training loader with its weight masks
        fixed, on the torch device; with `patience`, early-stopped on the validation loss (best weights kept)."""
        model = genes_or_model if isinstance(genes_or_model, nn.Module) else self.apply(genes_or_model, norm="l2")
        train(model, self.train_loader, epochs, lr=lr, optimizer=optimizer, val_loader=self.val_loader,
              patience=patience, desc="finetune", device=self.torch_device)
        return model.eval()

    def export(self, model_or_genes: nn.Module | Genes, path: str | Path) -> Path:
        """Write the model file the device runs (.tflite or .onnx, by the device) and `path`.json beside it: the
        provenance (with the genes, when given), runtime, its sparse verdict, predicted latency and the layers as
        stored. A model is moved to the CPU. Where the runtime says so (the built-in kernels), a sparse layer is
        stored dense where the predictor says dense is faster."""
        genes = None if isinstance(model_or_genes, nn.Module) else self._checked(model_or_genes)
        model = model_or_genes if genes is None else self.apply(genes)
        chooser = self.runtime.storage_chooser(self.predictor.predict)
        exported = export(model.cpu().eval(), self.input_shape, self.runtime, chooser)
        path = Path(path)
        if path.suffix != exported.suffix:
            raise UserError(f"{path}: device '{self.device.name}' runs {exported.suffix} models; use that suffix")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(exported.model)
        specs = self.runtime.read_layers(exported.model, str(path))
        predicted = self.predictor.predict_network(list(specs.values()))
        record = {**self.provenance(), "genes": None if genes is None else [int(g) for g in genes]}
        Path(f"{path}.json").write_text(json.dumps(sidecar(exported, self.input_shape, predicted, record), indent=1))
        return path

    def provenance(self) -> dict:
        """Where a run's inputs came from, as JSON values (summary.json, export sidecars): the model's class and
        input shape, the search space's settings, the device, the data's source and the predictor's file and device."""
        fitted_on = self.predictor.fitted_on
        record = {
            "model": {"kind": "python", "class": type(self.model).__qualname__, "input_shape": self.input_shape[1:]},
            "space": space_settings(self.space), "device": self.device.name, "data": self.data_source,
            "predictor": {"path": str(self.predictor_path.resolve()),
                          "fitted_on": vars(fitted_on) if fitted_on else None},
        }
        return json.loads(json.dumps(record))  # tuples as lists, as read back

    def measure(self, path: str | Path, passes: int = 3) -> dict:
        """Time a model file end to end on the device: {"file", "latency_ms", "predicted_ms", "iqr_ms", "cv",
        "runs", "passes"}, the prediction from the file read back as the device runs it."""
        specs = self.runtime.read_file(path)
        predicted = self.predictor.predict_network(list(specs.values()))
        result = measure_files(self.device, [path], passes)[0]
        if "error" in result:
            raise UserError(f"{path}: measuring on '{self.device.name}' failed: {result['error'].splitlines()[0]}")
        return {**result, "predicted_ms": predicted}


def sidecar(exported: Exported, input_shape: Sequence[int], predicted_ms: float | None, record: dict) -> dict:
    """The record written beside an exported model file (FILE.json): its provenance `record` (which names the
    device), its runtime, whether XNNPACK runs it sparse, its predicted latency and every layer with its storage
    and pruned density."""
    return {
        **record, "runtime": exported.runtime.name, "input_shape": list(input_shape),
        "predicted_ms": predicted_ms, "xnnpack": exported.verdict,
        "layers": [{"name": layer.name, "storage": layer.storage, "pruned_density": layer.pruned_density,
                    **layer.spec.to_row()} for layer in exported.layers],
    }


def _loaders(data: tuple[Iterable, Iterable] | str, model: nn.Module, input_shape: tuple[int, ...]) -> tuple:
    """(train_loader, val_loader, where the data came from) from the loaders or a load_data spec, the model's head
    checked against the data's class count (pruner.data.loading.class_count)."""
    if isinstance(data, str):
        loaded = load_data(data, input_shape)
        check_head(model, input_shape, loaded.num_classes)
        return loaded.train, loaded.val, loaded.source
    if not isinstance(data, tuple | list) or len(data) != 2:
        raise UserError(f"data must be (train_loader, val_loader) or a dataset spec, got {type(data).__name__}")
    check_head(model, input_shape, class_count(*data))
    return *data, {"kind": "loaders"}
