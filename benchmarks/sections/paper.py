"""Section 'paper': the SDI paper's first experiments (arXiv 2510.21417) beside standard baselines,
one row per experiment and method: the paper's number, fastsd's (mean and min..max over seeds),
and the size, budget and device it ran at.

* 1-D compressed sensing exactly as the paper (n = 128, m = 35, preset 'cs1d': T = 40, K = 200,
  lr 1e-5; the official simulation's signal and schedule), SDI vs DIP, error ‖x̂ − x‖₂; plus a figure
  of the spectrum of x̂ at every noise level (the low-to-high frequency progression).
* MRI 4x and 6x (equispaced lines + ACS) on the bundled head slice with simulated birdcage coils:
  SDI, DIP, CG-SENSE, L1-wavelet, zero-filled; the w/o-ε ablation and noise resampling at 4x.
* Natural images (scikit-image's astronaut, coffee, chelsea): inpainting, Gaussian deblurring and
  4x super-resolution, SDI vs DIP vs L1-wavelet and the pseudo-inverse.

Sizes and budgets come from :func:`benchmarks.config.config` (``paper_*``): the paper's on CUDA,
scaled on CPU; every row states its own. Runs only when named in ``--only``.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import torch

import fastsd
from benchmarks.cases import sync
from fastsd.data import mri_slice, natural_image
from fastsd.metrics import magnitude, psnr, ssim
from fastsd.ops.matrix import MatrixOp, compressed_sensing_matrix
from fastsd.tasks import image_operator, mri_mask, simulate_image, simulate_mri

REPO = Path(__file__).resolve().parents[2]
# The official simulation's first experiment (run_simulation.sh): 7 sines (magnitude, cycles per length).
CS1D_SIGNAL = ((1.0, 1), (0.5, 15), (0.3, 20), (1.0, 6), (0.8, 3), (0.6, 4), (0.7, 5))
CS1D_BETAS = (1e-6, 4e-3)  # the official simulation's DDPM schedule (beta_start, beta_end)
IMAGES = ("astronaut", "coffee", "chelsea")  # natural images, one per seed
# Paper numbers (PSNR dB; 1-D: error). None: the paper reports none for that row.
PAPER = {
    "cs1d/sdi": 0.5326, "cs1d/dip": 2.4329,
    "mri4x/sdi": 39.21, "mri4x/dip": 38.35, "mri6x/sdi": 36.84, "mri6x/dip": 34.92,
    "mri4x/sdi-no-eps": 39.09,
    "sr/sdi": 25.82, "sr/dip": 24.55, "inpaint/sdi": 30.78, "inpaint/dip": 29.41,
}
LAM_REL = {"mri": 1e-4, "image": 1e-3}  # l1-wavelet: λ / max|details of W A^H y|, set on other images

METHOD = ("One row per experiment and method, measured over seeds (mean, min..max): 1-D CS error ‖x̂ − x‖₂ "
          "(lower is better), otherwise PSNR (data range: max of the truth; MRI on magnitudes) and SSIM (7x7 "
          "uniform window; colour: mean over channels). Seed s: the solver seed, and for MRI the equispaced "
          "mask's offset, for natural images the image (astronaut, coffee, chelsea) and the inpainting mask; 1-D "
          "CS keeps the sensing matrix of seed 0 and runs the solver seeds as one batched solve (its wall time is on the first seed). DIP runs as many Adam steps as SDI "
          "(T x K). l1-wavelet: 200 monotone-FISTA iterations, db4, lam_rel 1e-4 (MRI) / 1e-3 (images), chosen on "
          "camera/moon/coins, never on these truths. Measurements noise-free. wall_s per seed on the device named; "
          "a CPU run on a shared machine measures load as much as code.")
COLUMNS = [("experiment", "experiment"), ("paper", "paper"), ("fastsd mean (min..max)", "fastsd"),
           ("SSIM mean", "ssim"), ("size, budget and device", "setup")]


def _fmt(vals: list[float]) -> str:
    return f"{sum(vals) / len(vals):.4g} ({min(vals):.4g}..{max(vals):.4g})"


def _row(jobs: list, key: str, experiment: str, setup: str, seeds: list[int], run_seed) -> None:
    """Queue one table row: ``run_seed(seed) -> dict(value=..., ssim=...)`` for every seed."""
    jobs.append((key, experiment, setup, seeds, run_seed))


def _cost(key: str) -> int:
    """Run order: the classical methods first (seconds), then SDI, DIP and the SDI variants."""
    method = key.split("/")[1]
    return {"sdi": 1, "dip": 2}.get(method, 3 if method.startswith("sdi") else 0)


def _measure(b, key: str, experiment: str, setup: str, seeds: list[int], run_seed) -> None:
    device = "CPU" if b.device.type == "cpu" else (torch.cuda.get_device_name(b.device))

    def body():
        runs, times = [], []
        for s in seeds:
            sync(b.device)
            t0 = time.perf_counter()
            r = run_seed(s)
            sync(b.device)
            times.append(time.perf_counter() - t0)
            runs.append(r)
        vals = [r["value"] for r in runs]
        out = dict(experiment=experiment, paper="—" if PAPER.get(key) is None else f"{PAPER[key]:.4g}",
                   fastsd=_fmt(vals), values=vals, seeds=seeds, setup=f"{setup}; {device}",
                   value_mean=sum(vals) / len(vals), wall_s=times)
        if all("ssim" in r for r in runs):
            ss = [r["ssim"] for r in runs]
            out.update(ssim=f"{sum(ss) / len(ss):.4f}", ssim_values=ss)
        return times, out

    b.item("paper", f"paper/{key}", dict(key=key, seeds=seeds), body)
    b.free()


# -- 1-D compressed sensing ------------------------------------------------------------------------


def cs1d_signal(n: int = 128) -> torch.Tensor:
    i = torch.arange(n, dtype=torch.float64)
    return sum(a * torch.sin(2 * math.pi * f * i / n) for a, f in CS1D_SIGNAL).float()


def _cs1d(b, jobs: list) -> None:
    cfg, dev = b.cfg, b.device
    seeds = list(range(cfg["paper_cs1d_seeds"]))
    x = cs1d_signal().to(dev)
    op = MatrixOp(compressed_sensing_matrix(35, 128, seed=0)).to(dev)
    y = op(x.expand(len(seeds), -1).contiguous())
    problem = f"n=128, m=35, {len(seeds)} solver seeds batched"
    sdi_net = "ConvNet1d width 32 (small)" if cfg["paper_cs1d_small"] else "ConvNet1d width 64"
    dip_iters, dip_w = cfg["paper_cs1d_dip_iters"], cfg["paper_dip_width"]
    spectra: list[torch.Tensor] = []

    def keep_spectrum(_, state):
        spectra.append(torch.fft.rfft(state["x"][0].double().cpu()).abs())

    def sdi():  # every seed at once: problem s of the batch runs with seed s
        x_hat = fastsd.solve(y, op, "sdi", preset="cs1d", small=cfg["paper_cs1d_small"], beta_start=CS1D_BETAS[0],
                             beta_end=CS1D_BETAS[1], seed=seeds[0], callback=keep_spectrum).x
        _figure(spectra, torch.fft.rfft(x.double().cpu()).abs())
        return x_hat

    def dip():
        return fastsd.solve(y, op, "dip", iterations=dip_iters, width=dip_w, seed=seeds[0]).x

    for name, solve, budget in (
            ("sdi", sdi, f"{sdi_net}, T=40, K=200, lr 1e-5, betas {CS1D_BETAS}"),
            ("dip", dip, f"SkipNet width {dip_w}, {dip_iters} steps")):
        errors = []

        def from_batch(s, solve=solve, errors=errors):  # the first seed runs the batch (and carries its time)
            if not errors:
                errors.extend(torch.linalg.vector_norm(solve().double() - x.double(), dim=1).tolist())
            return dict(value=errors[s])

        _row(jobs, f"cs1d/{name}", f"1-D CS error, {name.upper()}", f"{problem}; {budget}", seeds, from_batch)


def _figure(spectra: list[torch.Tensor], truth: torch.Tensor) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = torch.stack(spectra).numpy()
    fig, (a0, a1) = plt.subplots(1, 2, figsize=(10, 3.6), gridspec_kw=dict(width_ratios=[3, 2]))
    im = a0.imshow(s[:, :33], aspect="auto", origin="lower", cmap="magma", extent=(-0.5, 32.5, 0.5, len(s) + 0.5))
    for f in sorted({f for _, f in CS1D_SIGNAL}):
        a0.axvline(f, color="c", lw=0.5, ls=":")
    a0.set(xlabel="frequency (cycles per length); dotted: the signal's", ylabel="noise level (1 = largest σ)",
           title="|FFT x̂| after each noise level (seed 0)")
    fig.colorbar(im, ax=a0)
    for lvl in (0, len(s) // 4, len(s) // 2, len(s) - 1):
        a1.plot(s[lvl, :33], label=f"level {lvl + 1}")
    a1.plot(truth.numpy()[:33], "k--", label="truth")
    a1.set(xlabel="frequency", title="spectra at four levels")
    a1.legend(fontsize=7)
    fig.tight_layout()
    out = REPO / "docs" / "paper-cs1d-progression.png"
    out.parent.mkdir(exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


# -- MRI ----------------------------------------------------------------------------------------


def _mri(b, jobs: list) -> None:
    cfg, dev = b.cfg, b.device
    n, coils, (T, K) = cfg["paper_mri_size"], cfg["paper_mri_coils"], cfg["paper_mri_TK"]
    seeds = list(range(cfg["paper_mri_seeds"]))
    acs = max(2, round(20 * n / 320))  # the paper's 20 ACS lines at 320, scaled
    truth = mri_slice(n, phase="smooth").to(dev)
    ref = magnitude(truth)[0].cpu()
    net = "U-Net small (width 8, 4 levels)" if cfg["paper_small"] else "paper U-Net"
    dip_w = cfg["paper_dip_width"]

    def score(x):
        mag = magnitude(x.detach().float())[0].cpu()
        return dict(value=psnr(mag, ref), ssim=ssim(mag, ref))

    for acc in (4, 6):
        problems = {}

        def problem(s, acc=acc, problems=problems):
            if s not in problems:
                mask = mri_mask((n, n), "equispaced", acc, acs=acs, seed=s)
                problems[s] = simulate_mri(truth, mask.to(dev), coils=coils)
            return problems[s]

        setup = f"{n}² bundled head slice, {coils} birdcage coils, {acs} ACS lines"
        rows = [("sdi", "SDI", dict(preset="mri", small=cfg["paper_small"], T=T, K=K), f"{net}, T×K={T}×{K}")]
        if acc == 4:
            rows += [("sdi-no-eps", "SDI w/o ε", dict(preset="mri", small=cfg["paper_small"], T=T, K=K, no_noise=True),
                      f"{net}, T×K={T}×{K}"),
                     ("sdi-resample", "SDI, ε resampled every step",
                      dict(preset="mri", small=cfg["paper_small"], T=T, K=K, resample_noise=True), f"{net}, T×K={T}×{K}")]
        rows += [("dip", "DIP", dict(iterations=T * K, width=dip_w), f"SkipNet width {dip_w}, {T * K} steps"),
                 ("cg-sense", "CG-SENSE", dict(iterations=50), "50 CG iterations"),
                 ("l1-wavelet", "L1-wavelet", dict(lam_rel=LAM_REL["mri"]), f"db4, λ={LAM_REL['mri']:g}·λmax, 200 it."),
                 ("zero-filled", "zero-filled", {}, "A^H y")]
        for key, label, opts, budget in rows:
            method = key if not key.startswith("sdi") else "sdi"

            def run_seed(s, method=method, opts=opts, problem=problem):
                y, op = problem(s)
                return score(fastsd.solve(y, op, method, seed=s, **opts).x)

            _row(jobs, f"mri{acc}x/{key}", f"MRI {acc}x, {label}", f"{setup}; {budget}", seeds, run_seed)


# -- natural images ---------------------------------------------------------------------------


def _images(b, jobs: list) -> None:
    cfg, dev = b.cfg, b.device
    n, (T, K) = cfg["paper_img_size"], cfg["paper_img_TK"]
    seeds = list(range(cfg["paper_img_seeds"]))
    net = "U-Net small (width 8, 4 levels)" if cfg["paper_small"] else "paper U-Net"
    dip_w = cfg["paper_dip_width"]
    tasks = (("inpaint", "inpainting (50% pixels)"), ("deblur", "Gaussian deblurring (σ=2)"), ("sr", "4x super-resolution"))
    for task, title in tasks:
        def problem(s, task=task):
            x = natural_image(IMAGES[s % len(IMAGES)], size=n).to(dev)
            op = image_operator(task, (n, n), seed=s).to(dev)
            return x, op, simulate_image(op, x)

        def score(x, truth):
            x = x.detach().float().clamp(0, 1)[0].cpu()
            truth = truth[0].cpu()
            return dict(value=psnr(x, truth, data_range=1.0), ssim=ssim(x, truth, data_range=1.0))

        setup = f"{n}² RGB ({', '.join(IMAGES[s % len(IMAGES)] for s in seeds)})"
        rows = [("sdi", "SDI", dict(preset="image", small=cfg["paper_small"], T=T, K=K), f"{net}, T×K={T}×{K}"),
                ("dip", "DIP", dict(iterations=T * K, width=dip_w, sigmoid=True), f"SkipNet width {dip_w}, {T * K} steps"),
                ("l1-wavelet", "L1-wavelet", dict(lam_rel=LAM_REL["image"]), f"db4, λ={LAM_REL['image']:g}·λmax, 200 it."),
                ("pinv", "A^+ y", None, "pseudo-inverse")]
        for key, label, opts, budget in rows:
            def run_seed(s, key=key, opts=opts, problem=problem):
                x, op, y = problem(s)
                out = op.pinv(y) if opts is None else fastsd.solve(y, op, key, seed=s, **opts).x
                return score(out, x)

            _row(jobs, f"{task}/{key}", f"{title}, {label}", f"{setup}; {budget}", seeds, run_seed)


PARTS = {"cs1d": _cs1d, "mri": _mri, "images": _images}


def run(b) -> None:
    """The rows of the parts named in ``paper_parts`` (default all: cs1d, mri, images) but those in
    ``paper_skip``, cheapest kind first (a run cut short keeps the most rows); the records are then
    put back in table order."""
    jobs: list = []
    for name in b.cfg["paper_parts"]:
        if name not in PARTS:
            raise ValueError(f"paper_parts: unknown part {name!r}; choose from {', '.join(PARTS)}")
        PARTS[name](b, jobs)
    jobs = [j for j in jobs if j[0] not in b.cfg["paper_skip"]]
    order = {f"paper/{j[0]}": i for i, j in enumerate(jobs)}
    for job in sorted(jobs, key=lambda j: _cost(j[0])):
        b.log(f"paper: {job[0]}")
        _measure(b, *job)
    mine = sorted((r for r in b.results if r["name"] in order), key=lambda r: order[r["name"]])
    b.results[:] = [r for r in b.results if r["name"] not in order] + mine
