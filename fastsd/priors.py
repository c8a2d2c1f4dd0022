"""Denoisers ``D(x, sigma)`` for the diffusion-style solvers, and closed-form Gaussian posteriors.

* :class:`GaussianPriorDenoiser` — the exact MMSE denoiser ``E[x0 | x0 + sigma n]`` of a Gaussian
  prior ``N(mu, C)`` (diagonal or full ``C``). With it, and a linear operator, the posterior of
  ``x0`` given ``y = A x0 + noise`` is Gaussian and known in closed form
  (:func:`gaussian_posterior`, :func:`operator_posterior`), so solver outputs can be checked exactly.
* :class:`TinyDenoiser` and :func:`train_denoiser` — a small convolutional denoiser (EDM
  preconditioning) and a short training loop on scikit-image's bundled images, for demos and tests
  where no pretrained network is at hand; :func:`save_denoiser` / :func:`load_denoiser` keep one in
  a checkpoint file (``fastsd train-denoiser`` writes one).

All denoisers take ``x`` in the solvers' network layout (real ``(B, C, *spatial)``; any shape with
``B`` leading works for the Gaussian prior) and ``sigma`` as a float, a 0-d tensor or a (B,) tensor.
"""
from __future__ import annotations

import torch
from torch import nn

from fastsd._utils import accumulate_dtype
from fastsd.solvers.edm import EDMPrecond, sigma_tensor
from fastsd.solvers.layout import from_net, to_net

__all__ = [
    "GaussianPriorDenoiser",
    "gaussian_posterior",
    "operator_matrix",
    "operator_posterior",
    "TinyDenoiser",
    "train_denoiser",
    "save_denoiser",
    "load_denoiser",
]


def _sigma_column(sigma, batch: int, dtype, device) -> torch.Tensor:
    """sigma as a (B, 1) tensor."""
    s = sigma_tensor(sigma, dtype, device).reshape(-1, 1)
    if s.shape[0] not in (1, batch):
        raise ValueError(f"sigma must be a scalar or have one entry per problem ({batch}), got {s.shape[0]}")
    return s.expand(batch, 1)


