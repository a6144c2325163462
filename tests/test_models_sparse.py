"""The exact LASSO solver: optimality certified by the KKT conditions, batched equals single."""
import numpy as np
import pytest
import torch

import models.sparse
from models.genotypes import PRIMITIVES_ISTA
from models.sparse import KKT_TOLERANCE, UncertifiedLassoWarning, kkt_violation, lasso, lasso_objective


def _problem(seed=0, m=20, n=50, support=(7, 31), values=(1.5, -2.0)):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(m, n, generator=g, dtype=torch.float64) / m ** 0.5
    x = torch.zeros(n, dtype=torch.float64)
    x[list(support)] = torch.tensor(values, dtype=torch.float64)
    return A, A @ x, x


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


# --- the production regime: the configs' m = 7, node widths K * (i + 2), z from 1e-3 to 2 --------

M = 7
WIDTHS = [len(PRIMITIVES_ISTA) * (i + 2) for i in range(4)]


def _measurements(kind, n, rng):
    return rng.standard_normal((M, n)) / M ** 0.5 if kind == "gaussian" else rng.random((M, n))


@pytest.mark.parametrize("kind", ["gaussian", "uniform"])
@pytest.mark.parametrize("scale", [1e-3, 1e-2, 0.1, 1.0, 2.0])
def test_kkt_conditions_hold_in_the_production_regime(kind, scale):
    rng = np.random.default_rng(int(scale * 1000) + (kind == "uniform"))
    for n in WIDTHS:
        for _ in range(5):
            A = _measurements(kind, n, rng)
            z = scale * rng.standard_normal(M)
            for alpha, intercept in ((1e-5, False), (1e-5, True), (1e-3, False)):
                x = lasso(torch.from_numpy(A), torch.from_numpy(z), alpha, fit_intercept=intercept).numpy()
                Ac = A - A.mean(axis=0, keepdims=True) if intercept else A
                zc = z - z.mean() if intercept else z
                assert kkt_violation(Ac.T @ Ac, Ac.T @ zc, x, M * alpha) <= KKT_TOLERANCE


@pytest.mark.parametrize("kind", ["gaussian", "uniform"])
def test_batched_and_single_solves_agree_in_the_production_regime(kind):
    rng = np.random.default_rng(11)
    for scale in (1e-3, 0.1, 2.0):
        As = [_measurements(kind, n, rng) for n in WIDTHS]
        zs = [scale * rng.standard_normal(M) for _ in WIDTHS]
        batch = torch.zeros(len(WIDTHS), M, max(WIDTHS), dtype=torch.float64)
        for b, A in enumerate(As):
            batch[b, :, :A.shape[1]] = torch.from_numpy(A)
        batched = lasso(batch, torch.from_numpy(np.stack(zs)), 1e-5)
        for b, (A, z) in enumerate(zip(As, zs)):
            single = lasso(torch.from_numpy(A), torch.from_numpy(z), 1e-5)
            assert torch.allclose(batched[b, :A.shape[1]], single, rtol=0, atol=1e-8 * max(1.0, float(single.abs().max())))
            assert torch.count_nonzero(batched[b, A.shape[1]:]) == 0


def test_the_certificate_can_fail():
    rng = np.random.default_rng(3)
    A = _measurements("gaussian", 40, rng)
    z = rng.standard_normal(M)
    gram, corr = A.T @ A, A.T @ z
    x = lasso(torch.from_numpy(A), torch.from_numpy(z), 1e-5).numpy()
    assert kkt_violation(gram, corr, x, M * 1e-5) <= KKT_TOLERANCE
    off = x.copy()
    off[np.flatnonzero(x)[0]] *= 1 + 1e-6  # a relative error of 1e-6 in one coefficient
    assert kkt_violation(gram, corr, off, M * 1e-5) > KKT_TOLERANCE


def test_an_uncertified_solve_warns(monkeypatch):
    A, z, _ = _problem(seed=12, m=7, n=40)
    monkeypatch.setattr(models.sparse, "lasso_path", lambda gram, corr, lam: np.zeros(corr.shape[0]))
    with pytest.warns(UncertifiedLassoWarning, match="not certified"):
        lasso(A, z, 1e-5)
