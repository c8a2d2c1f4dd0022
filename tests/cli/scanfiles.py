"""Small scanner files for the tests: multi-coil k-space of the bundled real slice written as fastMRI
.h5 (h5py) and ISMRMRD .h5 (the ismrmrd package), intact or damaged on purpose."""
from __future__ import annotations

import h5py
import numpy as np
import torch

from fastsd.data import mri_slice
from fastsd.ops.coils import birdcage_maps
from fastsd.reference.mri import fft2c


def scan_kspace(S=3, C=4, H=32, W=24, seed=0) -> torch.Tensor:
    """Fully sampled multi-coil k-space (S, C, H, W) of real slices with birdcage maps; slices differ."""
    x = mri_slice((H, W), phase="smooth")
    img = torch.complex(x[0, 0], x[0, 1])
    maps = birdcage_maps(C, (H, W))
    g = torch.Generator().manual_seed(seed)
    return torch.stack([fft2c(maps * img * (1 + 0.1 * s) * torch.exp(1j * torch.rand((), generator=g)))
                        for s in range(S)]).to(torch.complex64)


def line_mask(H, W, step, acs) -> torch.Tensor:
    """(H, W) mask: every ``step``-th column from 1 plus ``acs`` columns centred on W // 2."""
    cols = torch.zeros(W)
    cols[1::step] = 1
    cols[W // 2 - acs // 2:W // 2 - acs // 2 + acs] = 1
    return cols.expand(H, W).contiguous()


def write_fastmri(path, k, mask=None, header=None, rss=True):
    """A fastMRI .h5 file: ``kspace`` (S, C, H, W), an rss reference, optional ``mask`` and header."""
    with h5py.File(path, "w") as f:
        f["kspace"] = k.numpy()
        if rss:
            f["reconstruction_rss"] = k.abs().numpy().sum(1).astype(np.float32)
        if mask is not None:
            f["mask"] = mask
        if header is not None:
            f["ismrmrd_header"] = header


def mrd_header(S, C, X, Y, trajectory="cartesian", Z=1, channels=None):
    from ismrmrd import xsd

    space = xsd.encodingSpaceType(matrixSize=xsd.matrixSizeType(x=X, y=Y, z=Z),
                                  fieldOfView_mm=xsd.fieldOfViewMm(x=220.0, y=180.0, z=5.0))
    limits = xsd.encodingLimitsType(kspace_encoding_step_1=xsd.limitType(minimum=0, maximum=Y - 1, center=Y // 2),
                                    slice=xsd.limitType(minimum=0, maximum=S - 1, center=0))
    enc = xsd.encodingType(encodedSpace=space, reconSpace=space, encodingLimits=limits,
                           trajectory=xsd.trajectoryType(trajectory))
    header = xsd.ismrmrdHeader(
        experimentalConditions=xsd.experimentalConditionsType(H1resonanceFrequency_Hz=63500000), encoding=[enc],
        acquisitionSystemInformation=xsd.acquisitionSystemInformationType(receiverChannels=channels or C))
    return xsd.ToXML(header)


def write_mrd(path, k, lines, trajectory="cartesian", stop_after=None, coils_of=None, noise=True, channels=None,
              reverse_odd=False):
    """An ISMRMRD file of k-space (S, C, X, Y) with the phase-encoding ``lines`` sampled, one
    acquisition per line (slice-major), a noise scan first; ``stop_after`` acquisitions only (a
    truncated scan); ``coils_of(i)`` overrides the coil count of acquisition i."""
    import ismrmrd

    S, C, X, Y = k.shape
    ds = ismrmrd.Dataset(str(path), "dataset", create_if_needed=True)
    ds.write_xml_header(mrd_header(S, C, X, Y, trajectory, channels=channels))
    if noise:
        acq = ismrmrd.Acquisition.from_array(np.ones((C, X), np.complex64))
        acq.set_flag(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)
        ds.append_acquisition(acq)
    n = 0
    for s in range(S):
        for y in np.flatnonzero(lines):
            if stop_after is not None and n >= stop_after:
                break
            c = coils_of(n) if coils_of else C
            d = k[s, :c, :, y].numpy()
            rev = reverse_odd and y % 2
            acq = ismrmrd.Acquisition.from_array(np.ascontiguousarray(d[:, ::-1] if rev else d))
            acq.idx.kspace_encode_step_1 = int(y)
            acq.idx.slice = s
            acq.center_sample = X // 2
            if rev:
                acq.set_flag(ismrmrd.ACQ_IS_REVERSE)
            ds.append_acquisition(acq)
            n += 1
    ds.close()