class GaussianPriorDenoiser(nn.Module):
    """MMSE denoiser of the prior ``x0 ~ N(mean, cov)``: for ``x = x0 + sigma n``,

    ``D(x, sigma) = mean + C (C + sigma² I)^{-1} (x − mean)``.

    ``mean`` has ``n`` elements (any shape); ``cov`` is a scalar, ``(n,)`` variances or an
    ``(n, n)`` symmetric positive-definite matrix. Inputs ``(B, ...)`` with ``n`` elements per problem.
    """

    def __init__(self, mean: torch.Tensor, cov):
        super().__init__()
        mean = torch.as_tensor(mean, dtype=torch.float64).reshape(-1)
        n = mean.numel()
        cov = torch.as_tensor(cov, dtype=torch.float64)
        if cov.ndim == 0:
            cov = cov.expand(n).clone()
        if cov.shape == (n,):
            if not bool((cov > 0).all()):
                raise ValueError("cov (variances) must be positive")
            self.full = False
            self.register_buffer("var", cov)
        elif cov.shape == (n, n):
            if not torch.allclose(cov, cov.T, rtol=1e-10, atol=1e-12 * float(cov.abs().max())):
                raise ValueError("cov must be symmetric")
            lam, U = torch.linalg.eigh(cov)
            if not bool((lam > 0).all()):
                raise ValueError("cov must be positive definite")
            self.full = True
            self.register_buffer("lam", lam)
            self.register_buffer("U", U)
        else:
            raise ValueError(f"cov must be a scalar, ({n},) or ({n}, {n}); got shape {tuple(cov.shape)}")
        self.register_buffer("mean", mean)
        self.n = n

    def covariance(self) -> torch.Tensor:
        """The prior covariance as a dense (n, n) float64 matrix."""
        if self.full:
            return (self.U * self.lam) @ self.U.T
        return torch.diag(self.var)

    def forward(self, x: torch.Tensor, sigma) -> torch.Tensor:
        B = x.shape[0]
        if x[0].numel() != self.n:
            raise ValueError(f"x has {x[0].numel()} elements per problem; the prior has {self.n}")
        dt = accumulate_dtype(x)
        s2 = _sigma_column(sigma, B, dt, x.device) ** 2
        mu = self.mean.to(x.device, dt)
        r = x.reshape(B, -1).to(dt) - mu
        if self.full:
            lam, U = self.lam.to(x.device, dt), self.U.to(x.device, dt)
            out = mu + ((r @ U) * (lam / (lam + s2))) @ U.T
        else:
            var = self.var.to(x.device, dt)
            out = mu + r * (var / (var + s2))
        return out.reshape(x.shape).to(x.dtype)

    @torch.no_grad()
    def sample(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``batch`` draws from the prior, float64 (batch, n)."""
        eps = torch.randn(batch, self.n, generator=generator, dtype=torch.float64).to(self.mean.device)
        if self.full:
            return self.mean + (eps * self.lam.sqrt()) @ self.U.T
        return self.mean + eps * self.var.sqrt()


def gaussian_posterior(A: torch.Tensor, y: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor, noise_std: float):
    """Posterior of ``x0 ~ N(mean, cov)`` given ``y = A x0 + noise_std * n`` (real ``A`` of shape (m, n)).

    ``y`` is (B, m); ``cov`` (n, n). Returns the posterior means (B, n) and the covariance (n, n):
    ``K = C Aᵀ (A C Aᵀ + s² I)⁻¹``, mean ``mu + K (y − A mu)``, covariance ``C − K A C``. Float64.
    """
    A, y, mean, cov = (torch.as_tensor(t, dtype=torch.float64) for t in (A, y, mean, cov))
    S = A @ cov @ A.T + noise_std**2 * torch.eye(A.shape[0], dtype=torch.float64, device=A.device)
    K = torch.linalg.solve(S, A @ cov).T  # C Aᵀ S⁻¹ (S symmetric)
    post_mean = mean + (y.reshape(y.shape[0], -1) - mean @ A.T) @ K.T
    post_cov = cov - K @ A @ cov
    return post_mean, 0.5 * (post_cov + post_cov.T)


@torch.no_grad()
def operator_matrix(op: nn.Module, x_like: torch.Tensor) -> torch.Tensor:
    """Dense real matrix of ``op`` in network coordinates, float64 of shape (m, n).

    Column ``j`` is ``A`` applied to the ``j``-th unit vector of the network layout of ``x_like[:1]``;
    complex measurements contribute their real and imaginary parts (``view_as_real`` order).
    Meant for small problems (``n`` forward applications in one batch).
    """
    shape, dtype = x_like.shape[1:], x_like.dtype
    u_like = to_net(x_like[:1])
    n = u_like[0].numel()
    real = u_like.dtype
    basis = torch.eye(n, dtype=real, device=x_like.device).reshape(n, *u_like.shape[1:])
    cols = op.forward(from_net(basis, shape, dtype))
    cols = torch.view_as_real(cols) if cols.is_complex() else cols
    return cols.reshape(n, -1).T.to(torch.float64)


@torch.no_grad()
def operator_posterior(op: nn.Module, y: torch.Tensor, prior: GaussianPriorDenoiser, noise_std: float):
    """Posterior mean (image layout and dtype of ``op.adjoint(y)``) and covariance (n, n) in network
    coordinates, for the prior ``prior`` and ``y = op(x0) + noise_std * n`` (``noise_std`` per real
    component of ``y``)."""
    x_like = op.adjoint(y)
    A = operator_matrix(op, x_like)
    yv = torch.view_as_real(y) if y.is_complex() else y
    mean, cov = gaussian_posterior(A, yv.reshape(y.shape[0], -1), prior.mean, prior.covariance(), noise_std)
    u_shape = to_net(x_like).shape
    return from_net(mean.reshape(u_shape).to(to_net(x_like).dtype), x_like.shape[1:], x_like.dtype), cov


# ---------------------------------------------------------------------------------------------
# a small trainable denoiser


class _TinyNet(nn.Module):
    """Plain conv net ``F(x_in, c_noise)``; the noise level enters as an extra constant channel."""

    def __init__(self, channels: int, width: int, depth: int):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(channels + 1, width, 3, padding=1), nn.SiLU()]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.SiLU()]
        layers.append(nn.Conv2d(width, channels, 3, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        level = c_noise.to(x.dtype).reshape(-1, 1, 1, 1).expand(x.shape[0], 1, *x.shape[2:])
        return self.body(torch.cat([x, level], 1))


class TinyDenoiser(EDMPrecond):
    """A small conv denoiser ``D(x, sigma)`` for ``(B, channels, H, W)`` images in [-1, 1]
    (EDM preconditioning, ``sigma_data = 0.5``). Train it with :func:`train_denoiser`."""

    def __init__(self, channels: int = 1, width: int = 32, depth: int = 5, sigma_data: float = 0.5):
        if channels < 1 or width < 1 or depth < 2:
            raise ValueError("TinyDenoiser needs channels >= 1, width >= 1 and depth >= 2")
        super().__init__(_TinyNet(channels, width, depth), sigma_data)
        self.channels = channels


def _default_images(channels: int) -> list[torch.Tensor]:
    from fastsd.data import natural_image

    images = [natural_image(name, gray=channels == 1)[0] for name in ("camera", "astronaut", "coffee", "chelsea")]
    return [im for im in images if im.shape[0] == channels]  # camera is grey: a colour prior trains on the others


def train_denoiser(
    images=None,
    *,
    channels: int = 1,
    width: int = 32,
    depth: int = 5,
    steps: int = 2000,
    batch_size: int = 16,
    patch: int = 48,
    lr: float = 1e-3,
    p_mean: float = -1.2,
    p_std: float = 1.2,
    seed: int = 0,
    device: torch.device | str = "cpu",
    model: TinyDenoiser | None = None,
):
    """Train a :class:`TinyDenoiser` with the EDM loss on random patches.

    ``images``: tensors ``(C, H, W)`` or ``(1, C, H, W)`` with values in [0, 1] (default: four of
    scikit-image's bundled images, gray when ``channels == 1``); they are mapped to [-1, 1].
    Noise levels are log-normal (``ln σ ~ N(p_mean, p_std²)``), the loss weight is
    ``(σ² + σ_data²) / (σ σ_data)²``. Returns ``(model, losses)`` with one loss per step.
    """
    if steps < 1 or batch_size < 1:
        raise ValueError("steps and batch_size must be positive")
    device = torch.device(device)
    imgs = _default_images(channels) if images is None else list(images)
    if not imgs:
        raise ValueError("images is empty")
    data = []
    for i, im in enumerate(imgs):
        im = torch.as_tensor(im, dtype=torch.float32)
        im = im[0] if im.ndim == 4 else im
        if im.ndim != 3 or im.shape[0] != channels:
            raise ValueError(f"image {i} must be ({channels}, H, W) or (1, {channels}, H, W), got {tuple(im.shape)}")
        if min(im.shape[1:]) < patch:
            raise ValueError(f"image {i} ({tuple(im.shape)}) is smaller than the patch size {patch}")
        data.append((2 * im - 1).to(device))
    gen = torch.Generator().manual_seed(seed)
    if model is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = TinyDenoiser(channels, width, depth)
    model = model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(int(steps)):
        crops = []
        for _ in range(batch_size):
            im = data[int(torch.randint(len(data), (1,), generator=gen))]
            i = int(torch.randint(im.shape[1] - patch + 1, (1,), generator=gen))
            j = int(torch.randint(im.shape[2] - patch + 1, (1,), generator=gen))
            c = im[:, i : i + patch, j : j + patch]
            if bool(torch.rand(1, generator=gen) < 0.5):
                c = c.flip(-1)
            crops.append(c)
        x0 = torch.stack(crops)
        sigma = (torch.randn(batch_size, generator=gen) * p_std + p_mean).exp().to(device)
        noise = torch.randn(x0.shape, generator=gen).to(device)
        sd = model.sigma_data
        weight = (sigma**2 + sd**2) / (sigma * sd) ** 2
        den = model(x0 + sigma.view(-1, 1, 1, 1) * noise, sigma)
        loss = (weight.view(-1, 1, 1, 1) * (den - x0) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return model.eval(), losses


_CHECKPOINT_FORMAT = "fastsd.TinyDenoiser"
_CHECKPOINT_VERSION = 1


def _tiny_config(model: TinyDenoiser) -> dict:
    """The constructor arguments of ``model``, read off its layers."""
    convs = [m for m in model.net.body if isinstance(m, nn.Conv2d)]
    return {"channels": int(model.channels), "width": int(convs[0].out_channels), "depth": len(convs),
            "sigma_data": float(model.sigma_data)}


def save_denoiser(model: TinyDenoiser, path, info: dict | None = None) -> None:
    """Write ``model`` to ``path`` (``torch.save``): its constructor config, its weights (CPU) and
    ``info`` (e.g. training settings; plain numbers/strings only). Only plain dicts, numbers,
    strings and tensors are stored, so :func:`load_denoiser` reads it with ``weights_only=True``."""
    if not isinstance(model, TinyDenoiser):
        raise ValueError(f"save_denoiser saves a TinyDenoiser, got {type(model).__name__}")
    for k, v in (info or {}).items():
        if not isinstance(k, str) or not (v is None or isinstance(v, (bool, int, float, str))):
            raise ValueError(f"info must map names to numbers or strings; {k!r} is {type(v).__name__}")
    ckpt = {
        "format": _CHECKPOINT_FORMAT,
        "version": _CHECKPOINT_VERSION,
        "config": _tiny_config(model),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "info": dict(info or {}),
    }
    torch.save(ckpt, path)


def load_denoiser(path, device: torch.device | str | None = None) -> TinyDenoiser:
    """The :class:`TinyDenoiser` saved by :func:`save_denoiser` at ``path`` (eval mode, on ``device``,
    default CPU). Raises ValueError naming the file when it is missing or not such a checkpoint.
    The training ``info`` is attached as ``model.info``."""
    from pathlib import Path

    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: no such file")
    if not path.is_file():
        raise ValueError(f"{path}: not a file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle/zip errors of every kind: a corrupt or foreign file
        raise ValueError(f"{path}: not a readable denoiser checkpoint ({type(e).__name__}: corrupt, or not "
                         f"written by fastsd train-denoiser / save_denoiser)") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != _CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a fastsd denoiser checkpoint (write one with fastsd train-denoiser)")
    if ckpt.get("version") != _CHECKPOINT_VERSION:
        raise ValueError(f"{path}: unsupported checkpoint version {ckpt.get('version')!r} (expected {_CHECKPOINT_VERSION})")
    cfg, state = ckpt.get("config"), ckpt.get("state_dict")
    keys = ("channels", "width", "depth", "sigma_data")
    if not isinstance(cfg, dict) or set(cfg) != set(keys) or not isinstance(state, dict):
        raise ValueError(f"{path}: damaged checkpoint (config must hold {', '.join(keys)}, plus a state_dict)")
    try:
        model = TinyDenoiser(int(cfg["channels"]), int(cfg["width"]), int(cfg["depth"]), float(cfg["sigma_data"]))
        model.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, ValueError) as e:
        reason = str(e).strip().splitlines()[0][:200]
        raise ValueError(f"{path}: damaged checkpoint ({reason})") from None
    model.info = dict(ckpt.get("info") or {})
    return model.to(device if device is not None else "cpu").eval()
