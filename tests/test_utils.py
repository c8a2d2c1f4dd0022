"""Helpers shared by every layer (:mod:`fastsd._utils`)."""
import math

import torch

from fastsd._utils import dc_weight, per_problem


def test_per_problem_broadcasts_over_the_batch():
    like = torch.zeros(3, 2, 4, 5)
    v = torch.tensor([1.0, 2.0, 3.0])
    assert per_problem(v, like).shape == (3, 1, 1, 1)
    assert torch.equal((per_problem(v, like) * torch.ones_like(like))[:, 1, 2, 3], v)
    assert per_problem(torch.tensor(2.0), like).shape == (1, 1, 1, 1)
    assert per_problem(0.5, like) == 0.5


def test_dc_weight():
    """w = lam / (1 + lam) solves argmin_k ‖k − k0‖² + lam ‖k − y‖² as k = (1 − w) k0 + w y."""
    for lam in (0.0, 0.25, 3.0, 1e6):
        k0, y = 2.0, -1.0
        assert math.isclose((1 - dc_weight(lam)) * k0 + dc_weight(lam) * y, (k0 + lam * y) / (1 + lam))
    assert dc_weight(math.inf) == 1.0 and dc_weight(0) == 0.0
