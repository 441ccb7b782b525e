import math

import numpy as np
import pytest
import torch

from sbi_tumor.identifiability import (WEAK_CONTRACTION, contraction, derived, front_speed, infiltration_length,
                                       weakly_determined)
from sbi_tumor.config import PARAMETER_NAMES
from sbi_tumor.prior import make_prior


def test_identifiable_combinations():
    theta = np.array([[0.3, 0.08, 0.7, 0.25], [2.0, 0.5, 0.6, 0.2]])
    np.testing.assert_allclose(front_speed(theta), [2 * math.sqrt(0.024), 2.0])
    np.testing.assert_allclose(infiltration_length(theta), [math.sqrt(3.75), 2.0])
    assert set(derived(theta[0])) == {"front_speed", "infiltration_length"}


@pytest.mark.parametrize("log_uniform", [False, True])
def test_contraction_is_zero_for_the_prior_and_one_for_a_point(log_uniform):
    prior = make_prior("human", log_uniform=log_uniform)
    torch.manual_seed(0)
    assert np.abs(contraction(prior.sample((20_000,)), prior)).max() < 0.03
    narrow = torch.tensor([0.3, 0.08, 0.7, 0.25]) + 1e-4 * torch.randn(1000, 4)
    assert min(contraction(narrow, prior)) > 0.99


def test_weakly_determined_names_the_parameters_below_the_limit():
    assert weakly_determined(PARAMETER_NAMES, [0.95, 0.9, WEAK_CONTRACTION - 0.01, 0.1]) == ["u_T1", "u_T2"]
    assert weakly_determined(PARAMETER_NAMES, [0.9] * 4) == []


def test_contraction_falls_back_to_draws_without_moving_the_random_stream():
    class NoVariance(torch.distributions.Distribution):
        arg_constraints = {}

        def __init__(self):
            super().__init__(event_shape=(1,), validate_args=False)

        def sample(self, shape=torch.Size()):
            return torch.rand(*shape, 1) * 2  # uniform on [0, 2]: std 2 / sqrt(12)

    torch.manual_seed(3)
    expected_next = torch.rand(1)
    torch.manual_seed(3)
    c = contraction(torch.full((10, 1), 1.0) + torch.linspace(-0.1, 0.1, 10)[:, None], NoVariance())
    assert c[0] == pytest.approx(1 - 0.0636 / (2 / math.sqrt(12)), abs=0.01)
    assert torch.rand(1) == expected_next
