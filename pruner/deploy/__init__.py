"""Shipping a pruned network: `export` writes it as the target runtime runs it (TFLite or ONNX), each layer lowered
by the same functions the profiler measured."""
