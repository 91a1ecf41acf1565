"""Pruner: model graph analysis, search space and candidate application for joint channel and weight pruning."""
