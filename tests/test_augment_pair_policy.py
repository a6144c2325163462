"""DHA's pair policy: sampling, determinism, entropy, both update rules, a short optimisation, export."""
import math

import pytest
import torch

from augment.ops import DHA_OPS
from augment.pair_policy import PairPolicy, sample_pairs

OPS14 = DHA_OPS[14]


def batch(b: int = 16, seed: int = 0, size: int = 8) -> torch.Tensor:
    """Seeded random images in [0, 1]."""
    return torch.rand((b, 3, size, size), generator=torch.Generator().manual_seed(seed))


def test_shape_range_and_info():
    policy = PairPolicy(OPS14)
    x = batch()
    y, info = policy(x, torch.Generator().manual_seed(1))
    assert y.shape == x.shape and y.dtype == x.dtype
    assert y.min() >= 0 and y.max() <= 1
    assert info["pairs"].shape == (16, 2) and info["pairs"].dtype == torch.long
    assert 0 <= info["pairs"].min() and info["pairs"].max() < 14
    assert info["levels"].min() >= 0 and info["levels"].max() <= 1.0  # U(0, magnitude = 1)


def test_same_generator_seed_same_output_and_pairs():
    policy = PairPolicy(OPS14, magnitude=10.0)
    x = batch()
    y1, i1 = policy(x, torch.Generator().manual_seed(3))
    y2, i2 = policy(x, torch.Generator().manual_seed(3))
    y3, i3 = policy(x, torch.Generator().manual_seed(4))
    assert torch.equal(y1, y2) and torch.equal(i1["pairs"], i2["pairs"])
    assert not torch.equal(i1["pairs"], i3["pairs"])
    assert len({tuple(p) for p in i1["pairs"].tolist()}) > 1  # per-sample draws


def test_levels_clipped_to_eight():
    policy = PairPolicy(OPS14, magnitude=10.0)
    _, info = policy(batch(64), torch.Generator().manual_seed(0))
    assert info["levels"].max() == 8.0 and info["levels"].min() >= 0


def test_init_probabilities_entropy_and_export():
    policy = PairPolicy(OPS14)
    p = policy.probabilities()
    assert p.dtype == torch.float64 and p.shape == (14, 14)
    assert torch.allclose(p.sum(), torch.tensor(1.0, dtype=torch.float64))
    assert torch.allclose(p, torch.full_like(p, 1 / 196))
    assert math.isclose(float(policy.entropy()), math.log(196), abs_tol=1e-9)
    assert abs(float(policy.entropy()) - 5.278) < 1e-3
    assert math.isclose(sum(policy.op_probabilities().values()), 1.0, abs_tol=1e-9)
    d = policy.export()
    assert d["type"] == "pair" and d["ops"] == list(OPS14) and len(d["top_pairs"]) == 10
    assert math.isclose(sum(map(sum, d["pair_probabilities"])), 1.0, abs_tol=1e-9)
    assert d["magnitude"] == 1.0 and d["temperature"] == 2.0 and d["update_rule"] == "reference"
    img = policy.matrix_image()
    assert img.shape == (1, 14, 14) and img.min() >= 0 and img.max() == 1


def test_sampling_matrix_is_a_relaxed_sample():
    policy = PairPolicy(OPS14, temperature=2.0)
    g = torch.Generator().manual_seed(0)
    m1, m2 = policy.sampling_matrix(g), policy.sampling_matrix(g)
    assert torch.allclose(m1.sum(), torch.tensor(1.0, dtype=torch.float64))
    assert not torch.equal(m1, m2) and not m1.requires_grad
    assert m1.max() < 0.5  # soft at T = 2, never one-hot


def test_sample_pairs_decodes_row_major():
    p = torch.zeros(3, 3, dtype=torch.float64)
    p[1, 2] = 1.0
    assert sample_pairs(p, 5).tolist() == [[1, 2]] * 5


def test_eval_mode_is_identity():
    policy = PairPolicy(OPS14).eval()
    x = batch()
    y, info = policy(x)
    assert y is x and info == {}


