"""Latency predictor: learns kernel latency from (shape, channels, density) measurements."""

from predictor.latency import LatencyModel
from predictor.persist import load, save

__all__ = ["LatencyModel", "load", "save"]
