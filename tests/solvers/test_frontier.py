"""The compute-quality levers of self-diffusion on CPU at tiny sizes: the plateau rule, the
network's normalisation, the volume modes ('shared' and 'warm' against hand-written loops), the
FLOP count of a training step, and the benchmark's 'frontier' section end to end."""
import math

import pytest
import torch
from torch import nn

from fastsd.data import mri_slice
from fastsd.functional.noise import noisy_input
from fastsd.graphs.step_graph import BatchedNet
from fastsd.nets.cost import training_step_flops
from fastsd.nets.unet import SampleNorm, UNet, init_weights, per_sample_norm
from fastsd.ops.coils import birdcage_maps
from fastsd.ops.masks import equispaced_mask
from fastsd.ops.mri import MRI
from fastsd.solvers.schedules import sdi_sigmas
from fastsd.solvers.sdi import PLATEAU_CHECKS, SelfDiffusion, total_variation
from fastsd.solvers.volume import warm_order, warm_steps
from fastsd.testing import assert_close

NET = dict(small=True, width=4, depth=2)


def _scan(B=3, size=16, C=2):
    """B different slices (flips and shifts of the head slice), one acquisition for all."""
    base = mri_slice(size, phase="smooth")
    x = torch.cat([torch.roll(base, shifts=2 * b, dims=-1) * (1 - 0.1 * b) for b in range(B)])
    op = MRI(equispaced_mask((size, size), 4, acs_lines=2), birdcage_maps(C, (size, size)))
    return x, op, op(x)


# -- the hand-written self-diffusion loop the solver must equal ---------------------------------


def _hand_levels(nets, x_hat, y, op, seeds, levels, K, lr, scale):
    """The official loop over ``levels`` for problems sharing one net (len(nets) == 1) or one net
    each: noise once per level, K Adam steps on ‖A D(x̂ + σε) − y‖ + 1e-4·TV, x̂ ← last output."""
    sigmas = sdi_sigmas(max(levels) + 1, 1e-4, 1e-2, 1.0)
    opt = torch.optim.Adam([p for n in nets for p in n.parameters()], lr=lr)
    ys = y * scale.reshape(-1, 1, 1, 1)
    seeds_t = torch.tensor(seeds)
    B = x_hat.shape[0]
    for t in levels:
        x_in = noisy_input(x_hat.float(), sigmas[t], seeds_t, torch.tensor(t), validate=False)
        for _ in range(K):
            opt.zero_grad()
            out = torch.cat([nets[0 if len(nets) == 1 else b](x_in[b:b + 1]) for b in range(B)])
            r = (op(out) - ys).flatten(1)
            loss = torch.sqrt((r.abs() ** 2).sum(1)) + 1e-4 * total_variation(out)
            loss.sum().backward()
            opt.step()
        x_hat = out.detach()
    return x_hat


def _hand_start(seeds, y, op, shared):
    """Networks, x̂₀ and scaling drawn as the solver draws them (problem b from seed b's generator)."""
    nets, x0, z0 = [], [], []
    for b, s in enumerate(seeds):
        g = torch.Generator().manual_seed(s)
        if b == 0 or not shared:
            nets.append(init_weights(UNet(2, 2, width=4, depth=2), generator=g).train())
        x0.append(torch.randn(2, *y.shape[-2:], generator=g, dtype=torch.float64))
        z0.append(torch.randn(2, *y.shape[-2:], generator=g, dtype=torch.float64))
    x0, z0 = torch.stack(x0).float(), torch.stack(z0).float()
    with torch.no_grad():
        d = torch.cat([nets[0 if shared else b](z0[b:b + 1]) for b in range(len(seeds))])
        scale = d.flatten(1).norm(dim=1) / op.adjoint(y).flatten(1).norm(dim=1)
    return nets, x0, scale


def test_shared_volume_equals_hand_written_loop():
    x, op, y = _scan(B=2)
    T, K, lr = 2, 3, 1e-3
    got = SelfDiffusion("mri", T=T, K=K, lr=lr, volume="shared", seed=5, **NET).solve(y, op).x
    nets, x0, scale = _hand_start([5, 6], y, op, shared=True)
    want = _hand_levels(nets, x0, y, op, [5, 6], list(range(T)), K, lr, scale) / scale.reshape(-1, 1, 1, 1)
    assert_close("x", got, want, factor=10)  # fp32 Adam steps amplify rounding


