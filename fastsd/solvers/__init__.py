"""Reconstruction solvers, reachable by name through :func:`fastsd.api.solve` (``method=...``).
Importing a solver module registers it."""
from fastsd.solvers.base import Callback, SolveResult, available_solvers, get_solver, register_solver
from fastsd.solvers.classical import CGSense, L1Wavelet, ZeroFilled  # registers "cg-sense", "l1-wavelet", "zero-filled"
from fastsd.solvers.ddgm import DDGM  # registers "ddgm"
from fastsd.solvers.dip import DIP, ASeqDIP  # registers "dip", "aseqdip"
from fastsd.solvers.dmplug import DMPlug  # registers "dmplug"
from fastsd.solvers.dps import DPS  # registers "dps"
from fastsd.solvers.projdiff import ProjDiff  # registers "projdiff"
from fastsd.solvers.sdi import SelfDiffusion  # registers "sdi"
from fastsd.solvers.unfolding import DiffUnfolding  # registers "unfolding"

__all__ = ["SolveResult", "Callback", "register_solver", "get_solver", "available_solvers", "SelfDiffusion",
           "DIP", "ASeqDIP", "CGSense", "L1Wavelet", "ZeroFilled", "DDGM", "DPS", "ProjDiff", "DMPlug", "DiffUnfolding"]