@pytest.mark.parametrize("rule", ["reference", "reinforce"])
def test_update_rule_favours_high_loss_pairs(rule, one_thread):
    policy = PairPolicy(OPS14, update_rule=rule)
    pairs = torch.cartesian_prod(torch.arange(14), torch.arange(14))  # every pair once
    loss = torch.ones(196)
    hot = (pairs[:, 0] == 3) & (pairs[:, 1] == 5)
    loss[hot] = 5.0
    opt = torch.optim.SGD(policy.policy_parameters(), lr=10.0 if rule == "reference" else 0.1)
    for _ in range(3):
        opt.zero_grad()
        policy.policy_loss(loss, {"pairs": pairs}).backward()
        opt.step()
    p = policy.probabilities().detach()
    assert p[3, 5] > 1 / 196 and p.argmax() == 3 * 14 + 5
    others = p.clone()
    others[3, 5] = 0
    assert others.max() < 1 / 196


def _reinforce_gradient(loss, pairs, entropy_weight=0.1):
    policy = PairPolicy(OPS14, update_rule="reinforce", entropy_weight=entropy_weight)
    policy.policy_loss(loss, {"pairs": pairs}).backward()
    return policy.theta.grad


def test_reinforce_advantages_are_leave_one_out_and_scale_free():
    pairs = torch.tensor([[0, 1], [2, 3], [4, 5], [6, 7]])
    # equal losses: no advantage, and the entropy bonus has no gradient at the uniform start
    assert _reinforce_gradient(torch.full((4,), 2.0), pairs).abs().max() < 1e-15
    loss = torch.tensor([1.0, 2.0, 4.0, 0.5], dtype=torch.float64)
    grad = _reinforce_gradient(loss, pairs)
    torch.testing.assert_close(_reinforce_gradient(10 * loss + 3, pairs), grad, rtol=1e-9, atol=1e-15)
    assert grad[2, 3] < 0 < grad[6, 7]  # descent raises the high-loss pair, lowers the low-loss one


def test_policy_loss_ignores_loss_graph():
    policy = PairPolicy(OPS14)
    w = torch.ones(4, requires_grad=True)
    policy.policy_loss(w * 2, {"pairs": torch.zeros(4, 2, dtype=torch.long)}).backward()
    assert w.grad is None and policy.theta.grad is not None


@pytest.fixture
def one_thread(torch_threads):
    """200 steps on tiny tensors: on a busy 2-core machine OpenMP hand-offs would cost more than the maths."""
    torch_threads(1)


