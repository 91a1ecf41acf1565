"""Profiler: measure sparse and narrowed conv kernels on devices (this machine, SSH boards, adb phones)."""

from profiler.kernel import KernelSpec

__all__ = ["KernelSpec"]
