"""One Python entry point, model to measured file: `JCW(model, example_inputs, device=..., predictor=..., data=...)`.

Everything that must agree with the target device comes from its devices.yaml entry (its runtime, profiler.runtimes)
and the predictor fitted on it, never from a second argument: the sparsity block weights are pruned in, the export
format and precision (an INT8 runtime's export is quantized, calibrated on training images), XNNPACK's cluster
pricing and repair (or the built-in kernels' dense-where-faster repair), the per-network overhead, the density floors
and the joint method's weight stage. `precision` picks the device runtime's counterpart at another precision.

    jcw = JCW(model, torch.zeros(1, 3, 224, 224), device="pixel", predictor="pixel.jcwm", data=(train, val))
    fronts = jcw.search(budgets=[30, 45], out="runs/mine")
    tuned = jcw.finetune(fronts.budgets.genes[0], epochs=5)
    print(jcw.measure(jcw.export(tuned, "mine.tflite")))
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from predictor.latency import LatencyModel
from predictor.persist import load
from profiler.devices import Device, get_device
from profiler.errors import UserError
from profiler.kernel import KernelSpec
from profiler.measure import measure_files
from profiler.runtimes import at_precision
from pruner.accuracy.estimate import Estimator, ProxyData, ProxyScore, first_images, proxy_data, proxy_estimator
from pruner.accuracy.hardware import init_distributed, resolve_device
from pruner.accuracy.supernet import SupernetEstimator, build_supernet
from pruner.accuracy.train import Evaluation, evaluate, train
from pruner.data.loading import ImageData, check_head, class_count, load_data
from pruner.deploy.export import Exported, export
from pruner.model.apply import apply_candidate
from pruner.model.checkpoint import Checkpoint, parse_genes, recorded_data
from pruner.model.graph import analyze
from pruner.search.engine import SearchConfig
from pruner.search.fronts import METHODS, Fronts, run_fronts
from pruner.search.latency import CandidateLatency, device_latency, profiling_plan
from pruner.search.space import SearchSpace, density_bounds, space_settings
from pruner.search.state import check_run

Genes = str | Sequence[int] | np.ndarray  # a `genes` cell of pareto.csv / budgets.csv, or grid indices
Data = tuple[Iterable, Iterable] | ImageData | str  # (train_loader, val_loader), loaded data or a load_data spec
CALIBRATION_IMAGES = 512
"""Training images an INT8 export's activation ranges are calibrated on (the first of the training loader)."""


