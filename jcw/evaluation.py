"""`jcw eval`: the top-1 and loss of a model (a user's own, a pruned checkpoint, or a candidate of a search) on the
validation split, under the preprocessing its flags set, so a user sees what the model is scored on."""

from __future__ import annotations

import argparse

from jcw.options import (
    add_data_arg,
    add_devices_arg,
    add_keep_arg,
    add_model_args,
    add_preprocess_args,
    add_torch_args,
    at_least,
    load_data_arg,
    load_model_arg,
    torch_device_arg,
)


def register(sub: argparse._SubParsersAction) -> None:
    """Add `jcw eval` to the jcw parser."""
    p = sub.add_parser("eval", help="top-1 and loss of a model, or of a candidate, on the validation split")
    add_model_args(p)
    add_data_arg(p)
    add_preprocess_args(p)
    p.add_argument("--candidate", metavar="GENES",
                   help="genes of a candidate of the (unpruned) model, comma-separated: scored as the search scores "
                        "it, pruned and BatchNorm recalibrated (needs --device)")
    p.add_argument("--device", help="with --candidate: the device in devices.yaml whose sparsity block it is pruned in")
    add_devices_arg(p)
    add_keep_arg(p)
    p.add_argument("--bn-batches", type=at_least(1), default=10,
                   help="with --candidate: training batches BatchNorm is recalibrated on")
    p.add_argument("--seed", type=int, default=0, help="with --candidate: seed of the calibration batches' draw")
    add_torch_args(p)
    p.set_defaults(run=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    from jcw.commands import SEARCH_TRAIN_IMAGES, facade, unpruned
    from profiler.devices import get_device
    from profiler.errors import UserError
    from pruner.api import score
    from pruner.data.loading import describe

    torch_device = torch_device_arg(args)
    if args.candidate and not args.device:
        raise UserError("--candidate needs --device NAME: the device whose sparsity block its weights are pruned in")
    ckpt = load_model_arg(args)
    if args.candidate:
        unpruned(ckpt, "--candidate applies to an unpruned model")
        data = load_data_arg(args, ckpt.input_shape, seed=args.seed, train_limit=SEARCH_TRAIN_IMAGES)  # as searched
        jcw = facade(args, get_device(args.device, args.devices), ckpt, data, torch_device, predictor=False)
        result, source = jcw.estimate(args.candidate, None, args.bn_batches, args.seed), jcw.data_source
        what = (f"candidate on '{jcw.device.name}' (pruned as the search prunes it, BatchNorm recalibrated on "
                f"{args.bn_batches} training batches)")
    else:
        data = load_data_arg(args, ckpt.input_shape, seed=args.seed)
        result, source = score(ckpt.model, ckpt.input_shape, data, str(torch_device))
        what = "pruned model" if ckpt.genes is not None else "model"
    count = len(getattr(data.val, "dataset", ()))
    print(f"{what}: validation top-1 {result.top1:.2%}, loss {result.loss:.4f} on "
          f"{f'{count} images' if count else 'the validation split'} of {describe(source)}")
    return 0
