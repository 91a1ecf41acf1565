"""The `jcw` command: one entry point over the profiler, predictor and pruner."""
