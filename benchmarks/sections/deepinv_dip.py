"""Section 'deepinv_dip': fastsd's DIP against deepinv's ``DeepImagePrior`` at equal wall time,
on inpainting, deblurring and single-coil MRI (deepinv physics, the same measurements for both),
the evidence for fastsd's DIP defaults. Needs deepinv (run from ``.venv-deepinv``).

Each method gets the same wall-time budget per problem and runs Adam steps until it is spent;
its PSNR is that of its output at the end of the budget. deepinv's DIP runs unchanged in its
documented example configuration (``ConvDecoder`` with 64 channels and a 2 x 2 input, Adam lr
1e-2); a forward hook on its network only reads the clock and the output (and ends the run when
the budget is spent: the output of the last forward is the one deepinv would return after that
many steps). fastsd's DIP runs through :class:`fastsd.interop.deepinv.SDIReconstructor` with
``method='dip'`` and each candidate size / learning rate; its callback reads the clock. Curves
of PSNR against steps and time are kept per run (checkpoints every ``deepinv_dip_every`` steps).
"""
from __future__ import annotations

import time

import numpy as np
import torch

from benchmarks.cases import seed_summary
from fastsd.data import mri_slice, resize
from fastsd.metrics import magnitude, psnr

TASKS = ("inpainting", "deblur", "mri")
DEEPINV = "deepinv-dip"  # deepinv's documented example: ConvDecoder(channels=64, in_size=[2, 2]), lr 1e-2
DEEPINV_CHANNELS, DEEPINV_IN_SIZE, DEEPINV_LR = 64, [2, 2], 1e-2

METHOD = ("Problems (size deepinv_dip_size, seeds 0..deepinv_dip_seeds-1; seed s draws the mask / noise and both "
          "solvers' initialisation): inpainting = deepinv Inpainting of 50 % of the pixels + Gaussian noise 0.05 on "
          "matplotlib's grace_hopper.jpg (gray); deblur = deepinv BlurFFT with a Gaussian filter of std 1 px + noise "
          "0.01 on the same image; mri = deepinv MRI, 4x equispaced columns with 8 % centre lines, on matplotlib's "
          "s1045 head slice (fastsd.data.mri_slice), complex Gaussian noise 0.01 on the sampled k-space. Each method "
          "runs Adam steps until deepinv_dip_budget_s of wall time (perf_counter from the call, setup included) is "
          "spent, single thread. deepinv-dip = deepinv.models.DeepImagePrior(ConvDecoder(img_size, in_size=[2, 2], "
          "channels=64), learning_rate=1e-2) as in deepinv's demo_dip example. fastsd-dip-w<width>-d<depth>-lr<lr> = "
          "SDIReconstructor(method='dip', width, depth, lr) (fastsd's SkipNet DIP). PSNR of the output (magnitude "
          "for MRI) against the truth, data range = the truth's maximum. psnr_curve: (step, seconds, PSNR) every "
          "deepinv_dip_every steps. Summary rows: mean/min/max over the seeds; psnr_gain_vs_deepinv = mean PSNR "
          "minus deepinv-dip's on the same problems. Wall times were measured on the machine named in the report "
          "(a shared CPU: both methods under the same load, interleaved per problem).")
COLUMNS = [("name", "name"), ("steps", "steps"), ("wall s", "wall_s"), ("PSNR dB", "psnr"),
           ("mean PSNR", "psnr_mean"), ("min PSNR", "psnr_min"), ("max PSNR", "psnr_max"),
           ("mean steps", "steps_mean"), ("gain vs deepinv dB", "psnr_gain_vs_deepinv")]