class JCW:
    """A trained classifier and the device it will run on: plan, search, prune, fine-tune, export, measure.

    `example_inputs` is one input batch (its shape is used: (1, C, H, W)) or that shape. `predictor` is a latency
    model file (or a fitted LatencyModel) of `device` (`jcw fit`); one of another device is refused unless
    `allow_other_device`; without one, the search and the export's price are unavailable. `data` is (train_loader,
    val_loader) of (images, labels), an ImageData or a spec of pruner.data.loading.load_data ("mnist",
    "imagefolder:DIR", "FILE.py:factory"); the class count it gives must match the model's head. The search estimates
    accuracy on `val_loader`, so keep the test split out of it. `keep` holds globs of layer names left at full width
    and density. `torch_device` ("auto", "cpu", "cuda[:N]", "mps") is where candidates are scored and fine-tuned;
    under torchrun, fine-tuning is data-parallel. `devices` is the devices file (None: ./devices.yaml, else the one
    in the user's config directory). `origin` is the model's provenance record (`from_checkpoint` gives the
    checkpoint's), `settings` the search space's grids and bounds, when not the defaults, `multiple` the channel
    multiple widths are rounded to (None: the settings' or JCW's 4), `block` the sparsity block a pruned model's masks
    were made in, when not the device's, and `precision` ("fp32", "fp16", "int8") the precision to run at, when not
    the device runtime's: its counterpart runtime (profiler.runtimes.at_precision) then prices, exports and measures.
    """

    def __init__(
        self,
        model: nn.Module,
        example_inputs: torch.Tensor | Sequence[int],
        device: str | Device,
        predictor: str | Path | LatencyModel | None = None,
        data: Data | None = None,
        keep: Sequence[str] = (),
        torch_device: str = "auto",
        devices: str | Path | None = None,
        allow_other_device: bool = False,
        origin: dict | None = None,
        settings: dict | None = None,
        block: str | None = None,
        multiple: int | None = None,
        precision: str | None = None,
    ):
        self.model = model.eval()
        shape = example_inputs.shape if isinstance(example_inputs, torch.Tensor) else example_inputs
        self.input_shape = (1, *(int(v) for v in tuple(shape)[-3:]))
        self.device: Device = device if isinstance(device, Device) else get_device(device, devices)
        if precision is not None:
            self.device = dataclasses.replace(self.device, runtime=at_precision(self.device.runtime, precision))
        self.runtime = dataclasses.replace(self.device.runtime, block=block) if block else self.device.runtime
        self.origin = origin or {"kind": "python", "class": type(model).__qualname__,
                                 "input_shape": self.input_shape[1:]}
        self.predictor_path = None if predictor is None or isinstance(predictor, LatencyModel) else Path(predictor)
        self.predictor = predictor if self.predictor_path is None else load(predictor, self.device,
                                                                              allow_other_device)
        self.train_loader, self.val_loader, self.data_source = _loaders(data, self.model, self.input_shape)
        self._proxy_data: dict[tuple, ProxyData] = {}  # proxy_data's batches, per setting
        self.torch_device = init_distributed(resolve_device(torch_device))
        try:  # unexportable: refused now, before any work
            exported = export(self.model, self.input_shape, self.runtime, self._chooser())
        except UserError as err:
            raise type(err)(f"the model cannot be exported for '{self.device.name}' ({self.runtime}), so nothing is "
                            f"searched: {err}") from None
        self.cluster = self.runtime.cluster([layer.name for layer in exported.layers], exported.analysis)
        settings = settings or {"density_bounds": density_bounds(self.runtime)}
        if multiple is not None:
            settings = {**settings, "multiple": multiple}
        keeps = tuple(dict.fromkeys([*settings.get("keep", ()), *keep]))
        self.settings = {**settings, "keep": list(keeps)}
        self.space: SearchSpace | None = None  # a pruned model (weight masks attached) is exported, not searched
        self.latency: CandidateLatency | None = None
        if not any(hasattr(m, "weight_mask") for m in self.model.modules()):
            self.space = SearchSpace(analyze(self.model, self.input_shape), **{**settings, "keep": keeps})
            self.settings = space_settings(self.space)
            if self.predictor is not None:
                self.latency = device_latency(self.space, self.predictor, self.runtime.block, self.cluster)

    @classmethod
    def from_checkpoint(cls, ckpt: Checkpoint, device: str | Device, **kwargs) -> JCW:
        """The facade over a jcw checkpoint's model: its input shape, provenance and search-space settings, and, for
        a pruned one, the sparsity block its masks were made in."""
        jcw = cls(ckpt.model, ckpt.input_shape, device, origin=ckpt.provenance(), settings=ckpt.space_settings,
                  block=ckpt.block, **kwargs)
        if jcw.data_source is None:
            jcw.data_source = recorded_data(ckpt)
        return jcw

    def plan(self, candidates: int = 24, seed: int = 0) -> list[KernelSpec]:
        """The kernels a predictor for this model's search must have seen on the device (search.latency's
        profiling plan), to measure with `jcw profile` or profiler.profile.profile_device."""
        return profiling_plan(self._space(), self.runtime, candidates, seed, self.cluster)

    def search(
        self,
        budgets: Sequence[float] = (),
        out: str | Path = "runs/jcw",
        generations: int = 32,
        population: int = 64,
        methods: Sequence[str] = METHODS,
        val_images: int | None = None,
        bn_batches: int = 10,
        estimator: str | Estimator = "proxy",
        supernet_steps: int = 300,
        retrain_steps: int = 0,
        survival: str = "jcw",
        weight_stage: float | None = None,
        workers: int = 1,
        threads: int | None = None,
        seed: int = 0,
    ) -> Fronts:
        """The accuracy-latency fronts of each method and the best joint candidate under each budget (ms), written
        to `out` (pareto.csv, budgets.csv, fronts.png, ...; an interrupted search resumes from it, and a directory of
        a search of other inputs is refused, naming its run.json).

        Accuracy is estimated on the first `val_images` validation images (all when None), each candidate's
        BatchNorm recalibrated on `bn_batches` training batches: `estimator` "proxy" applies the candidate to the
        trained model; "supernet" trains JCW's weight-sharing supernet `supernet_steps` sandwich steps first (and
        `retrain_steps` more per generation); or any Estimator (e.g. `supernet()`'s, trained once for several
        searches). Scores run on `workers` processes with `threads` torch threads.
        `weight_stage` is the joint method's share of evaluations for its weight stage (None: the runtime's).
        summary.json records the estimate's settings too, and budgets.csv each pick's sparse-or-dense verdict where
        the runtime gives one (XNNPACK: columns xnnpack, xnnpack_reason)."""
        if self.latency is None or self.train_loader is None:
            raise UserError("the search needs an unpruned model, a predictor and data: JCW(..., predictor=..., "
                            "data=...)")
        record = self.provenance()
        check_run(Path(out) / "run.json", record)
        data = self.proxy_data(val_images, bn_batches, seed)
        retrain = None
        if not isinstance(estimator, str):
            scores = estimator
        elif estimator == "proxy":
            scores = proxy_estimator(self.model, self.space, data, self.runtime.block, threads, self.torch_device,
                                     workers)
        elif estimator == "supernet":
            scores = self.supernet(data, supernet_steps, seed, threads, workers)
            if retrain_steps:
                def retrain(X: np.ndarray) -> None:
                    scores.retrain(X, retrain_steps)
        else:
            raise UserError(f"estimator {estimator!r}: expected 'proxy' or 'supernet'")
        config = SearchConfig(n_gen=generations, pop_size=population, survival=survival, seed=seed)
        stage = self.runtime.weight_stage if weight_stage is None else weight_stage
        estimate = {"estimator": estimator if isinstance(estimator, str) else type(estimator).__name__,
                    "val_images": sum(len(y) for _, y in data.held_out),
                    "bn_batches": bn_batches, "seed": seed}
        try:
            fronts = run_fronts(self.space, self.latency, scores, out, config, budgets, methods,
                                on_generation=retrain, repair=self.latency.repair, weight_stage=stage,
                                record={**record, "estimate": estimate})
        finally:
            if isinstance(estimator, str):
                scores.close()  # the worker processes, if any
        self._add_verdicts(fronts.budgets, Path(out) / "budgets.csv")
        return fronts

    def _add_verdicts(self, picks, path: Path) -> None:
        """Each found pick's verdict from the runtime (XNNPACK: whether it runs the exported file sparse, and why),
        as columns xnnpack and xnnpack_reason of `picks`, rewritten to `path`; nothing for a runtime without one."""
        found = picks[picks["found"]] if len(picks) else picks
        verdicts = {genes: self.exported(genes).verdict for genes in dict.fromkeys(found.get("genes", ()))}
        if not any(verdicts.values()):
            return
        picked = [verdicts.get(genes) if ok else None for genes, ok in zip(picks["genes"], picks["found"], strict=True)]
        picks["xnnpack"] = ["" if v is None else "sparse" if v["sparse"] else "dense" for v in picked]
        picks["xnnpack_reason"] = ["" if v is None else v["reason"] for v in picked]
        picks.to_csv(path, index=False)

    def supernet(self, data: ProxyData, steps: int, seed: int = 0, threads: int | None = None,
                 workers: int = 1) -> SupernetEstimator:
        """JCW's weight-sharing supernet over the space, trained `steps` sandwich steps on the training loader, as an
        estimator scoring on `data`. Its random sub-networks come from candidates the search's repair has seen to
        (on XNNPACK: pushed over the sparse gate or made dense), so it learns the networks the search prices."""
        supernet = build_supernet(self.model, self._space(), self.runtime.block, self.torch_device)
        scores = SupernetEstimator(supernet, data, self.train_loader, seed=seed, threads=threads, workers=workers)
        pool = self.latency.repair(self.space.sample(np.random.default_rng(seed), 1024)) if self.latency else None
        scores.train(steps, pool=pool)
        return scores

    def proxy_data(self, val_images: int | None = None, bn_batches: int = 10, seed: int = 0) -> ProxyData:
        """The batches the search's estimates use: the first `bn_batches` training batches, their shuffle's and
        augmentation's random draws seeded by `seed` (torch's generator, restored after), and the first `val_images`
        validation images (all when None). Drawn once per setting, so every estimate of this facade sees the same."""
        if self.train_loader is None:
            raise UserError("accuracy estimates need data: JCW(..., data=...)")
        key = (val_images, bn_batches, seed)
        if key not in self._proxy_data:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                held_out = self.val_loader if val_images is None else first_images(self.val_loader, val_images)
                self._proxy_data[key] = proxy_data(self.train_loader, held_out, bn_batches)
        return self._proxy_data[key]

    def estimate(self, genes: Genes, val_images: int | None = None, bn_batches: int = 10, seed: int = 0) -> Evaluation:
        """One candidate's accuracy as the search's proxy estimator scores it: the trained weights pruned to it (l1
        block masks), BatchNorm recalibrated on `proxy_data`'s training batches, scored on its validation images."""
        score = ProxyScore(self.model, self._space(), self.proxy_data(val_images, bn_batches, seed), self.runtime.block)
        return score.on(self.torch_device)(self.genes(genes))

    def apply(self, genes: Genes, norm: str = "l1") -> nn.Module:
        """A pruned copy of the model: channels narrowed, weights masked in the device's block (masks stay attached
        through training). `norm` ranks weight blocks: "l1" as the search scores candidates, "l2" to fine-tune."""
        return apply_candidate(self.model, self.space, self.genes(genes), self.runtime.block, norm=norm)

    def genes(self, genes: Genes) -> np.ndarray:
        """Grid indices from a `genes` cell or a vector, checked against the space (one-line errors)."""
        return self._space().check(parse_genes(genes) if isinstance(genes, str) else genes)

    def _space(self) -> SearchSpace:
        if self.space is None:
            raise UserError("the model is already pruned (it carries weight masks): plan, search and prune the "
                            "unpruned one")
        return self.space

    def finetune(
        self,
        genes_or_model: Genes | nn.Module,
        epochs: int = 1,
        lr: float | None = None,
        optimizer: str = "adam",
        schedule: str = "cosine",
        patience: int | None = None,
        loader: Iterable | None = None,
    ) -> nn.Module:
        """A candidate (its genes, or a model from `apply`) trained on `loader` (None: the training loader) with its
        weight masks fixed, on the torch device; with `patience`, early-stopped on the validation loss (best weights
        kept)."""
        model = genes_or_model if isinstance(genes_or_model, nn.Module) else self.apply(genes_or_model, norm="l2")
        train(model, self.train_loader if loader is None else loader, epochs, lr=lr, optimizer=optimizer,
              schedule=schedule, val_loader=self.val_loader, patience=patience, desc="finetune",
              device=self.torch_device)
        return model.eval()

    def evaluate(self, model: nn.Module, loader: Iterable | None = None) -> Evaluation:
        """Mean cross-entropy and top-1 of `model` on `loader` (None: the validation loader), on the torch device."""
        return evaluate(model, self.val_loader if loader is None else loader, self.torch_device)

    def exported(self, model_or_genes: nn.Module | Genes) -> Exported:
        """The model (or the candidate of `genes`) as the device's runtime runs it, not yet written; on a runtime
        that says so (the built-in kernels) a sparse layer is stored dense where the predictor says dense is faster."""
        model = model_or_genes if isinstance(model_or_genes, nn.Module) else self.apply(model_or_genes)
        return export(model.cpu().eval(), self.input_shape, self.runtime, self._chooser())

    def _chooser(self):
        """The runtime's storage chooser (profiler.runtimes.Runtime.storage_chooser) with the predictor, if any."""
        return self.runtime.storage_chooser(self.predictor.predict if self.predictor is not None else None)

    def export(self, model_or_genes: nn.Module | Genes, path: str | Path, require_sparse: bool = False,
               genes: Sequence[int] | None = None, calibration: Iterable[np.ndarray] | None = None) -> Path:
        """Write the model file the device runs (.tflite or .onnx, by the device) and `path`.json beside it: the
        provenance (with the genes, when given, or `genes`, the candidate a given model is), runtime, precision, its
        sparse verdict, predicted latency (with a predictor) and the layers as stored. A model is moved to the CPU.
        `require_sparse` refuses a file the runtime would not run in its sparse regime (XNNPACK), naming why. A
        quantizing runtime (INT8) calibrates on `calibration` (input batches, NCHW), by default the first
        CALIBRATION_IMAGES images of the training loader."""
        if not isinstance(model_or_genes, nn.Module):
            genes = self.genes(model_or_genes)
        exported = self.exported(model_or_genes if isinstance(model_or_genes, nn.Module) else genes)
        path = Path(path)
        if path.suffix != exported.suffix:
            raise UserError(f"{path}: device '{self.device.name}' runs {exported.suffix} models; use that suffix")
        if require_sparse and not (exported.verdict or {}).get("sparse"):
            verdict = exported.verdict or {"reason": f"its runtime ({self.runtime}) has no sparse regime"}
            why = verdict["reason"]
            raise UserError(f"--require-sparse: XNNPACK will run {path.name} dense on '{self.device.name}': {why}")
        counted: list[int] = []  # images the runtime took from the calibration batches
        if calibration is None and self.train_loader is not None:
            calibration = _calibration_batches(self.train_loader, CALIBRATION_IMAGES)
        model = self.runtime.deployed(exported.model, None if calibration is None else _counted(calibration, counted))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(model)
        predicted = None
        if self.predictor is not None:  # priced as `jcw predict` prices the file: read back as the device runs it
            layers = self.runtime.read_layers(model, str(path))
            predicted = self.predictor.predict_network(list(layers.values()))
        record = {**self.provenance(), "genes": None if genes is None else [int(g) for g in genes],
                  "calibration_images": sum(counted) if counted else None}
        Path(f"{path}.json").write_text(json.dumps(sidecar(exported, self.input_shape, predicted, record), indent=1))
        return path

    def provenance(self) -> dict:
        """Where a run's inputs came from, as JSON values (run.json, summary.json, export sidecars): the model's
        origin, the search space's settings, the device, the data's source and the predictor's file and device."""
        fitted_on = self.predictor.fitted_on if self.predictor is not None else None
        predictor = None if self.predictor is None else {
            "path": str(self.predictor_path.resolve()) if self.predictor_path else None,
            "fitted_on": vars(fitted_on) if fitted_on else None}
        record = {"model": self.origin, "space": self.settings, "device": self.device.name,
                  "data": self.data_source, "predictor": predictor}
        return json.loads(json.dumps(record))  # tuples as lists, as read back

    def measure(self, path: str | Path, passes: int = 3) -> dict:
        """Time a model file end to end on the device: {"file", "latency_ms", "predicted_ms", "iqr_ms", "cv",
        "runs", "passes"}, the prediction (with a predictor) from the file read back as the device runs it."""
        (result,) = self.measure_all([path], passes)
        if "error" in result:
            raise UserError(f"{path}: measuring on '{self.device.name}' failed: {result['error'].splitlines()[0]}")
        return result

    def measure_all(self, paths: Sequence[str | Path], passes: int = 3) -> list[dict]:
        """`measure` of several files interleaved in each pass; a file that fails has {"file", "error"} (and its
        prediction) instead of failing the batch."""
        predicted = [self.predictor.predict_network(list(self.runtime.read_file(p).values()))
                     if self.predictor is not None else None for p in paths]  # before any time is spent
        return [{**r, "predicted_ms": p} for r, p in zip(measure_files(self.device, list(paths), passes), predicted,
                                                          strict=True)]


