"""Faster-AA sub-policies: one backward reaches every learnable tensor; eval identity; export; state dict."""
import math

import pytest
import torch

from augment.ops import FASTER_AA_OPS
from augment.subpolicy import SubPolicy


def batch(b: int = 48, seed: int = 0, size: int = 6) -> torch.Tensor:
    """Seeded random images in [0, 1]."""
    return torch.rand((b, 3, size, size), generator=torch.Generator().manual_seed(seed))


def test_shape_range_and_info():
    policy = SubPolicy(num_subpolicies=3, num_stages=2)
    x = batch(8)
    y, info = policy(x, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    assert info["subpolicy"].shape == (8,) and info["subpolicy"].max() < 3
    assert not torch.equal(y, x)


def test_one_backward_reaches_every_learnable_tensor():
    policy = SubPolicy(FASTER_AA_OPS, num_subpolicies=3, num_stages=2)
    x = batch(24, size=17)  # equalize is the identity on images of fewer than 256 pixels (PIL)
    y, info = policy(x, torch.Generator().manual_seed(1))
    assert set(info["subpolicy"].tolist()) == {0, 1, 2}  # every sub-policy was drawn
    r = torch.randn(y.shape, generator=torch.Generator().manual_seed(2))
    (y * r).sum().backward()  # a generic loss on the output, one backward
    for name in ("op_logits", "probability_logits", "magnitude_logits"):
        grad = getattr(policy, name).grad
        assert grad is not None and torch.isfinite(grad).all(), name
        # every (sub-policy, stage, op) slice, not just the sum: each op's weight, gate and magnitude matter
        assert (grad != 0).all(), f"{name}: zero gradient at {(grad == 0).nonzero().tolist()}"
    assert policy.policy_parameters() == [policy.op_logits, policy.probability_logits, policy.magnitude_logits]


def test_gradient_only_for_drawn_subpolicies():
    policy = SubPolicy(num_subpolicies=4, num_stages=1)
    x = batch(6)
    y, info = policy(x, torch.Generator().manual_seed(3))
    y.sum().backward()
    drawn = set(info["subpolicy"].tolist())
    for l in range(4):
        assert (policy.op_logits.grad[l] != 0).any() == (l in drawn)


def test_hard_gate_is_binary_forward_and_still_differentiable():
    policy = SubPolicy(["brightness", "rotate"], num_subpolicies=1, num_stages=1, hard_gate=True)
    gates = policy._gates(policy.probability_logits.expand(64, 1, 2), torch.Generator().manual_seed(0))
    assert set(gates.detach().unique().tolist()) <= {0.0, 1.0}
    gates.sum().backward()
    assert (policy.probability_logits.grad != 0).all()


def test_same_generator_same_output():
    policy = SubPolicy(num_subpolicies=2)
    x = batch(8)
    a, ia = policy(x, torch.Generator().manual_seed(5))
    b, ib = policy(x, torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and torch.equal(ia["subpolicy"], ib["subpolicy"])


def test_eval_mode_is_identity():
    policy = SubPolicy().eval()
    x = batch(4)
    y, info = policy(x)
    assert y is x and info == {}


def test_policy_loss_raises_for_a_differentiable_policy():
    policy = SubPolicy()
    assert policy.differentiable
    with pytest.raises(RuntimeError, match="differentiable"):
        policy.policy_loss(torch.ones(2), {})


def test_probabilities_entropy_image_and_export():
    policy = SubPolicy(num_subpolicies=3, num_stages=2)
    n = len(FASTER_AA_OPS)
    assert math.isclose(float(policy.entropy()), math.log(n), rel_tol=1e-6)
    assert math.isclose(sum(policy.op_probabilities().values()), 1.0, rel_tol=1e-6)
    img = policy.matrix_image()
    assert img.shape == (1, 6, n) and 0 <= img.min() and img.max() == 1
    with torch.no_grad():
        policy.op_logits[1, 0, 4] = 1.0  # rotate, sharpened by eta = 0.05
    d = policy.export()
    assert d["type"] == "subpolicy" and d["ops"] == list(FASTER_AA_OPS)
    assert len(d["subpolicies"]) == 3 and len(d["subpolicies"][0]) == 2
    stage = d["subpolicies"][1][0]
    assert set(stage) == {"op_probabilities", "apply_probabilities", "magnitudes"}
    assert stage["op_probabilities"][4] > 0.99 and math.isclose(sum(stage["op_probabilities"]), 1.0, rel_tol=1e-6)
    assert all(math.isclose(v, 0.5, rel_tol=1e-6) for v in stage["apply_probabilities"] + stage["magnitudes"])
    assert d["top_subpolicies"][0]["subpolicy"] == 1 and d["top_subpolicies"][0]["ops"][0] == "rotate"
    assert float(policy.entropy()) < math.log(n)


def test_state_dict_round_trip():
    src = SubPolicy(num_subpolicies=2, num_stages=2)
    with torch.no_grad():
        for p in src.policy_parameters():
            p.normal_(generator=torch.Generator().manual_seed(0))
    dst = SubPolicy(num_subpolicies=2, num_stages=2)
    dst.load_state_dict(src.state_dict())
    assert set(src.state_dict()) == {"op_logits", "probability_logits", "magnitude_logits"}
    x = batch(4)
    assert torch.equal(src(x, torch.Generator().manual_seed(1))[0], dst(x, torch.Generator().manual_seed(1))[0])


def test_a_few_steps_learn_to_apply_less():
    """Minimising the change to the images lowers the apply probabilities (gradient has the right sign)."""
    policy = SubPolicy(["brightness", "rotate", "invert"], num_subpolicies=2, num_stages=1)
    opt = torch.optim.Adam(policy.policy_parameters(), lr=0.1)
    x = batch(16)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        y, _ = policy(x, g)
        opt.zero_grad()
        (y - x).pow(2).mean().backward()
        opt.step()
    assert (policy.apply_probabilities() < 0.5).all() and policy.magnitudes().mean() < 0.5