def _gray_image(size: int) -> torch.Tensor:
    """matplotlib's grace_hopper.jpg as a gray (1, 1, size, size) image in [0, 1]."""
    from PIL import Image

    from fastsd.data import _matplotlib_sample

    a = np.asarray(Image.open(_matplotlib_sample("grace_hopper.jpg")).convert("L"), dtype=np.float32) / 255.0
    side = min(a.shape)
    a = a[(a.shape[0] - side) // 2: (a.shape[0] + side) // 2, (a.shape[1] - side) // 2: (a.shape[1] + side) // 2]
    return resize(torch.from_numpy(a.copy())[None, None], size).clamp(0, 1)


def problem(task: str, size: int, seed: int):
    """(x, y, physics) of one task with deepinv's physics; seed s draws mask and noise."""
    import deepinv as dinv

    P = dinv.physics
    rng = torch.Generator().manual_seed(1000 + seed)
    if task == "mri":
        x = mri_slice(size)
        mask = torch.zeros(size, size)
        mask[:, seed % 4:: 4] = 1
        c = max(1, round(0.08 * size))
        mask[:, size // 2 - c // 2: size // 2 - c // 2 + c] = 1
        physics = P.MRI(mask=mask, img_size=(size, size))
        sigma = 0.01
    else:
        x = _gray_image(size)
        if task == "inpainting":
            physics = P.Inpainting(img_size=x.shape[1:], mask=0.5, rng=torch.Generator().manual_seed(seed))
            sigma = 0.05
        else:
            physics = P.BlurFFT(img_size=x.shape[1:], filter=P.functional.gaussian_blur(sigma=(1.0, 1.0)))
            sigma = 0.01
    physics.noise_model = P.GaussianNoise(sigma=sigma, rng=rng)
    with torch.no_grad():
        y = physics(x)
    return x, y, physics


def _score(x_hat: torch.Tensor, x: torch.Tensor, task: str) -> float:
    if task == "mri":
        return psnr(magnitude(x_hat.detach()), magnitude(x))
    return psnr(x_hat.detach(), x)


class _Stop(Exception):
    """The budget is spent (raised from the forward hook on deepinv's network)."""


def run_deepinv(y, physics, x, task: str, budget_s: float, seed: int, every: int) -> dict:
    import deepinv as dinv

    torch.manual_seed(seed)
    net = dinv.models.ConvDecoder(img_size=x.shape[1:], in_size=DEEPINV_IN_SIZE, channels=DEEPINV_CHANNELS)
    dip = dinv.models.DeepImagePrior(net, img_size=[DEEPINV_CHANNELS] + DEEPINV_IN_SIZE, iterations=10**9,
                                     learning_rate=DEEPINV_LR)
    state = dict(calls=0, out=None, curve=[])
    t0 = time.perf_counter()

    def hook(module, inputs, out):  # the output of step n's forward = the result after n - 1 steps
        state["out"], state["calls"] = out.detach(), state["calls"] + 1
        steps = state["calls"] - 1
        if steps % every == 0:
            state["curve"].append((steps, time.perf_counter() - t0, _score(out, x, task)))
        if time.perf_counter() - t0 >= budget_s:
            raise _Stop

    handle = net.register_forward_hook(hook)
    try:
        x_hat = dip(y, physics)
        steps = state["calls"] - 1
    except _Stop:
        x_hat, steps = state["out"], state["calls"] - 1
    finally:
        handle.remove()
    return dict(x=x_hat, steps=steps, wall_s=time.perf_counter() - t0, psnr_curve=state["curve"])


def run_fastsd(y, physics, x, task: str, budget_s: float, seed: int, every: int, width: int, depth: int,
               lr: float) -> dict:
    from fastsd.interop.deepinv import SDIReconstructor

    curve = []
    t0 = time.perf_counter()

    def callback(i, info):
        if i % every == 0:
            curve.append((i, time.perf_counter() - t0, _score(info["x"], x, task)))
        return time.perf_counter() - t0 >= budget_s

    rec = SDIReconstructor(method="dip", width=width, depth=depth, lr=lr, iterations=100_000, seed=seed)
    x_hat = rec(y, physics, callback=callback)
    return dict(x=x_hat, steps=rec.result_.info["iterations"], wall_s=time.perf_counter() - t0, psnr_curve=curve)


def candidate_name(width: int, depth: int, lr: float) -> str:
    return f"fastsd-dip-w{width}-d{depth}-lr{lr:g}"


def run(b) -> None:
    cfg = b.cfg
    size, budget, every = cfg["deepinv_dip_size"], cfg["deepinv_dip_budget_s"], cfg["deepinv_dip_every"]
    methods = [(DEEPINV, None)] + [(candidate_name(*c), c) for c in cfg["deepinv_dip_candidates"]]
    for task in cfg["deepinv_dip_tasks"]:
        runs = {name: [] for name, _ in methods}
        for seed in range(cfg["deepinv_dip_seeds"]):
            x, y, physics = problem(task, size, seed)
            for name, cand in methods:
                def body(cand=cand, x=x, y=y, physics=physics, seed=seed):
                    if cand is None:
                        r = run_deepinv(y, physics, x, task, budget, seed, every)
                    else:
                        r = run_fastsd(y, physics, x, task, budget, seed, every, *cand)
                    r["psnr"] = _score(r.pop("x"), x, task)
                    return [r["wall_s"]], r

                params = dict(task=task, size=size, seed=seed, method=name, budget_s=budget,
                              **({} if cand is None else dict(width=cand[0], depth=cand[1], lr=cand[2])))
                rec = b.item("deepinv_dip", f"deepinv_dip/{task}/{name}/seed{seed}", params, body)
                if rec:
                    runs[name].append(dict(rec, seed=seed))
        base = {r["seed"]: r["psnr"] for r in runs[DEEPINV]}
        for name, rs in runs.items():
            if not rs:
                continue
            summary = seed_summary(rs, ("psnr", "steps", "wall_s"))
            paired = [r["psnr"] - base[r["seed"]] for r in rs if r["seed"] in base]
            if name != DEEPINV and paired:
                summary["psnr_gain_vs_deepinv"] = float(np.mean(paired))
            b.add("deepinv_dip", f"deepinv_dip/{task}/{name}", dict(task=task, size=size, method=name, summary=True,
                                                                    budget_s=budget),
                  [r["wall_s"] for r in rs], **summary)


def targets(results: list[dict]) -> dict:
    """fastsd's DIP with its defaults at least as good as deepinv's at equal wall time, per task."""
    from benchmarks.cases import target_entry
    from fastsd.solvers.dip import DIP

    d = DIP()
    default = candidate_name(d.width, d.depth, d.lr)
    out = {}
    for r in results:
        if r["section"] == "deepinv_dip" and r["params"].get("summary") and r["params"]["method"] == default:
            out[f"deepinv_dip_psnr_gain[{r['params']['task']}]"] = target_entry(r.get("psnr_gain_vs_deepinv"), 0.0, ">=")
    return out