def test_warm_volume_equals_hand_written_loop():
    """Centre slice 1 runs every level; slices 0 and 2 continue copies of its trained network from
    its x̂ and scaling, with fresh Adam, over the last ``warm_levels`` levels."""
    x, op, y = _scan(B=3)
    T, K, lr, seed = 3, 2, 1e-3, 2
    res = SelfDiffusion("mri", T=T, K=K, lr=lr, volume="warm", warm_levels=1, seed=seed, **NET).solve(y, op)
    assert res.info["order"] == [[1], [0, 2]]
    assert res.info["slice_steps"] == T * K + 2 * 1 * K
    nets, x0, scale = _hand_start([seed + 1], y[1:2], op, shared=False)
    centre = _hand_levels(nets, x0, y[1:2], op, [seed + 1], list(range(T)), K, lr, scale)
    assert_close("centre slice", res.x[1:2], centre / scale, factor=10)  # fp32 Adam steps amplify rounding
    for s in (0, 2):
        copy = init_weights(UNet(2, 2, width=4, depth=2)).train()
        copy.load_state_dict(nets[0].state_dict())
        want = _hand_levels([copy], centre, y[s:s + 1], op, [seed + s], [T - 1], K, lr, scale) / scale
        assert_close(f"slice {s}", res.x[s:s + 1], want, factor=10)


def test_warm_callback_counts_steps_over_groups():
    x, op, y = _scan(B=4)
    seen = []
    res = SelfDiffusion("mri", T=3, K=2, volume="warm", warm_levels=2, **NET).solve(
        y, op, callback=lambda it, st: seen.append((it, st["slices"], st["x"].shape[0])))
    assert [s for _, s, _ in seen] == [[2]] * 3 + [[1, 3]] * 2 + [[0]] * 2
    assert all(n == len(s) for _, s, n in seen)
    its = [it for it, _, _ in seen]
    assert its == sorted(its) and its[-1] == warm_steps(4, 3, 2, 2) == 6 + 2 * 4 == res.info["iterations"]
    assert res.info["slice_steps"] == 6 + 2 * 4 + 1 * 4


def test_one_slice_shared_equals_independent():
    x, op, y = _scan(B=1)
    kw = dict(preset="mri", T=2, K=3, seed=1, **NET)
    a = SelfDiffusion(**kw).solve(y, op).x
    b = SelfDiffusion(volume="shared", **kw).solve(y, op).x
    assert_close("x", b, a)


def test_shared_volume_normalises_each_slice_over_itself():
    """Changing slice 1 must not change slice 0's network output (no statistics across slices)."""
    x, op, y = _scan(B=2)
    run = SelfDiffusion("mri", T=1, K=1, volume="shared", **NET).prepare(y, op)
    z = torch.randn(2, 2, 16, 16)
    z2 = z.clone()
    z2[1] = 5 * z2[1] + 3
    with torch.no_grad():
        assert_close("slice 0 output", run.net(z)[0], run.net(z2)[0])
    assert not any(type(m) is nn.BatchNorm2d for m in run.net.template.modules())


