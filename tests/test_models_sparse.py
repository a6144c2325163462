"""The batched FISTA LASSO solver."""
import numpy as np
import pytest
import torch

from models.sparse import lasso, lasso_objective, soft_threshold


def _problem(seed=0, m=20, n=50, support=(7, 31), values=(1.5, -2.0)):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(m, n, generator=g, dtype=torch.float64) / m ** 0.5
    x = torch.zeros(n, dtype=torch.float64)
    x[list(support)] = torch.tensor(values, dtype=torch.float64)
    return A, A @ x, x


def test_soft_threshold():
    x = np.array([-3.0, -0.5, 0.0, 0.2, 2.0])
    assert np.array_equal(soft_threshold(x, 1.0), np.array([-2.0, 0.0, 0.0, 0.0, 1.0]))


def test_recovers_a_two_sparse_vector():
    A, z, x_true = _problem()
    x = lasso(A, z, alpha=1e-4)
    assert x.shape == (50,) and x.dtype == torch.float64
    assert torch.allclose(x, x_true, atol=1e-2)
    top2 = x.abs().topk(2).indices.sort().values.tolist()
    assert top2 == [7, 31]
    off = torch.ones(50, dtype=torch.bool)
    off[[7, 31]] = False
    assert x[off].abs().max() < 1e-3


def test_solution_objective_is_minimal():
    A, z, x_true = _problem(seed=1)
    alpha = 1e-3
    x = lasso(A, z, alpha=alpha)
    f = lasso_objective(A, z, x, alpha)
    assert f <= lasso_objective(A, z, x_true, alpha) + 1e-12
    g = torch.Generator().manual_seed(5)
    for _ in range(20):
        d = 1e-3 * torch.randn(50, generator=g, dtype=torch.float64)
        assert f <= lasso_objective(A, z, x + d, alpha) + 1e-12
    for k in range(50):  # coordinate perturbations, both signs
        for s in (1e-4, -1e-4):
            d = torch.zeros(50, dtype=torch.float64)
            d[k] = s
            assert f <= lasso_objective(A, z, x + d, alpha) + 1e-12


def test_larger_alpha_gives_sparser_solution():
    A, z, _ = _problem(seed=2)
    small = lasso(A, z, alpha=1e-4)
    big = lasso(A, z, alpha=10.0)
    assert torch.count_nonzero(big) == 0   # alpha above ||A^T z||_inf / m: x = 0
    assert torch.count_nonzero(small) >= 2


def test_batched_padded_equals_individual():
    A1, z1, _ = _problem(seed=3, m=7, n=14, support=(2, 9), values=(1.0, 0.7))
    A2, z2, _ = _problem(seed=4, m=7, n=28, support=(5, 20), values=(-0.4, 1.2))
    A3, z3, _ = _problem(seed=5, m=7, n=21, support=(0, 11), values=(0.3, 0.9))
    widths = [14, 28, 21]
    A = torch.zeros(3, 7, 28, dtype=torch.float64)
    for b, Ab in enumerate((A1, A2, A3)):
        A[b, :, : widths[b]] = Ab
    z = torch.stack([z1, z2, z3])
    batched = lasso(A, z, alpha=1e-5)
    assert batched.shape == (3, 28)
    for b, (Ab, zb) in enumerate(((A1, z1), (A2, z2), (A3, z3))):
        single = lasso(Ab, zb, alpha=1e-5)
        assert torch.allclose(batched[b, : widths[b]], single, atol=1e-6)
        # padding columns are zero columns: they stay exactly zero
        assert torch.count_nonzero(batched[b, widths[b]:]) == 0


def test_zero_columns_stay_zero():
    A, z, _ = _problem(seed=6)
    A[:, [3, 7, 40]] = 0.0   # column 7 was on the true support
    x = lasso(A, z, alpha=1e-5)
    assert x[[3, 7, 40]].eq(0).all()
    assert torch.count_nonzero(x) > 0


def test_fit_intercept_is_invariant_to_a_constant_shift():
    A, z, _ = _problem(seed=7, m=20, n=30, support=(4, 17))
    x0 = lasso(A, z, alpha=1e-4, fit_intercept=True)
    x1 = lasso(A, z + 3.25, alpha=1e-4, fit_intercept=True)
    assert torch.allclose(x0, x1, atol=1e-8)
    # without an intercept the shift does change the solution
    y0 = lasso(A, z, alpha=1e-4)
    y1 = lasso(A, z + 3.25, alpha=1e-4)
    assert not torch.allclose(y0, y1, atol=1e-3)


def test_fit_intercept_recovers_the_code_under_an_offset():
    A, z, x_true = _problem(seed=10, m=30, n=40, support=(3, 22), values=(1.0, -1.5))
    x = lasso(A, z + 2.0, alpha=1e-5, fit_intercept=True)
    assert torch.allclose(x, x_true, atol=1e-2)
    # the intercept is the mean residual
    assert float((z + 2.0 - A @ x).mean()) == pytest.approx(2.0, abs=1e-2)


def test_float32_inputs_are_solved_in_float64():
    A, z, _ = _problem(seed=8)
    x = lasso(A.float(), z.float(), alpha=1e-4)
    assert x.dtype == torch.float64
    assert torch.allclose(x, lasso(A, z, alpha=1e-4), atol=1e-5)


@pytest.mark.parametrize("alpha", [1e-5, 1e-2])
def test_objective_not_above_zero_vector(alpha):
    A, z, _ = _problem(seed=9)
    x = lasso(A, z, alpha=alpha)
    assert lasso_objective(A, z, x, alpha) <= lasso_objective(A, z, torch.zeros_like(x), alpha)
