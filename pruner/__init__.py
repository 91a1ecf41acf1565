"""Pruner: model graph analysis, search space and candidate application for joint channel and weight pruning.

`from pruner import JCW` is the one Python entry point (pruner.api), imported on first use so that `import pruner`
(every `jcw` start) stays light."""

__all__ = ["JCW"]


def __getattr__(name: str):
    if name == "JCW":
        from pruner.api import JCW

        return JCW
    raise AttributeError(f"module 'pruner' has no attribute {name!r}")
