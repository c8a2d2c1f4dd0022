"""The direct path of the deepinv drop-in classes: deepinv's own computation in plain torch, for
calls on CPU tensors (the default there: ``physics.cpu_path = 'direct'``).

On a CPU the fused kernels bring nothing (there is no launch or memory traffic to save), and the
per-call work around them (routing, checks, the autograd Functions, the custom-op boundary) costs
more than the arithmetic of a small problem. The direct path computes what deepinv computes from
deepinv's own buffers, without deepinv's per-call bookkeeping (``update_parameters`` with nothing
to update) and with what depends only on the buffers derived once and cached (keyed on the
buffers' identity and in-place version, so a replaced or updated buffer is seen at the next call):

- Inpainting: ``m ⊙ x``, ``m² ⊙ x``, the closed-form prox and pseudo-inverse, as deepinv.
- BlurFFT: one real FFT pair per call with deepinv's transfer function H = |H| e^{iφ} (its
  ``mask`` and ``angle`` buffers); the prox in one FFT pair more (deepinv: two), the
  pseudo-inverse with deepinv's cut-off.
- MRI (single coil): deepinv's centred orthonormal FFT with the shifts folded into the data as
  a (−1)^(n+m) checkerboard (exact for even sizes: a sign flip rounds nothing; odd sizes take
  the fused path); the prox and pseudo-inverse in k-space, one FFT each way.
- MultiCoilMRI: ``A`` and ``A^H`` as for MRI with the checkerboard folded into the coil maps;
  ``prox_l2`` and ``A_dagger`` are deepinv's own iterative solvers running on them.
- Downsampling: fastsd's FFT implementation (faster than deepinv's spatial convolution on CPU),
  called directly.

Everything is plain differentiable torch (the in-place products act on fresh FFT outputs, which
no backward needs), so autograd and ``torch.func`` work; a parameter that
requires grad, per-call parameters and non-default options take the routed path of
:class:`fastsd.interop.deepinv.routing._Fused`. Each class here names the deepinv buffers it derives from
(``FROM``) and implements the ops it covers; ``prepare`` returns the derived values or None.
"""
from __future__ import annotations

import torch

# deepinv's DecomposablePhysics.A_dagger keeps the singular values above this absolute cut-off
DEEPINV_PINV_CUTOFF = 1e-5


def _scalar_gamma(gamma):
    """gamma as a float, or None where it is not a number or a one-element tensor."""
    if isinstance(gamma, (int, float)) and not isinstance(gamma, bool):
        return float(gamma)
    if isinstance(gamma, torch.Tensor) and gamma.numel() == 1 and not gamma.requires_grad:
        return float(gamma.reshape(()))
    return None