def optimise(rule: str, seed: int, steps: int = 200) -> PairPolicy:
    """A fake problem: the per-sample loss is high when the first op is `rotate` (index 2)."""
    policy = PairPolicy(OPS14, temperature=2.0, magnitude=1.0, update_rule=rule)
    lr = 20.0 if rule == "reference" else 0.05  # the reference surrogate's gradient is ~P = 1/196 small
    opt = torch.optim.SGD(policy.policy_parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    g = torch.Generator().manual_seed(seed)
    x = batch(8, seed, size=4)
    for _ in range(steps):
        _, info = policy(x, g)
        loss = 1.0 + 4.0 * (info["pairs"][:, 0] == 2).double()
        opt.zero_grad()
        policy.policy_loss(loss, info).backward()
        opt.step()
    return policy


@pytest.mark.parametrize("rule", ["reference", "reinforce"])
def test_optimisation_moves_entropy_and_export(rule, one_thread):
    start = PairPolicy(OPS14)
    a = optimise(rule, seed=7)
    assert float(a.entropy()) < float(start.entropy()) - 0.05
    assert a.export() != start.export()
    assert a.export()["top_pairs"][0]["ops"][0] == "rotate"
    assert a.op_probabilities()["rotate"] > 1.5 / 14 / 2 + 0.5 / 14  # the first slot's rotate gained mass


def test_same_seed_same_final_theta(one_thread):
    a, b = optimise("reference", seed=3), optimise("reference", seed=3)
    assert torch.equal(a.theta, b.theta)
    assert not torch.equal(a.theta, optimise("reference", seed=4, steps=20).theta)


def test_state_dict_round_trip():
    src = optimise("reinforce", seed=1, steps=5)
    dst = PairPolicy(OPS14, update_rule="reinforce")
    dst.load_state_dict(src.state_dict())
    assert set(src.state_dict()) == {"theta"}
    assert torch.equal(dst.theta, src.theta)
    x = batch()
    assert torch.equal(src(x, torch.Generator().manual_seed(2))[0], dst(x, torch.Generator().manual_seed(2))[0])


def test_set_magnitude_and_bad_arguments():
    policy = PairPolicy(OPS14)
    policy.set_magnitude(10.0)
    assert policy.export()["magnitude"] == 10.0
    with pytest.raises(ValueError, match="update_rule"):
        PairPolicy(OPS14, update_rule="ppo")
    with pytest.raises(ValueError, match="unknown"):
        PairPolicy(["rotate", "warp"])
    with pytest.raises(ValueError, match="DHA"):
        PairPolicy(["rotate", "sample_pairing"])  # no DHA level rule


def _train_with_a_tiny_network(seed: int, steps: int = 200) -> PairPolicy:
    """DHA's loop in miniature: per-sample CE of a tiny conv net on policy-augmented batches."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(4, 3))
    policy = PairPolicy(OPS14, temperature=2.0, magnitude=8.0)
    w_opt = torch.optim.SGD(net.parameters(), lr=0.05)
    p_opt = torch.optim.SGD(policy.policy_parameters(), lr=50.0, momentum=0.9)
    g = torch.Generator().manual_seed(seed)
    x, y = torch.rand(16, 3, 8, 8, generator=g), torch.randint(0, 3, (16,), generator=g)
    for _ in range(steps):
        x_aug, info = policy(x, g)
        per_sample = torch.nn.functional.cross_entropy(net(x_aug), y, reduction="none")
        p_opt.zero_grad()
        policy.policy_loss(per_sample.detach(), info).backward()
        p_opt.step()
        w_opt.zero_grad()
        per_sample.mean().backward()
        w_opt.step()
    return policy


def test_200_steps_with_a_tiny_network_move_the_policy_reproducibly(one_thread):
    start = PairPolicy(OPS14).export()
    a = _train_with_a_tiny_network(seed=11)
    assert abs(float(a.entropy()) - start["entropy"]) > 1e-3
    assert a.export()["pair_probabilities"] != start["pair_probabilities"]
    b = _train_with_a_tiny_network(seed=11)
    assert a.export() == b.export()


def _synthetic_run(rule: str, steps: int, seed: int = 0):
    """196 pairs whose losses differ by per-pair offsets (std 0.2) under per-sample noise 1, batch 32,
    T = 2; the optimizer the builder gives each rule (Adam 0.02 / DHA's SGD 0.02)."""
    g = torch.Generator().manual_seed(seed)
    policy = PairPolicy(OPS14, temperature=2.0, update_rule=rule)
    if rule == "reinforce":
        opt = torch.optim.Adam(policy.policy_parameters(), lr=0.02)
    else:
        opt = torch.optim.SGD(policy.policy_parameters(), lr=0.02, momentum=0.9, nesterov=True, weight_decay=5e-4)
    offsets = 0.2 * torch.randn(14, 14, generator=g, dtype=torch.float64)
    for _ in range(steps):
        matrix = policy.probabilities().detach() if rule == "reinforce" else policy.sampling_matrix(g)
        pairs = sample_pairs(matrix, 32, g)
        loss = offsets[pairs[:, 0], pairs[:, 1]] + torch.randn(32, generator=g, dtype=torch.float64)
        opt.zero_grad()
        policy.policy_loss(loss, {"pairs": pairs}).backward()
        opt.step()
    return policy, offsets


def test_reinforce_learns_the_favoured_pairs_without_collapsing(one_thread):
    policy, offsets = _synthetic_run("reinforce", 1500)
    p = policy.probabilities().detach()
    entropy = float(policy.entropy())
    assert math.log(196) - entropy >= 0.3 and entropy > 2.0
    top = offsets.flatten().argsort(descending=True)[:20]
    assert float(p.flatten()[top].sum()) > 2 * 20 / 196  # the 20 highest-loss pairs hold over twice their share
    assert float(torch.corrcoef(torch.stack([p.flatten(), offsets.flatten()]))[0, 1]) > 0.2


def test_the_reference_rule_barely_moves_at_dhas_settings(one_thread):
    policy, _ = _synthetic_run("reference", 400)
    assert math.log(196) - float(policy.entropy()) < 1e-4
