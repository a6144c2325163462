"""Replaying exported policies: sampled frequencies match the export, identity types, errors, state dicts."""
import json

import pytest
import torch

from augment.ops import DHA_OPS, FASTER_AA_OPS
from augment.pair_policy import PairPolicy
from augment.policy import IdentityPolicy
from augment.replay import FixedPairPolicy, FixedSubPolicy, from_export
from augment.subpolicy import SubPolicy
from utils.errors import UserError

N = 10_000


def tiny(n: int, seed: int = 0) -> torch.Tensor:
    """n small images: the test counts choices, the pixels only have to go through the ops."""
    return torch.rand((n, 3, 4, 4), generator=torch.Generator().manual_seed(seed))


def skewed_pair_policy() -> PairPolicy:
    """A pair policy whose probabilities are far from uniform."""
    policy = PairPolicy(DHA_OPS[14], magnitude=5.0)
    with torch.no_grad():
        policy.theta.copy_(3.0 * torch.randn((14, 14), generator=torch.Generator().manual_seed(0),
                                             dtype=torch.float64))
    return policy


def test_pair_export_replay_reproduces_pair_and_op_frequencies():
    src = skewed_pair_policy()
    d = json.loads(json.dumps(src.export()))  # through JSON, as policy.json
    policy = from_export(d)
    assert isinstance(policy, FixedPairPolicy) and policy.policy_parameters() == []
    p = src.probabilities().detach()
    assert p.max() > 0.05  # really skewed (uniform would be 1/196)
    x = tiny(N)
    y, info = policy(x, torch.Generator().manual_seed(1))
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    pairs = info["pairs"]
    counts = torch.bincount(pairs[:, 0] * 14 + pairs[:, 1], minlength=196).view(14, 14).double() / N
    assert (counts - p).abs().max() < 0.02
    assert (counts.sum(1) - p.sum(1)).abs().max() < 0.02  # first-op marginal
    assert (counts.sum(0) - p.sum(0)).abs().max() < 0.02  # second-op marginal
    assert info["levels"].max() <= 5.0  # the exported magnitude range U(0, 5)
    assert torch.allclose(torch.tensor(policy.export()["pair_probabilities"]), torch.tensor(d["pair_probabilities"]))


def test_pair_replay_magnitude_override():
    d = skewed_pair_policy().export()
    policy = from_export(d, magnitude=10.0)
    _, info = policy(tiny(256), torch.Generator().manual_seed(0))
    assert info["levels"].max() == 8.0  # U(0, 10) clipped to DHA's 8


def skewed_subpolicy() -> SubPolicy:
    """A sub-policy with random logits (sharp op choices at eta = 0.05) and spread apply probabilities."""
    policy = SubPolicy(FASTER_AA_OPS, num_subpolicies=4, num_stages=2)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        policy.op_logits.copy_(0.05 * torch.randn(policy.op_logits.shape, generator=g))
        policy.probability_logits.copy_(2.0 * torch.randn(policy.probability_logits.shape, generator=g))
        policy.magnitude_logits.copy_(torch.randn(policy.magnitude_logits.shape, generator=g))
    return policy


def test_subpolicy_export_replay_reproduces_op_frequencies():
    src = skewed_subpolicy()
    d = json.loads(json.dumps(src.export()))
    policy = from_export(d)
    assert isinstance(policy, FixedSubPolicy) and policy.policy_parameters() == []
    x = tiny(N)
    y, info = policy(x, torch.Generator().manual_seed(1))
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    w, p = src.op_weights().detach(), src.apply_probabilities().detach()  # [L, K, n]
    n = len(FASTER_AA_OPS)
    assert w.max() > 0.3  # skewed (uniform would be 1/16)
    sub_freq = torch.bincount(info["subpolicy"], minlength=4).double() / N
    assert (sub_freq - 0.25).abs().max() < 0.02
    for k in range(2):
        freq = torch.bincount(info["ops"][:, k], minlength=n).double() / N
        assert (freq - w[:, k].mean(0)).abs().max() < 0.02, f"stage {k}"
        # apply rate of each op at this stage, weighted by how often the op is chosen
        expected_applied = (w[:, k] * p[:, k]).sum(-1).mean()
        assert abs(info["applied"][:, k].double().mean() - expected_applied) < 0.02
        for l in range(4):  # per sub-policy too
            rows = info["subpolicy"] == l
            f = torch.bincount(info["ops"][rows, k], minlength=n).double() / rows.sum()
            assert (f - w[l, k]).abs().max() < 0.04


def test_subpolicy_replay_applies_the_exported_magnitude():
    src = SubPolicy(["invert"], num_subpolicies=1, num_stages=1, init_probability=1.0, init_magnitude=0.25)
    policy = from_export(src.export())
    x = tiny(8)
    y, info = policy(x, torch.Generator().manual_seed(0))
    assert info["applied"].all()
    assert torch.allclose(y, x + 0.25 * ((1 - x) - x), atol=1e-5)  # invert blended in by mu = 0.25


@pytest.mark.parametrize("d", [{"type": "none"}, {"type": "fixed", "searched": False, "train_augment": {}}])
def test_identity_exports(d):
    policy = from_export(d)
    assert isinstance(policy, IdentityPolicy) and policy.export() == {"type": "none"}
    x = tiny(2)
    assert policy(x)[0] is x


@pytest.mark.parametrize("d, match", [
    ({"type": "warp"}, "unknown policy export type"),
    ({"type": "pair", "ops": ["rotate"]}, "lacks key"),
    ({"type": "pair", "ops": ["rotate", "warp"], "pair_probabilities": [[1, 0], [0, 0]], "magnitude": 1}, "unknown"),
    ({"type": "pair", "ops": ["rotate", "invert"], "pair_probabilities": [[1, 0]], "magnitude": 1}, "2x2"),
    ({"type": "subpolicy", "ops": ["rotate"], "subpolicies": [[{"op_probabilities": [1.0]}]]}, "malformed"),
])
def test_bad_exports_are_one_line_errors(d, match):
    with pytest.raises(UserError, match=match):
        from_export(d)


def test_fixed_policies_are_not_learnable_and_round_trip_state():
    pair = from_export(skewed_pair_policy().export())
    sub = from_export(skewed_subpolicy().export())
    for policy in (pair, sub):
        assert not policy.differentiable and list(policy.parameters()) == []
        with pytest.raises(RuntimeError, match="no learnable"):
            policy.policy_loss(torch.ones(2), {})
        assert sum(policy.op_probabilities().values()) == pytest.approx(1.0)
        json.dumps(policy.export())
    clone = FixedPairPolicy(DHA_OPS[14], torch.ones(14, 14), 1.0)
    clone.load_state_dict(pair.state_dict())
    assert torch.equal(clone.probabilities, pair.probabilities)
    sub_clone = FixedSubPolicy(FASTER_AA_OPS, *(torch.ones(4, 2, 16),) * 3)
    sub_clone.load_state_dict(sub.state_dict())
    x = tiny(16)
    assert torch.equal(sub(x, torch.Generator().manual_seed(3))[0], sub_clone(x, torch.Generator().manual_seed(3))[0])


def test_replay_eval_mode_is_identity():
    policy = from_export(skewed_pair_policy().export()).eval()
    x = tiny(2)
    assert policy(x) == (x, {})


def test_pair_replay_keeps_the_level_scale_and_old_exports_mean_the_reference():
    export = PairPolicy(DHA_OPS[14], level_scale="strength").export()
    assert export["level_scale"] == "strength"
    assert from_export(export).level_scale == "strength"
    del export["level_scale"]
    assert from_export(export).level_scale == "reference"
