"""Numpy reference implementations of the kernels, the ground truth for every generated model."""

import numpy as np

from profiler.kernel import KernelSpec


def activation(y: np.ndarray, name: str) -> np.ndarray:
    if name == "relu":
        return np.maximum(y, 0)
    if name == "relu6":
        return np.clip(y, 0, 6)
    if name == "hardswish":
        return y * np.clip(y + 3, 0, 6) / 6
    if name == "hardsigmoid":
        return np.clip(y + 3, 0, 6) / 6
    if name == "sigmoid":
        return 1 / (1 + np.exp(-y))
    if name == "silu":
        return y / (1 + np.exp(-y))
    assert name == "none", name
    return y


def kernel(x_nchw: np.ndarray, spec: KernelSpec, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """PyTorch semantics: NCHW input, (cout, cin/groups, k, k) weight, padding k // 2."""
    if spec.op == "fc":
        return activation(x_nchw @ weight.reshape(spec.cout, spec.cin).T + bias, spec.activation)
    p, s, g = spec.k // 2, spec.stride, spec.groups
    x = np.pad(x_nchw, [(0, 0), (0, 0), (p, p), (p, p)]).astype(np.float64)
    oh, ow = spec.out_hw
    n = x.shape[0]
    cin_g, cout_g = spec.cin // g, spec.cout // g
    out = np.zeros((n, spec.cout, oh, ow))
    for gi in range(g):
        xs = x[:, gi * cin_g:(gi + 1) * cin_g]
        ws = weight[gi * cout_g:(gi + 1) * cout_g].astype(np.float64)
        for i in range(spec.k):
            for j in range(spec.k):
                patch = xs[:, :, i:i + s * oh:s, j:j + s * ow:s]
                out[:, gi * cout_g:(gi + 1) * cout_g] += np.einsum("nchw,oc->nohw", patch, ws[:, :, i, j])
    return activation(out + bias[None, :, None, None], spec.activation).astype(np.float32)
