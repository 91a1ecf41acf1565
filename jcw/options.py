"""The flags the model commands share, one name per concept, and what they are read into.

`--model` is a PyTorch model (a jcw checkpoint, or FILE.py:factory / package.module:factory with `--weights` and
`--input-shape`), `--data` a dataset and `--resize`, `--mean`, `--std`, `--augment` its preprocessing, `--predictor` a
latency model file, `--device` a device of the inventory, `--torch-device` where torch computes, `--keep` layers left
alone. Heavy libraries are imported when a command runs, so `jcw --help` stays fast.
"""

from __future__ import annotations

import argparse
import math
import reprlib
from collections.abc import Callable

AUGMENTS = ("crop-flip", "flip", "none")  # pruner.data.loading.AUGMENTS, without importing torch for --help


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every subcommand's help: each flag's default after its help, unless the help already says what it is or the
    flag has none (None, off, an empty list)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help = action.help or ""
        none = action.default is None or action.default is False or action.default == [] or \
            action.default is argparse.SUPPRESS
        if "default" in help or none or not action.option_strings:
            return help
        return f"{help} (default: %(default)s)" if help else "(default: %(default)s)"


def add_devices_arg(parser: argparse.ArgumentParser) -> None:
    """--devices FILE, the device inventory, for every command that names a device."""
    parser.add_argument("--devices", metavar="FILE", help="device inventory (default: ./devices.yaml, else "
                                                          "devices.yaml in the user's config directory, ~/.config/jcw)")


