"""Exact sparse recovery for ISTA-NAS: the LASSO by its homotopy path, certified by the KKT conditions.

Objective (the scikit-learn `Lasso` scaling used by DHA), per problem b:

    min_x  1 / (2 m) * || z_b - A_b x - c_b ||^2  +  alpha * || x ||_1

where m is the number of rows of A_b and c_b is a scalar intercept (only with `fit_intercept`,
the reference behaviour; our default fits none).

An iterative solver stopped at an iteration cap decides the answer here: the codes are O(0.1-1), the
problems are wide (7 x 40) and alpha is small, so 5,000 FISTA steps left errors of 0.1-1 in the
codes, and node freezing and op selection followed solver error. The homotopy (LARS-Lasso) path
instead follows the solution exactly from lambda = ||A^T z||_inf, where x = 0, down to the target:
the solution is piecewise linear in lambda, and each piece ends where a column joins the active set
or a coefficient crosses zero. At the target the coefficients come from the closed form on the
support, x_S = (A_S^T A_S)^-1 (A_S^T z - m alpha s_S), and the KKT conditions certify them:
A_S^T r / m = alpha s_S with sign(x_S) = s_S, |A_j^T r| / m <= alpha off the support. A solve that
cannot be certified (a degenerate problem) is returned with a warning, never silently.

Each problem is solved on its own in float64 NumPy on the host (a few dozen 7 x 7 solves), so a
batched solve gives exactly the single solves' answers.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch

KKT_TOLERANCE = 1e-9  # relative to m * alpha


class UncertifiedLassoWarning(RuntimeWarning):
    """A LASSO solution whose KKT conditions do not hold to KKT_TOLERANCE."""


def _solve_on(gram: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """gram^-1 rhs with one step of iterative refinement (least squares if gram is singular)."""
    try:
        x = np.linalg.solve(gram, rhs)
        return x + np.linalg.solve(gram, rhs - gram @ x)
    except np.linalg.LinAlgError:
        return np.linalg.lstsq(gram, rhs, rcond=None)[0]


def kkt_violation(gram: np.ndarray, corr: np.ndarray, x: np.ndarray, lam: float) -> float:
    """Largest KKT violation of x for min 1/2 ||z - Ax||^2 + lam ||x||_1, relative to lam
    (gram = A^T A, corr = A^T z); 0 for an exact optimum."""
    if lam <= 0:
        raise ValueError(f"lam must be positive, got {lam}")
    c = corr - gram @ x
    on = x != 0
    worst = np.abs(c[on] - lam * np.sign(x[on])).max(initial=0.0)
    worst = max(worst, np.maximum(np.abs(c[~on]) - lam, 0.0).max(initial=0.0))
    return float(worst / lam)


def lasso_path(gram: np.ndarray, corr: np.ndarray, lam: float, max_events: int | None = None) -> np.ndarray:
    """The exact solution at `lam` of min 1/2 ||z - Ax||^2 + lam ||x||_1 (gram = A^T A, corr = A^T z)."""
    n = corr.shape[0]
    x, c = np.zeros(n), corr.copy()
    active, signs = np.zeros(n, dtype=bool), np.zeros(n)
    live = np.diag(gram) > 0  # zero (padding) columns never join
    level = np.abs(c[live]).max(initial=0.0)
    if level <= lam:
        return x
    j = int(np.argmax(np.where(live, np.abs(c), -1.0)))
    active[j], signs[j] = True, np.sign(c[j])
    tiny = 1e-14 * level
    for _ in range(max_events or 10 * n + 20):
        on = np.flatnonzero(active)
        d = _solve_on(gram[np.ix_(on, on)], signs[on])
        a = gram[:, on] @ d
        steps = [(level - lam, "target", -1)]
        with np.errstate(divide="ignore", invalid="ignore"):
            join_up = np.where(live & ~active & (1 - a > 1e-12), (level - c) / (1 - a), np.inf)
            join_down = np.where(live & ~active & (1 + a > 1e-12), (level + c) / (1 + a), np.inf)
            leave = np.where(-x[on] * d > 0, -x[on] / d, np.inf)
        for values, kind, index in ((join_up, "join", None), (join_down, "join", None), (leave, "leave", on)):
            k = int(np.argmin(values))
            if values[k] > tiny and np.isfinite(values[k]):
                steps.append((float(values[k]), kind, int(k if index is None else index[k])))
        gamma, kind, j = min(steps, key=lambda s: s[0])
        x[on] += gamma * d
        c -= gamma * a
        level -= gamma
        if kind == "target":
            break
        if kind == "join":
            active[j], signs[j] = True, np.sign(c[j])
        else:
            active[j], x[j] = False, 0.0
    on = np.flatnonzero(active)
    x = np.zeros(n)
    x[on] = _solve_on(gram[np.ix_(on, on)], corr[on] - lam * signs[on])  # exact on the support
    return x


def lasso(A: torch.Tensor, z: torch.Tensor, alpha: float = 1e-5, *, fit_intercept: bool = False) -> torch.Tensor:
    """Solve a batch of LASSO problems exactly in float64.

    A: [B, m, n] (or [m, n]); z: [B, m] (or [m]) -> x: [B, n] (or [n]), float64 on A's device. Zero
    columns of A stay zero in x, so problems of different widths can be padded to one batch.
    """
    squeeze = A.dim() == 2
    device = A.device
    A_np = (A.unsqueeze(0) if squeeze else A).detach().cpu().to(torch.float64).numpy()
    z_np = (z.unsqueeze(0) if squeeze else z).detach().cpu().to(torch.float64).numpy()
    m = A_np.shape[1]
    if fit_intercept:
        # The intercept is the mean of the residual: centring rows of A and z removes it exactly.
        A_np = A_np - A_np.mean(axis=1, keepdims=True)
        z_np = z_np - z_np.mean(axis=1, keepdims=True)
    lam = m * alpha
    out = np.zeros((A_np.shape[0], A_np.shape[2]))
    for b in range(A_np.shape[0]):
        gram, corr = A_np[b].T @ A_np[b], A_np[b].T @ z_np[b]
        out[b] = lasso_path(gram, corr, lam)
        violation = kkt_violation(gram, corr, out[b], lam)
        if violation > KKT_TOLERANCE:
            warnings.warn(f"LASSO solution not certified: KKT conditions off by {violation:.2e} (relative); "
                          "the sparse code may be inexact", UncertifiedLassoWarning, stacklevel=2)
    result = torch.from_numpy(out).to(device)
    return result.squeeze(0) if squeeze else result


def lasso_objective(A: torch.Tensor, z: torch.Tensor, x: torch.Tensor, alpha: float) -> torch.Tensor:
    """The objective of the module docstring without intercept, for one problem."""
    m = A.shape[0]
    return (z - A @ x).pow(2).sum() / (2 * m) + alpha * x.abs().sum()