def _checkerboard(shape, dtype, device) -> tuple[torch.Tensor, float]:
    """(c, s): c = (−1)^(Σ n_i) on ``shape`` and s = (−1)^(Σ N_i / 2), for even sizes, so that
    deepinv's centred FFT is fftshift(fft(ifftshift(v))) = s c ⊙ fft(c ⊙ v) (and the same for
    the inverse)."""
    c = torch.ones((), dtype=dtype, device=device)
    for i, n in enumerate(shape):
        sign = 1 - 2 * (torch.arange(n, device=device) % 2).to(dtype)
        c = c[..., None] * sign.reshape((1,) * i + (n,))
    return c, (-1.0) ** (sum(shape) // 2)


def _buffer(p, name: str):
    """``p.<name>`` read from the module's buffers directly (nn.Module's attribute fallback costs
    about 1 µs, an eighth of deepinv's whole Inpainting.A at 128²)."""
    b = p._buffers.get(name)
    return b if b is not None else getattr(p, name)


def _fits(m: torch.Tensor, shape) -> bool:
    """Whether ``m`` broadcasts over the even image size ``shape`` (the checkerboard's)."""
    return not any(n % 2 for n in shape) and all(k in (1, n) for k, n in zip(reversed(m.shape), reversed(shape)))


def _complex(t: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Real (…, 2, …) with (re, im) on ``dim`` -> complex, one pass."""
    return torch.complex(t.select(dim, 0), t.select(dim, 1))


def _real(z: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Complex -> deepinv's real layout, (re, im) on ``dim`` (a view, as deepinv's)."""
    return torch.view_as_real(z).movedim(-1, dim)


class Inpainting:
    FROM = ("mask",)
    PLAIN = ("A", "A_adjoint")  # ops that read deepinv's buffers as they are (no derived values)

    @staticmethod
    def prepare(p, shape, kind):
        m = p.mask
        if not isinstance(m, torch.Tensor):
            return None
        return dict(m=m, m2=m.conj() * m, inv=torch.where(m > DEEPINV_PINV_CUTOFF, m.reciprocal(), 0.0))

    @staticmethod
    def A(p, d, x):
        return _buffer(p, "mask") * x

    @staticmethod
    def A_adjoint(p, d, y):
        return _buffer(p, "mask").conj() * y

    @staticmethod
    def A_adjoint_A(p, d, x):
        return d["m2"] * x

    @staticmethod
    def prox_l2(p, d, z, y, gamma):
        return (d["m"] * y + z / gamma) / (d["m2"] + 1 / gamma)

    @staticmethod
    def A_dagger(p, d, y):
        return y * d["inv"]


class BlurFFT:
    FROM = ("mask", "angle")
    PLAIN = ()

    @staticmethod
    def prepare(p, shape, kind):
        if p.mask is None or p.angle is None:
            return None
        mag = p.mask[..., 0]  # deepinv's |H| (1, C, H, W // 2 + 1), stored twice as (re, im)
        keep = mag > DEEPINV_PINV_CUTOFF
        return dict(h=mag * p.angle, h2=mag * mag, size=tuple(p.img_size[-2:]),
                    inv=torch.where(keep, p.angle.conj() / torch.where(keep, mag, 1.0), 0.0))

    @staticmethod
    def _filter(d, x, h):
        return torch.fft.irfft2(torch.fft.rfft2(x).mul_(h), s=d["size"])

    @staticmethod
    def A(p, d, x):
        return BlurFFT._filter(d, x, d["h"])

    @staticmethod
    def A_adjoint(p, d, y):
        return BlurFFT._filter(d, y, d["h"].conj())

    @staticmethod
    def A_adjoint_A(p, d, x):
        return BlurFFT._filter(d, x, d["h2"])

    @staticmethod
    def prox_l2(p, d, z, y, gamma):
        num = torch.fft.rfft2(z) / gamma + d["h"].conj() * torch.fft.rfft2(y)
        return torch.fft.irfft2(num / (d["h2"] + 1 / gamma), s=d["size"])

    @staticmethod
    def A_dagger(p, d, y):  # deepinv's rule (pinv_threshold=None; fastsd's relative rule is routed)
        return BlurFFT._filter(d, y, d["inv"])


class MRI:
    """Single-coil MRI, deepinv's mask (B|1, 2, *S) in its real (re, im) layout."""

    FROM = ("mask",)
    PLAIN = ()

    @staticmethod
    def prepare(p, shape, kind):
        m = p.mask
        nd = len(shape)
        if not isinstance(m, torch.Tensor) or m.is_complex() or m.ndim > nd + 2 or not _fits(m, shape):
            return None  # deepinv's mask broadcasts from the right (a 3D one is stored as (1, D, H, W))
        c, s = _checkerboard(shape, m.dtype, m.device)
        dims = tuple(range(-nd, 0))
        return dict(dims=dims, c=c, mc=m * c, mcs=m * (c * s), m2=m * m, cs=c * s,
                    inv_c=torch.where(m > DEEPINV_PINV_CUTOFF, m.reciprocal(), 0.0) * c)

    @staticmethod
    def A(p, d, x):
        k = torch.fft.fftn(_complex(x * d["c"]), dim=d["dims"], norm="ortho")
        return _real(k).mul_(d["mcs"])

    @staticmethod
    def A_adjoint(p, d, y):
        return _real(torch.fft.ifftn(_complex(y * d["mc"]), dim=d["dims"], norm="ortho").mul_(d["cs"]))

    @staticmethod
    def A_adjoint_A(p, d, x):
        k = torch.fft.fftn(_complex(x * d["c"]), dim=d["dims"], norm="ortho")
        return _real(torch.fft.ifftn(_complex(_real(k) * d["m2"]), dim=d["dims"], norm="ortho").mul_(d["c"]))

    @staticmethod
    def prox_l2(p, d, z, y, gamma):
        # deepinv: F^H ((m ⊙ y + F z / γ) / (m² + 1/γ)) with F its centred FFT
        kz = _real(torch.fft.fftn(_complex(z * d["c"]), dim=d["dims"], norm="ortho"))
        w = (y * d["mcs"] + kz / gamma) / (d["m2"] + 1 / gamma)
        return _real(torch.fft.ifftn(_complex(w), dim=d["dims"], norm="ortho").mul_(d["c"]))

    @staticmethod
    def A_dagger(p, d, y):
        return _real(torch.fft.ifftn(_complex(y * d["inv_c"]), dim=d["dims"], norm="ortho").mul_(d["cs"]))


class MultiCoilMRI:
    """Multi-coil MRI: deepinv's mask (B|1, 2, *S), coil maps (B|1, N, *S) complex."""

    FROM = ("mask", "coil_maps")
    PLAIN = ()

    @staticmethod
    def prepare(p, shape, kind):
        m, s_maps = p.mask, p.coil_maps
        nd = len(shape)
        if not isinstance(m, torch.Tensor) or not isinstance(s_maps, torch.Tensor) or m.is_complex() \
                or m.ndim != nd + 2 or not s_maps.is_complex() or s_maps.ndim != nd + 2:
            return None
        if not (_fits(m, shape) and tuple(s_maps.shape[-nd:]) == shape):
            return None
        c, s = _checkerboard(shape, m.dtype, m.device)
        return dict(dims=tuple(range(-nd, 0)), maps_c=s_maps * c, mask_cs=(m * (c * s))[:, :, None],
                    mask_c=(m * c)[:, :, None], conj_maps_cs=s_maps.conj() * (c * s))

    @staticmethod
    def A(p, d, x):
        k = torch.fft.fftn(d["maps_c"] * _complex(x)[:, None], dim=d["dims"], norm="ortho")
        return _real(k).mul_(d["mask_cs"])

    @staticmethod
    def A_adjoint(p, d, y):
        im = torch.fft.ifftn(_complex(y * d["mask_c"]), dim=d["dims"], norm="ortho")
        return _real((d["conj_maps_cs"] * im).sum(1))

    @staticmethod
    def A_adjoint_A(p, d, x):
        return MultiCoilMRI.A_adjoint(p, d, MultiCoilMRI.A(p, d, x))

    # deepinv's own iterative solvers (the same iterations and tolerance), on the direct A and A^H
    @staticmethod
    def prox_l2(p, d, z, y, gamma):
        return super(DirectPath, p).prox_l2(z, y, gamma)

    @staticmethod
    def A_dagger(p, d, y):
        return super(DirectPath, p).A_dagger(y)


class Downsampling:
    """fastsd's FFT Downsample (the fused operator's own plain-torch methods) on the image size
    of the call; covered where the fused path is (circular padding, one filter)."""

    FROM = ("filter",)

    PLAIN = ()
    FROM = None  # not cached here: the fused operator is (by deepinv's buffers and the image size)

    @staticmethod
    def prepare(p, t, kind):
        """The fused operator for a call on ``t`` (an image ``'x'`` or measurement ``'y'``), or None
        (also where the filter requires grad: deepinv's differentiable path)."""
        filt = p.filter
        if isinstance(filt, torch.Tensor) and filt.requires_grad:
            return None
        op, reason = p._fused_op(p._size(t, kind))
        if reason is not None or t.ndim != 4:
            return None
        want = op.img_size if kind == "x" else op.low_size
        return op if tuple(t.shape[-2:]) == tuple(want) and t.device == op.transfer.device else None

    @staticmethod
    def A(p, op, x):
        return op._down(x)

    @staticmethod
    def A_adjoint(p, op, y):
        return op._up(y)

    @staticmethod
    def A_adjoint_A(p, op, x):
        return op._up(op._down(x))

    @staticmethod
    def prox_l2(p, op, z, y, gamma):
        b = z + gamma * op._up(y)
        w = op._low_filter(op._down(b), 1 / (1 + gamma * op.alias.to(z.dtype)))
        return b - gamma * op._up(w)



# -- dispatch -------------------------------------------------------------------------------------

_DTYPES = (torch.float32, torch.float64)
_KIND = {"A": "x", "A_adjoint": "y", "A_adjoint_A": "x", "prox_l2": "x", "A_dagger": "y"}


class DirectPath:
    """Mixin of the drop-in classes: :meth:`_direct` finds the direct implementation of a call."""

    cpu_path = "direct"  # on CPU tensors: 'direct' (this module) or 'fused' (fastsd's fused ops, as on CUDA)
    _DIRECT = None  # the class of this module implementing it (None: no direct path)

    def _direct(self, name: str, t, kwargs: dict):
        """(function, derived values) for op ``name`` on ``t`` (a CPU float32/float64 tensor, no
        per-call parameters), or None: the routed path. Kept lean: it runs on every call."""
        impl = self._DIRECT
        if impl is None or self.cpu_path != "direct" or not isinstance(t, torch.Tensor) or not t.is_cpu \
                or t.dtype not in _DTYPES or (kwargs and any(v is not None for v in kwargs.values())):
            return None
        fn = getattr(impl, name, None)
        if fn is None:
            return None
        if name in impl.PLAIN:
            d = True
        elif impl.FROM is None:
            d = impl.prepare(self, t, _KIND[name])
        else:
            d = self._direct_values(impl, t)
        if d is None:
            return None
        self.__dict__["fastsd_path"] = "direct"
        self.__dict__["fallback_reason"] = None
        return fn, d

    def _direct_values(self, impl, t):
        """``impl.prepare`` for the current buffers and image size, cached by the buffers' identity
        and in-place version; None where the direct path does not cover them (a buffer that
        requires grad, a configuration ``prepare`` declines)."""
        bufs = tuple(_buffer(self, n) if n in self._buffers else getattr(self, n, None) for n in impl.FROM)
        shape = tuple(t.shape[-3:] if getattr(self, "three_d", False) else t.shape[-2:])
        c = self.__dict__.get("_direct_cache")
        if c is not None and c[2] == shape and all(
                a is b and v == (b._version if isinstance(b, torch.Tensor) else None)
                for a, b, v in zip(c[0], bufs, c[1])):
            return c[3]
        grads = any(isinstance(b, torch.Tensor) and b.requires_grad for b in bufs)
        d = None if grads else impl.prepare(self, shape, None)
        versions = tuple(b._version if isinstance(b, torch.Tensor) else None for b in bufs)
        self.__dict__["_direct_cache"] = (bufs, versions, shape, d)
        return d
