"""Section 'copy': device copy bandwidth, the ceiling the fused ops are held against."""
from __future__ import annotations

import statistics

import torch

METHOD = "dst.copy_(src) of one large float32 tensor; bytes = 2 * nbytes (read + write)."
COLUMNS = [("name", "name"), ("median ms", "ms"), ("GB/s", "gb_per_s")]


def run(b) -> None:
    n = b.cfg["copy_numel"]
    nbytes = 2 * n * 4

    def body():
        src = torch.randn(n, device=b.device)
        dst = torch.empty_like(src)
        times = b.time(lambda: dst.copy_(src), 30, 5)
        b.copy_gbps = nbytes / statistics.median(times) / 1e9
        return times, dict(bytes_moved=nbytes, gb_per_s=b.copy_gbps)

    b.item("copy", "copy/float32", dict(numel=n, nbytes_per_tensor=n * 4), body)
    b.free()
