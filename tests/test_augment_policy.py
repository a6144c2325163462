"""The AugmentPolicy contract, checked on every policy: forward, info, eval identity, logging, export, state."""
import json
import math

import pytest
import torch

from augment.baselines import RandAugmentPolicy, TrivialAugmentPolicy
from augment.ops import DHA_OPS
from augment.pair_policy import PairPolicy
from augment.policy import AugmentPolicy, IdentityPolicy
from augment.replay import from_export
from augment.subpolicy import SubPolicy

OPS = ["rotate", "brightness", "posterize", "invert"]
MAKERS = {
    "pair": lambda: PairPolicy(OPS),
    "pair_reinforce": lambda: PairPolicy(OPS, update_rule="reinforce"),
    "subpolicy": lambda: SubPolicy(OPS, num_subpolicies=2, num_stages=2),
    "randaugment": lambda: RandAugmentPolicy(OPS),
    "trivialaugment": lambda: TrivialAugmentPolicy(OPS),
    "identity": IdentityPolicy,
    "pair_replay": lambda: from_export(PairPolicy(OPS).export()),
    "subpolicy_replay": lambda: from_export(SubPolicy(OPS, num_subpolicies=2).export()),
}


def batch(b: int = 6) -> torch.Tensor:
    """Seeded random images in [0, 1]."""
    return torch.rand((b, 3, 5, 5), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", MAKERS)
def test_contract(name):
    policy = MAKERS[name]()
    assert isinstance(policy, AugmentPolicy)
    x = batch()
    y, info = policy(x, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and y.dtype == x.dtype and y.min() >= 0 and y.max() <= 1
    assert isinstance(info, dict)
    y2, _ = policy(x, torch.Generator().manual_seed(0))
    assert torch.equal(y, y2)  # the generator alone decides the randomness
    assert policy.eval()(x) == (x, {})
    assert torch.isfinite(policy.entropy())
    probs = policy.op_probabilities()
    assert not probs or (set(probs) <= set(OPS) and math.isclose(sum(probs.values()), 1.0, rel_tol=1e-6))
    img = policy.matrix_image()
    assert img is None or (img.dim() == 3 and img.shape[0] == 1 and 0 <= img.min() and img.max() <= 1)
    d = policy.export()
    assert json.loads(json.dumps(d)) == d and isinstance(d["type"], str)
    assert type(from_export(d)).__name__  # every export replays
    policy.set_magnitude(5.0)
    clone = MAKERS[name]()
    clone.load_state_dict(policy.state_dict())
    for key, value in policy.state_dict().items():
        assert torch.equal(clone.state_dict()[key], value)


@pytest.mark.parametrize("name", MAKERS)
def test_learnable_policies_have_exactly_one_update_path(name):
    policy = MAKERS[name]()
    params = policy.policy_parameters()
    x = batch()
    y, info = policy(x, torch.Generator().manual_seed(1))
    if not params:
        with pytest.raises(RuntimeError):
            policy.policy_loss(torch.ones(len(x)), info)
    elif policy.differentiable:
        y.sum().backward()
        assert all(p.grad is not None for p in params)
        with pytest.raises(RuntimeError):
            policy.policy_loss(torch.ones(len(x)), info)
    else:
        assert not y.requires_grad  # nothing flows through the images
        policy.policy_loss(torch.arange(len(x), dtype=torch.float32), info).backward()
        assert all(p.grad is not None and (p.grad != 0).any() for p in params)


@pytest.mark.parametrize("name", ["pair", "subpolicy"])
def test_policy_follows_the_module_to_another_dtype_and_keeps_working(name):
    policy = MAKERS[name]().to(torch.float64) if name == "subpolicy" else MAKERS[name]()
    y, _ = policy(batch().double(), torch.Generator().manual_seed(0))
    assert y.dtype == torch.float64


def test_base_class_methods():
    base = AugmentPolicy()
    with pytest.raises(NotImplementedError):
        base(batch())
    with pytest.raises(NotImplementedError):
        base.export()
    assert base.op_probabilities() == {} and base.matrix_image() is None and float(base.entropy()) == 0.0


def test_dha_op_table_drives_the_pair_policy_size():
    for choice, names in DHA_OPS.items():
        assert PairPolicy(names).theta.shape == (choice, choice)
