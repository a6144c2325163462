"""DAAS's sub-policy distribution: sampling, the REINFORCE estimator (sign, unbiasedness), replay."""
import itertools

import torch

from augment.daas_policy import SubPolicyDistribution
from augment.estimators import leave_one_out_advantage, score_function_loss
from augment.replay import from_export

OPS = ("shear_x", "rotate", "posterize")


def _policy(bins=2, seed=0):
    torch.manual_seed(seed)
    policy = SubPolicyDistribution(OPS, bins=bins)
    with torch.no_grad():  # a non-uniform start, so the gradient has structure
        policy.pair_logits.copy_(0.5 * torch.randn(3, 3, dtype=torch.float64))
        policy.bin_logits.copy_(0.5 * torch.randn(3, bins, dtype=torch.float64))
    return policy


def _exact_expected_reward(policy, table):
    """E[R] = sum over every (a, b, i, j) of P[a, b] Q[a, i] Q[b, j] R[a, b, i, j] (differentiable)."""
    p, q = policy.pair_probabilities(), policy.bin_probabilities()
    total = 0
    for a, b, i, j in itertools.product(range(3), range(3), range(q.shape[1]), range(q.shape[1])):
        total = total + p[a, b] * q[a, i] * q[b, j] * table[a, b, i, j]
    return total


def test_the_estimator_is_unbiased_on_a_toy_reward():
    policy = _policy()
    table = torch.randn(3, 3, 2, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    exact = torch.autograd.grad(_exact_expected_reward(policy, table), policy.policy_parameters())
    exact = torch.cat([g.reshape(-1) for g in exact])
    x = torch.rand(64, 3, 4, 4)
    estimates = []
    for _ in range(300):
        _, info = policy(x)
        reward = table[info["pairs"][:, 0], info["pairs"][:, 1], info["bins"][:, 0], info["bins"][:, 1]]
        grads = torch.autograd.grad(policy.policy_loss(reward, info), policy.policy_parameters())
        estimates.append(-torch.cat([g.reshape(-1) for g in grads]))  # minimising the loss ascends E[R]
    estimates = torch.stack(estimates)
    mean, standard_error = estimates.mean(0), estimates.std(0) / len(estimates) ** 0.5
    assert ((mean - exact).abs() <= 4 * standard_error + 1e-9).all(), (mean - exact) / standard_error
    assert exact.abs().max() > 10 * standard_error.max()  # the test can tell a biased estimate apart


def test_the_estimator_has_the_right_sign_and_finds_a_known_optimum():
    policy = _policy(bins=3)
    best = (0, 2, 1, 0)  # shear_x at bin 1 then posterize at bin 0
    start = _exact_expected_reward(policy, _indicator(best, 3)).item()
    opt = torch.optim.Adam(policy.policy_parameters(), lr=0.05)
    x = torch.rand(32, 3, 4, 4)
    for _ in range(300):
        _, info = policy(x)
        hit = ((info["pairs"] == torch.tensor(best[:2])).all(1) & (info["bins"] == torch.tensor(best[2:])).all(1))
        opt.zero_grad()
        policy.policy_loss(hit.double(), info).backward()
        opt.step()
    p, q = policy.pair_probabilities(), policy.bin_probabilities()
    assert p.argmax().item() == best[0] * 3 + best[1] and q[0].argmax().item() == 1 and q[2].argmax().item() == 0
    assert _exact_expected_reward(policy, _indicator(best, 3)).item() > max(0.5, 5 * start)


def _indicator(index, bins):
    table = torch.zeros(3, 3, bins, bins, dtype=torch.float64)
    table[index] = 1.0
    return table


def test_the_policy_learns_only_from_the_score_function_term():
    policy = _policy()
    x = torch.rand(16, 3, 4, 4)
    augmented, info = policy(x)
    assert not augmented.requires_grad  # no path from the images (hence the network's loss) to the policy
    reward = torch.randn(16, dtype=torch.float64)
    loss = policy.policy_loss(reward, info)
    d_pair, d_bin = torch.autograd.grad(loss, [policy.pair_logits, policy.bin_logits])
    # by hand: -(1/B) sum_n A_n d log p_n, with d log softmax = onehot - probabilities
    advantage = leave_one_out_advantage(reward)
    p, q = policy.pair_probabilities().detach(), policy.bin_probabilities().detach()
    want_pair, want_bin = torch.zeros_like(p), torch.zeros_like(q)
    for n, ((a, b), (i, j)) in enumerate(zip(info["pairs"].tolist(), info["bins"].tolist())):
        onehot = torch.zeros_like(p)
        onehot[a, b] = 1
        want_pair -= advantage[n] * (onehot - p) / 16
        for op, bin_ in ((a, i), (b, j)):
            row = -q[op].clone()
            row[bin_] += 1
            want_bin[op] -= advantage[n] * row / 16
    assert torch.allclose(d_pair, want_pair, atol=1e-12) and torch.allclose(d_bin, want_bin, atol=1e-12)


def test_leave_one_out_advantage_excludes_the_own_reward():
    r = torch.tensor([1.0, 2.0, 6.0])
    assert torch.allclose(leave_one_out_advantage(r), torch.tensor([1 - 4.0, 2 - 3.5, 6 - 1.5]))
    assert torch.equal(leave_one_out_advantage(torch.tensor([3.0])), torch.zeros(1))
    assert score_function_loss(torch.zeros(3, requires_grad=True), r).item() == 0.0


def test_bin_zero_is_the_identity_and_eval_mode_does_nothing():
    policy = SubPolicyDistribution(OPS, bins=4)
    with torch.no_grad():
        policy.bin_logits.fill_(-1e9)
        policy.bin_logits[:, 0] = 0.0
    x = torch.rand(8, 3, 6, 6)
    assert torch.equal(policy(x)[0], x)
    policy.bin_logits.data.fill_(0.0)
    assert torch.equal(policy.eval()(x)[0], x)


def test_export_replays_the_same_distribution_frozen():
    policy = _policy(bins=4)
    replay = from_export(policy.export())
    assert isinstance(replay, SubPolicyDistribution) and not replay.policy_parameters()
    assert torch.allclose(replay.pair_probabilities(), policy.pair_probabilities())
    assert torch.allclose(replay.bin_probabilities(), policy.bin_probabilities())
    out, info = replay.train()(torch.rand(4, 3, 6, 6))
    assert out.shape == (4, 3, 6, 6) and info["bins"].shape == (4, 2)
