"""fastsd operators as deepinv physics, and fastsd solvers as a deepinv ``Reconstructor``.

::

    from fastsd.interop.deepinv import MRI, SDIReconstructor

    physics = MRI(mask=mask)                               # a deepinv.physics.MRI
    y = physics(x)                                         # deepinv layout (B, 2, H, W)
    x_hat = SDIReconstructor(T=40, K=50)(y, physics)       # self-diffusion via fastsd.solve

:class:`MRI`, :class:`MultiCoilMRI`, :class:`Inpainting`, :class:`BlurFFT` and
:class:`Downsampling` subclass the deepinv physics of the same name and are drop-in
replacements: same constructor arguments, layouts, parameters (``update``,
``update_parameters``, per-call keyword arguments) and results. Where fastsd has a fused operator
for the current configuration, ``A``, ``A_adjoint``, ``A_adjoint_A``, ``prox_l2`` and
``A_dagger`` run on it (``physics.fastsd_op``: fused Triton kernels on CUDA); everywhere else
(per-channel MRI masks or filters, non-circular padding, a parameter that requires grad,
float64 MRI data, ...) the deepinv parent class's own code runs. On CPU tensors a third path is
the default, ``'direct'``: deepinv's computation in plain torch without its per-call bookkeeping
(:mod:`fastsd.interop.deepinv.direct`; ``physics.cpu_path = 'fused'`` runs the fused ops there
too). ``physics.fastsd_path`` (``'fastsd'``, ``'deepinv'`` or ``'direct'``) and
``physics.fallback_reason`` tell which path the last call took, and the ``fastsd.interop.deepinv``
logger records each change of routed path at DEBUG level.

On the fused path ``A``, ``A_adjoint``, ``A_adjoint_A`` and ``prox_l2`` are autograd Functions in
``setup_context`` style, so ``torch.func`` transforms (deepinv computes vector-Jacobian products
with ``torch.func.vjp``) work, and each backward is one application of the adjoint Function
(again differentiable). ``A_dagger`` is differentiable through the fastsd ops it is built from.

Layouts (deepinv's): real images (B, C, H, W); complex MRI images (B, 2, *S) (re, im), with
S = (H, W), or (D, H, W) for ``three_d`` MRI; single-coil k-space (B, 2, *S); multi-coil k-space
(B, 2, N, *S). fastsd's MRI kernels compute in float32 / complex64 (float16 / bfloat16 images
are cast and results cast back).

deepinv's buffers (``mask``, ``coil_maps``, ``filter``, ...) are the only state: the fused
operator is derived from them and rebuilt whenever one is replaced, changed in place or moved,
so ``state_dict``, ``clone()`` and ``.to(device)`` behave as in deepinv.

Modules: :mod:`~fastsd.interop.deepinv.mri` and :mod:`~fastsd.interop.deepinv.image` (the drop-in
classes), :mod:`~fastsd.interop.deepinv.routing` (the mixin that routes each call),
:mod:`~fastsd.interop.deepinv.autograd` (the fused path's autograd Functions),
:mod:`~fastsd.interop.deepinv.direct` (the direct path), :mod:`~fastsd.interop.deepinv.bridge`
(deepinv physics as fastsd operators), :mod:`~fastsd.interop.deepinv.stack` (stacked physics),
:mod:`~fastsd.interop.deepinv.reconstructor` (the Reconstructor) and
:mod:`~fastsd.interop.deepinv.substitute` (fastsd's classes in place of deepinv's, a pytest plugin).

Needs deepinv (``pip install 'fastsd[deepinv]'``); nothing else in fastsd imports this package.
"""
from __future__ import annotations

try:
    import deepinv as _dinv  # noqa: F401  (checked here, before a module of the package needs it)
    from deepinv.models import Reconstructor as _Reconstructor  # noqa: F401
except Exception as _e:  # ImportError, or a torchvision build that does not match torch
    raise ImportError(
        "fastsd.interop.deepinv needs a working deepinv installation (pip install 'fastsd[deepinv]'); "
        f"importing it failed with {type(_e).__name__}: {_e}"
    ) from _e

# the public names, and (as aliases, for the tests and the substitute plugin) the internals that
# were reachable here before the package was split
from fastsd.interop.deepinv.autograd import _Linear as _Linear
from fastsd.interop.deepinv.autograd import _Prox as _Prox
from fastsd.interop.deepinv.bridge import PhysicsOperator, to_fastsd
from fastsd.interop.deepinv.direct import DEEPINV_PINV_CUTOFF as DEEPINV_PINV_CUTOFF
from fastsd.interop.deepinv.direct import DirectPath as DirectPath
from fastsd.interop.deepinv.image import BlurFFT, Downsampling, Inpainting, deepinv_downsampling_filter
from fastsd.interop.deepinv.mri import MRI, MultiCoilMRI
from fastsd.interop.deepinv.reconstructor import SDIReconstructor
from fastsd.interop.deepinv.routing import _Fused as _Fused

__all__ = [
    "MRI",
    "MultiCoilMRI",
    "Inpainting",
    "BlurFFT",
    "Downsampling",
    "SDIReconstructor",
    "PhysicsOperator",
    "to_fastsd",
    "deepinv_downsampling_filter",
]
