"""Device resolution: `auto` picks CUDA when present, else CPU."""
from __future__ import annotations

import torch

from utils.errors import UserError


def resolve_device(name: str = "auto", cudnn_benchmark: bool = True, deterministic: bool = False) -> torch.device:
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' -> torch.device, with the cuDNN switches applied."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError("--device cuda was asked for but no CUDA GPU is available (use --device cpu)")
        torch.backends.cudnn.benchmark = cudnn_benchmark and not deterministic
        torch.backends.cudnn.deterministic = deterministic
    elif name != "cpu":
        raise UserError(f"unknown device '{name}': use auto, cpu or cuda")
    return torch.device(name)


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc's ceiling on 64-bit systems


def keep_freed_host_memory() -> bool:
    """Make glibc malloc reuse freed tensor memory instead of handing it back to the OS.

    PyTorch's CPU allocator calls malloc directly. With glibc's defaults, tensors of a few MB
    are mmap-ed or trimmed on free, so every step page-faults (and zero-fills) its activations
    anew: ~5,000 faults per search step at the benchmark size, 10-20% of the step on a 2-core
    machine. A high mmap and trim threshold keeps that memory in the heap for the next step,
    as jemalloc/tcmalloc would. Process-wide, idempotent; a no-op (False) without glibc.
    """
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)
    return bool(ok and mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
