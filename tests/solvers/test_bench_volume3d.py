"""The benchmark's 'volume3d' section through ``python -m benchmarks.run``'s entry point, at a tiny
size: JSON records per method and seed, summaries over seeds, markdown table. Without nilearn
(the data3d extra) a synthetic ellipsoid stands in for the bundled head volume."""
import importlib.util

import torch

from benchmarks import harness
from benchmarks.sections import volume3d


def _phantom(shape):
    g = torch.stack(torch.meshgrid(*[torch.linspace(-1, 1, n) for n in shape], indexing="ij"))
    mag = ((g**2).sum(0) < 0.7).float() * (1 + 0.3 * g[1])
    return torch.stack([mag / mag.max(), torch.zeros_like(mag)])[None]


def test_volume3d_section(tmp_path, monkeypatch):
    if importlib.util.find_spec("nilearn") is None:
        monkeypatch.setattr(volume3d, "mri_volume", _phantom)
    sets = dict(volume3d_shape=[8, 32, 32], volume3d_coils=2, volume3d_TK=[1, 2], volume3d_seeds=2)
    report = harness.run_report(tmp_path, "volume3d", **sets)
    assert report["sections"]["volume3d"] == "ran" and "volume3d" in report["methods"]
    recs = {r["name"]: r for r in report["results"]}
    assert not [r for r in report["results"] if "error" in r or "skipped" in r]
    case = "mri3d-8x32x32-2coil"
    for method in volume3d.METHODS:
        for seed in (0, 1):
            r = recs[f"volume3d/{case}/{method}/seed{seed}"]
            assert {"wall_s", "psnr", "ssim", "median_s", "times_s"} <= set(r)
            assert r["params"]["seed"] == seed and torch.isfinite(torch.tensor(r["psnr"]))
            assert 0 < r["ssim"] <= 1
            if method != "zero-filled":
                assert r["iterations"] == 2
        s = recs[f"volume3d/{case}/{method}"]
        assert s["seeds"] == [0, 1] and s["params"]["summary"]
        for key in ("wall_s", "psnr", "ssim"):
            assert s[f"{key}_min"] <= s[f"{key}_mean"] <= s[f"{key}_max"]
    assert recs[f"volume3d/{case}/sdi2d-slices/seed0"]["batch"] == 8
    assert f"| volume3d/{case}/sdi3d |" in next(tmp_path.glob("*.md")).read_text()