def add_model_args(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """--model, --weights and --input-shape: a PyTorch model as the user names it
    (pruner.model.checkpoint.load_model)."""
    parser.add_argument("--model", required=required,
                        help="PyTorch model: a jcw checkpoint (jcw train, jcw finetune), or FILE.py:factory or "
                             "package.module:factory, a function returning the nn.Module")
    parser.add_argument("--weights", metavar="STATE_DICT.pt",
                        help="with a factory: its weights, a state_dict file (loaded with weights_only=True)")
    parser.add_argument("--input-shape", metavar="C,H,W", help="with a factory: its input shape, e.g. 3,224,224")


def add_data_arg(parser: argparse.ArgumentParser) -> None:
    """--data: a dataset (pruner.data.loading.load_data)."""
    parser.add_argument("--data", default="mnist",
                        help="dataset: mnist (built in), imagefolder:DIR (DIR/train and DIR/val, one subfolder of "
                             "images per class) or FILE.py:factory returning (train_loader, val_loader)")


def add_preprocess_args(parser: argparse.ArgumentParser) -> None:
    """--resize, --mean, --std and --augment: how an image folder's images become the model's input (recorded in
    the data provenance of run.json, summary.json and the sidecars)."""
    g = parser.add_argument_group("preprocessing of imagefolder: data (MNIST and data factories have their own)")
    g.add_argument("--resize", type=resize_arg, default="auto", metavar="N|auto",
                   help="the shorter side images are scaled to before the center crop to the input size; auto: a "
                        "small image (CIFAR's 32 px for a 32 px input) is scaled to the input size, never cropped, a "
                        "large one to the input size / 0.875, as ImageNet models are evaluated")
    g.add_argument("--mean", type=floats, metavar="M[,M,M]",
                   help="per-channel mean subtracted from pixels in [0, 1] (default: ImageNet's 0.485,0.456,0.406 "
                        "for RGB, 0.449 for grey)")
    g.add_argument("--std", type=floats, metavar="S[,S,S]",
                   help="per-channel standard deviation divided by (default: ImageNet's 0.229,0.224,0.225 for RGB, "
                        "0.226 for grey)")
    g.add_argument("--augment", default="crop-flip", choices=AUGMENTS,
                   help="training images: a random crop (of the image padded by 1/8 when small) and a horizontal "
                        "flip, the flip alone, or neither; validation images are never augmented")


def load_data_arg(args: argparse.Namespace, input_shape, **kwargs):
    """The pruner.data.loading.ImageData of --data under the preprocessing flags (`kwargs` go to load_data);
    --resize, --mean and --std are refused for data they do not apply to, naming the flag."""
    from profiler.errors import UserError
    from pruner.data.loading import load_data

    if not args.data.startswith("imagefolder:"):
        given = [flag for flag, set_ in (("--resize", args.resize != "auto"), ("--mean", args.mean is not None),
                                         ("--std", args.std is not None)) if set_]
        if given:
            by = "the toolkit (scaled to the input size, pixels in [0, 1])" if args.data == "mnist" else "its factory"
            raise UserError(f"{given[0]}: applies to imagefolder: data; --data {args.data} is preprocessed by {by}")
    return load_data(args.data, input_shape, mean=args.mean, std=args.std,
                     resize=None if args.resize == "auto" else args.resize, augment=args.augment, **kwargs)


def add_estimate_args(parser: argparse.ArgumentParser) -> None:
    """--val-size, --bn-batches and --seed: how the search's proxy estimate prepares and scores a candidate."""
    parser.add_argument("--val-size", type=at_least(1), default=1000,
                        help="held-out validation images per accuracy estimate (the first ones of the split)")
    parser.add_argument("--bn-batches", type=at_least(1), default=10,
                        help="training batches each estimate recalibrates BatchNorm on")
    parser.add_argument("--seed", type=int, default=0,
                        help="the search's seed; the estimates' calibration batches (their shuffle and augmentation) "
                             "are drawn with it")


def add_torch_args(parser: argparse.ArgumentParser) -> None:
    """--torch-device and --threads: where and on how many threads torch trains and scores."""
    parser.add_argument("--torch-device", default="auto", metavar="DEVICE",
                        help="where torch trains and scores: auto (a GPU if there is one, else the CPU), cpu, "
                             "cuda, cuda:N or mps")
    parser.add_argument("--threads", type=at_least(1), metavar="N",
                        help="torch threads (default: torch's own choice, one per core)")


def add_keep_arg(parser: argparse.ArgumentParser) -> None:
    """--keep GLOB: layers the search space leaves at full width and density."""
    parser.add_argument("--keep", action="append", default=[], metavar="GLOB",
                        help="leave the layers whose names match alone (full width, dense); an fnmatch glob, "
                             "e.g. 'features.0.*' (repeatable)")


def add_channel_multiple_arg(parser: argparse.ArgumentParser) -> None:
    """--channel-multiple N: the multiple a pruned layer's channels are rounded to (SearchSpace.multiple)."""
    parser.add_argument("--channel-multiple", type=at_least(1), metavar="N",
                        help="round a pruned layer's channels to multiples of N (default 4, JCW's; a search's "
                             "candidates are only valid with the N they were searched with)")


def add_device_args(parser: argparse.ArgumentParser) -> None:
    """--device NAME and --devices FILE: the device the model is for."""
    parser.add_argument("--device", required=True, help="a device in devices.yaml")
    add_devices_arg(parser)


def load_model_arg(args: argparse.Namespace):
    """The pruner.model.checkpoint.Checkpoint that --model, --weights and --input-shape name."""
    from pruner.model.checkpoint import load_model

    return load_model(args.model, args.weights, args.input_shape)


def torch_device_arg(args: argparse.Namespace):
    """The torch.device of --torch-device, after setting --threads; joins torchrun's process group when started
    under torchrun (pruner.accuracy.hardware), so training runs data-parallel."""
    from pruner.accuracy.hardware import init_distributed, resolve_device, set_threads

    set_threads(args.threads)
    return init_distributed(resolve_device(args.torch_device))


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type for an integer flag of at least `minimum`: a bad value is a usage error naming the flag."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{reprlib.repr(text)} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} must be at least {minimum}")
        return value

    return parse


def resize_arg(text: str) -> int | str:
    """An argparse type for --resize: "auto" or a positive number of pixels."""
    return text if text == "auto" else at_least(1)(text)


def floats(text: str) -> tuple[float, ...]:
    """An argparse type for a comma-separated list of finite numbers (--mean, --std)."""
    try:
        values = tuple(float(item) for item in text.replace(" ", "").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{reprlib.repr(text)} is not a comma-separated list of numbers") from None
    if not all(map(math.isfinite, values)):
        raise argparse.ArgumentTypeError(f"{reprlib.repr(text)}: every value must be a finite number")
    return values


def positive_float(text: str) -> float:
    """An argparse type for a positive finite number (inf and nan would only fail deep inside a command)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{reprlib.repr(text)} is not a positive number")
    return value


def budgets(text: str) -> list[float]:
    """Latency budgets in ms, comma-separated, each checked before the search loads anything."""
    try:
        return [positive_float(item) for item in text.replace(" ", "").split(",") if item]
    except argparse.ArgumentTypeError as err:
        raise argparse.ArgumentTypeError(f"{err} (budgets are milliseconds, comma-separated, e.g. 2,4.5)") from None