def score(model: nn.Module, example_inputs: torch.Tensor | Sequence[int], data: Data,
          torch_device: str = "auto") -> tuple[Evaluation, dict | None]:
    """A model's mean cross-entropy and top-1 on the validation split of `data` (as JCW takes it; the model's head
    checked against its classes) on `torch_device`, and where the data came from: a model scored with no device
    to prune it for (`jcw eval` without a candidate)."""
    shape = example_inputs.shape if isinstance(example_inputs, torch.Tensor) else example_inputs
    _, val, source = _loaders(data, model, (1, *(int(v) for v in tuple(shape)[-3:])))
    return evaluate(model, val, resolve_device(torch_device)), source


def sidecar(exported: Exported, input_shape: Sequence[int], predicted_ms: float | None, record: dict) -> dict:
    """The record written beside an exported model file (FILE.json): its provenance `record` (which names the
    device), its runtime and precision, whether XNNPACK runs it sparse, its predicted latency and every layer with its
    storage and pruned density."""
    return {
        **record, "runtime": exported.runtime.name, "precision": exported.runtime.precision,
        "input_shape": list(input_shape),
        "predicted_ms": predicted_ms, "xnnpack": exported.verdict,
        "layers": [{"name": layer.name, "storage": layer.storage, "pruned_density": layer.pruned_density,
                    **layer.spec.to_row()} for layer in exported.layers],
    }


