"""The flags the model commands share, one name per concept, and what they are read into.

`--model` is a PyTorch model (a jcw checkpoint, or FILE.py:factory / package.module:factory with `--weights` and
`--input-shape`), `--data` a dataset, `--predictor` a latency model file, `--device` a device of the inventory,
`--torch-device` where torch computes, `--keep` layers left alone. Heavy libraries are imported when a command
runs, so `jcw --help` stays fast.
"""

from __future__ import annotations

import argparse
import math
import reprlib
from collections.abc import Callable


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
                             "images per class) or FILE.py:factory returning (train_loader, val_loader) "
                             "(default mnist)")


def add_torch_args(parser: argparse.ArgumentParser) -> None:
    """--torch-device and --threads: where and on how many threads torch trains and scores."""
    parser.add_argument("--torch-device", default="auto", metavar="DEVICE",
                        help="where torch trains and scores: auto (a GPU if there is one, else the CPU), cpu, "
                             "cuda, cuda:N or mps (default auto)")
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
