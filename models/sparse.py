"""Sparse recovery for ISTA-NAS in torch: batched FISTA for the LASSO problem.

Objective (the scikit-learn `Lasso` scaling used by DHA), per problem b:

    min_x  1 / (2 m) * || z_b - A_b x - c_b ||^2  +  alpha * || x ||_1

where m is the number of rows of A_b and c_b is a scalar intercept (only with `fit_intercept`,
the reference behaviour; our default fits none).
"""
from __future__ import annotations

import torch


def soft_threshold(x: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
    """The proximal operator of t * ||x||_1."""
    return torch.sign(x) * torch.clamp(x.abs() - t, min=0.0)


def lasso(A: torch.Tensor, z: torch.Tensor, alpha: float = 1e-5, *, fit_intercept: bool = False,
          max_iter: int = 5000, tol: float = 1e-10) -> torch.Tensor:
    """Solve a batch of LASSO problems with FISTA in float64.

    A: [B, m, n] (or [m, n]); z: [B, m] (or [m]) -> x: [B, n] (or [n]). Zero columns of A stay zero
    in x, so problems of different widths can be padded to one batch.
    """
    squeeze = A.dim() == 2
    A = (A.unsqueeze(0) if squeeze else A).to(torch.float64)
    z = (z.unsqueeze(0) if squeeze else z).to(torch.float64)
    m = A.shape[1]
    if fit_intercept:
        # The intercept is the mean of the residual: centring rows of A and z removes it exactly.
        A = A - A.mean(dim=1, keepdim=True)
        z = z - z.mean(dim=1, keepdim=True)
    # Lipschitz constant of the smooth part's gradient: ||A||_2^2 / m, per problem.
    lipschitz = torch.linalg.matrix_norm(A, ord=2).pow(2).div(m).clamp_min(1e-12)
    step = (1.0 / lipschitz).view(-1, 1)
    At = A.transpose(1, 2)
    x = torch.zeros(A.shape[0], A.shape[2], dtype=torch.float64, device=A.device)
    y, t = x.clone(), 1.0
    for it in range(max_iter):
        grad = (At @ ((A @ y.unsqueeze(-1)).squeeze(-1) - z).unsqueeze(-1)).squeeze(-1) / m
        x_next = soft_threshold(y - step * grad, step * alpha)
        t_next = (1.0 + (1.0 + 4.0 * t * t) ** 0.5) / 2.0
        y = x_next + ((t - 1.0) / t_next) * (x_next - x)
        # Relative tolerance: the codes are O(1e-3) early in a search.
        if it % 50 == 49 and (x_next - x).abs().max().item() <= tol * max(x_next.abs().max().item(), 1e-12):
            x = x_next
            break
        x, t = x_next, t_next
    return x.squeeze(0) if squeeze else x


def lasso_objective(A: torch.Tensor, z: torch.Tensor, x: torch.Tensor, alpha: float) -> torch.Tensor:
    """The objective of the module docstring without intercept, for one problem."""
    m = A.shape[0]
    return (z - A @ x).pow(2).sum() / (2 * m) + alpha * x.abs().sum()