def _calibration_batches(loader: Iterable, images: int) -> Iterator[np.ndarray]:
    """The first `images` images of a loader of (images, labels) as float32 arrays, batch by batch, read lazily (only
    a runtime that calibrates reads them)."""
    for batch, _ in first_images(loader, images):
        yield np.asarray(batch, dtype=np.float32)


def _counted(batches: Iterable[np.ndarray], counts: list[int]) -> Iterator[np.ndarray]:
    """`batches` passed through, the size of each appended to `counts`."""
    for batch in batches:
        counts.append(len(batch))
        yield batch


def _loaders(data: Data | None, model: nn.Module, input_shape: tuple[int, ...]) -> tuple:
    """(train_loader, val_loader, where the data came from) from the loaders, loaded data or a load_data spec, the
    model's head checked against the data's class count (pruner.data.loading.class_count); Nones without data."""
    if data is None:
        return None, None, None
    if isinstance(data, str):
        data = load_data(data, input_shape)
    if isinstance(data, ImageData):
        check_head(model, input_shape, data.num_classes)
        return data.train, data.val, data.source
    if not isinstance(data, tuple | list) or len(data) != 2:
        raise UserError(f"data must be (train_loader, val_loader) or a dataset spec, got {type(data).__name__}")
    check_head(model, input_shape, class_count(*data))
    return *data, {"kind": "loaders"}