def test_warm_order_covers_every_slice_from_its_neighbour():
    for B in range(1, 8):
        groups = warm_order(B)
        seen = [s for g, _ in groups for s in g]
        assert sorted(seen) == list(range(B)) and groups[0] == ([B // 2], [])
        done = set()
        for slices, sources in groups:
            assert all(src in done and abs(src - s) == 1 for s, src in zip(slices, sources))
            done |= set(slices)


def test_warm_needs_an_operator_that_selects_slices():
    from fastsd.ops.image import Denoise

    with pytest.raises(ValueError, match="volume='warm' needs an operator that can select slices"):
        SelfDiffusion("image", volume="warm", **NET).solve(torch.rand(2, 1, 16, 16), Denoise())


def test_volume_options_are_checked():
    with pytest.raises(ValueError, match="volume must be one of"):
        SelfDiffusion(volume="stacked")
    with pytest.raises(ValueError, match="per-slice statistics"):
        SelfDiffusion(volume="shared", fused_norm=True)
    with pytest.raises(ValueError, match="warm_levels"):
        SelfDiffusion(volume="warm", warm_levels=0)
    with pytest.raises(ValueError, match="shared_net=True means"):
        SelfDiffusion(shared_net=True, volume="warm")
    assert SelfDiffusion(shared_net=True).volume == "shared"


def test_mri_select_indexes_per_problem_masks_and_maps():
    x, op, y = _scan(B=3)
    per = MRI(torch.stack([op.mask, op.mask.flip(-1), op.mask.roll(1, -1)]),
              torch.stack([op.smaps, op.smaps.conj(), 2 * op.smaps]))
    sub = per.select([2, 0])
    assert torch.equal(sub.mask, per.mask[[2, 0]]) and torch.equal(sub.smaps, per.smaps[[2, 0]])
    assert op.select([1]).mask is not None and torch.equal(op.select([1]).mask, op.mask)


def test_gather_copies_problems_of_trained_networks():
    nets = [UNet(2, 2, width=2, depth=1, seed=s) for s in range(3)]
    a = BatchedNet(nets)
    g = BatchedNet.gather([(a, 2), (a, 0)])
    assert g.n == 2
    for k, v in g.params.items():
        assert torch.equal(v[0], a.params[k][2]) and torch.equal(v[1], a.params[k][0]) and v.is_leaf
        assert v.data_ptr() != a.params[k].data_ptr()
    z = torch.randn(2, 2, 8, 8)
    assert_close("output", g(z), torch.stack([a(torch.stack([z[1]] * 3))[0], a(torch.stack([z[0]] * 3))[2]])[[1, 0]],
                 factor=0.1)


# -- the plateau rule -----------------------------------------------------------------------------


@pytest.mark.parametrize("plateau", [0.0, 0.02, 0.99])
def test_plateau_rule_ends_levels_as_stated(plateau):
    """Each level stops at the first check where the chunk's mean loss fell by less than the
    fraction ``plateau`` (or after K steps); read back from the loss history."""
    x, op, y = _scan(B=1)
    T, K = 3, 20
    res = SelfDiffusion("mri", T=T, K=K, plateau=plateau, seed=0, **NET).solve(y, op)
    steps, loss = res.history["level_steps"], res.history["loss"]
    assert len(steps) == T and sum(steps) == len(loss) == res.info["iterations"]
    chunk, i = K // PLATEAU_CHECKS, 0
    for n in steps:
        means = [sum(loss[i + j:i + j + chunk]) / chunk for j in range(0, n, chunk)]
        falls = [m > (1 - plateau) * p for p, m in zip(means, means[1:])]
        assert not any(falls[:-1]) and (falls[-1] if n < K else True)
        i += n
    if plateau == 0.99:
        assert steps == [2 * chunk] * T


def test_plateau_is_checked():
    with pytest.raises(ValueError, match="plateau"):
        SelfDiffusion(plateau=1.5)


# -- networks and their cost ----------------------------------------------------------------------


@pytest.mark.parametrize("H,W", [(16, 16), (17, 23)])
def test_sample_norm_is_batch_norm_at_batch_one(H, W):
    torch.manual_seed(0)
    a = UNet(2, 2, width=4, depth=2, seed=1).train()
    b = per_sample_norm(UNet(2, 2, width=4, depth=2, seed=1))
    c = UNet(2, 2, width=4, depth=2, seed=1, norm="sample")
    c.load_state_dict(a.state_dict(), strict=False)
    x = torch.randn(1, 2, H, W)
    assert_close("per_sample_norm", b(x), a(x))
    assert_close("norm='sample'", c(x), a(x))
    assert any(isinstance(m, SampleNorm) for m in b.modules())
    x2 = torch.randn(3, 2, H, W)
    assert_close("batch of 3", b(x2)[1:2], a.eval().train()(x2[1:2]))


def test_norm_none_and_unknown():
    net = UNet(2, 2, width=4, depth=2, norm="none")
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())
    assert net(torch.randn(1, 2, 16, 16)).shape == (1, 2, 16, 16)
    with pytest.raises(ValueError, match="norm must be one of"):
        UNet(2, 2, norm="layer")
    x, op, y = _scan(B=1)
    with pytest.raises(ValueError, match="default 2-D U-Net"):
        SelfDiffusion(norm="none", net=UNet(2, 2, width=2, depth=1)).solve(y, op)


def test_training_step_flops_closed_form():
    """3x3 convs C_in -> C_out on H x W: forward 2·C_in·C_out·9·H·W each; the backward computes
    every weight gradient (the same count) and the input gradients of all but the first layer
    (the network input needs none, as in a training step)."""
    H, W, ci, co = 7, 5, 3, 4
    fwd1, fwd2 = 2 * ci * co * 9 * H * W, 2 * co * co * 9 * H * W
    assert training_step_flops(nn.Conv2d(ci, co, 3, padding=1), (1, ci, H, W)) == 2 * fwd1
    two = nn.Sequential(nn.Conv2d(ci, co, 3, padding=1), nn.Conv2d(co, co, 3, padding=1))
    assert training_step_flops(two, (1, ci, H, W)) == 2 * fwd1 + 3 * fwd2
    paper = training_step_flops(UNet(2, 2, width=64, depth=5), (1, 2, 320, 320))
    assert 470e9 < paper < 480e9  # DESIGN.md: ≈ 476 GFLOP per training step at 320²


# -- the benchmark section ------------------------------------------------------------------------


def test_frontier_section(tmp_path, monkeypatch):
    """``python -m benchmarks.run --only frontier`` at a tiny size: rows, summaries over seeds, the
    chosen preset and the targets. The MNI problems are replaced by head-slice stand-ins."""
    from benchmarks import harness
    from benchmarks.sections import frontier

    def problem(name, cfg):
        n = cfg["frontier_size"]
        x = mri_slice(n) if name != "scan" else torch.cat([torch.roll(mri_slice(n), b, -1)
                                                            for b in range(cfg["frontier_slices"])])
        op = MRI(equispaced_mask((n, n), 4, acs_lines=2), birdcage_maps(cfg["frontier_coils"], (n, n)))
        return x, op(x), op

    monkeypatch.setattr(frontier, "problem", problem)
    sets = dict(frontier_size=32, frontier_slices=3, frontier_seeds=2, frontier_k_scale=0.04, frontier_workers=1,
                frontier_coils=2)
    report = harness.run_report(tmp_path, "frontier", budget_s=3000, **sets)
    assert not [r for r in report["results"] if "error" in r or "skipped" in r]
    recs = {r["name"]: r for r in report["results"]}
    paper = recs["frontier/paper"]
    assert paper["slice_steps_mean"] == 40 * 2 and len(paper["per_seed"]) == 2
    assert paper["psnr_min"] <= paper["psnr_mean"] <= paper["psnr_max"]
    half = recs["frontier/T20xK50"]
    assert half["work_ratio"] == pytest.approx(0.5) and "psnr_delta" in half
    fast = recs["frontier/mri-fast"]
    assert recs[f"frontier/{fast['chosen']}"]["psnr_mean"] >= paper["psnr_mean"] - 0.3
    for mode in ("independent", "shared"):
        assert recs[f"frontier/scan/{mode}"]["params"]["slices"] == 3
    warm = [r for n, r in recs.items() if n.startswith("frontier/scan/warm") and r["params"]["lever"] == "volume"]
    assert warm and all(r["work_ratio"] < 1 and math.isfinite(r["psnr_delta"]) for r in warm)
    assert recs["frontier/mri-fast+width4"]["step_gflop"] < recs["frontier/mri-fast+width16"]["step_gflop"]
    both = recs["frontier/mri-fast+width16+depth3"]
    assert both["params"]["lever"] == "combined" and math.isfinite(both["psnr_delta"])
    assert recs["frontier/scan/warm+width16"]["work_ratio"] > recs["frontier/scan/warm"]["work_ratio"]
    frontier.figure(report, tmp_path / "frontier.png")
    assert (tmp_path / "frontier.png").stat().st_size > 10_000
    targets = report["targets"]
    assert "frontier_work_ratio[mri-32-2coil/mri-fast]" in targets
    assert any(k.startswith("frontier_psnr_delta[scan3-32-2coil/warm") for k in targets)
    assert not [k for k in targets if "+width" in k]  # combined rows are reported, not held to the volume targets
    # a later run adding rows beside a committed one: the given schedule, its baselines, the named levers
    again = harness.run_report(tmp_path / "again", "frontier", budget_s=3000, frontier_fast={"T": 10, "K": 100},
                               frontier_levers=["combined"], **sets)
    names = {r["name"] for r in again["results"]}
    assert names == {"frontier/paper", "frontier/T10xK100", "frontier/scan/independent", "frontier/mri-fast",
                     "frontier/mri-fast+width16+depth3", "frontier/scan/warm+width16"}
    assert {r["name"]: r for r in again["results"]}["frontier/mri-fast"]["chosen"] == "T10xK100"
