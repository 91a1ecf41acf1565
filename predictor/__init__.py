"""Latency predictor: learns kernel latency from (shape, channels, density) measurements."""

__all__ = ["LatencyModel", "load", "save"]


def __getattr__(name: str):
    """Import the model API on first use, so `import predictor.cli` (every `jcw` start) stays light."""
    if name == "LatencyModel":
        from predictor.latency import LatencyModel

        return LatencyModel
    if name in ("load", "save"):
        from predictor import persist

        return getattr(persist, name)
    raise AttributeError(f"module 'predictor' has no attribute {name!r}")
