"""RandAugment / TrivialAugment: per-sample ops, determinism, no parameters, export round trip."""
import pytest
import torch

from augment.baselines import RandAugmentPolicy, TrivialAugmentPolicy
from augment.ops import DHA_OPS
from augment.replay import from_export


def batch(b: int = 32, seed: int = 0) -> torch.Tensor:
    """Seeded random images in [0, 1]."""
    return torch.rand((b, 3, 6, 6), generator=torch.Generator().manual_seed(seed))


POLICIES = [lambda: RandAugmentPolicy(DHA_OPS[14], num_ops=2, magnitude=9), lambda: TrivialAugmentPolicy(DHA_OPS[14])]


@pytest.mark.parametrize("make", POLICIES, ids=["randaugment", "trivialaugment"])
def test_per_sample_ops_deterministic_and_in_range(make):
    policy = make()
    x = batch()
    y1, i1 = policy(x, torch.Generator().manual_seed(1))
    y2, i2 = policy(x, torch.Generator().manual_seed(1))
    _, i3 = policy(x, torch.Generator().manual_seed(2))
    assert torch.equal(y1, y2) and torch.equal(i1["ops"], i2["ops"])
    assert not torch.equal(i1["ops"], i3["ops"])
    assert len(set(i1["ops"][:, 0].tolist())) > 3  # different samples get different ops
    assert y1.shape == x.shape and y1.min() >= 0 and y1.max() <= 1
    assert list(policy.parameters()) == [] and policy.policy_parameters() == []
    assert sum(policy.op_probabilities().values()) == pytest.approx(1.0)


def test_randaugment_matches_sample_by_sample_application():
    """The batched result equals applying each sample's ops to it alone (magnitude 15/30 = 0.5)."""
    from augment.ops import OPS
    policy = RandAugmentPolicy(["brightness", "invert", "solarize"], num_ops=2, magnitude=15)
    x = batch(8)
    y, info = policy(x, torch.Generator().manual_seed(3))
    checked = 0
    for i in range(8):
        ops = [policy.ops[j] for j in info["ops"][i].tolist()]
        ref = x[i:i + 1]
        for name in ops:
            if not OPS[name].signed:
                ref = OPS[name].fn(ref, torch.tensor([0.5]))
        if not any(OPS[n].signed for n in ops):  # unsigned-only samples have no random direction
            assert torch.allclose(y[i:i + 1], ref, atol=1e-6)
            checked += 1
    assert checked > 0


def test_randaugment_export_and_replay():
    policy = RandAugmentPolicy(DHA_OPS[11], num_ops=3, magnitude=12)
    d = policy.export()
    assert d == {"type": "randaugment", "ops": list(DHA_OPS[11]), "num_ops": 3, "magnitude": 12.0}
    again = from_export(d)
    assert isinstance(again, RandAugmentPolicy) and again.export() == d
    x = batch(8)
    assert torch.equal(policy(x, torch.Generator().manual_seed(0))[0], again(x, torch.Generator().manual_seed(0))[0])


def test_trivialaugment_export_and_replay():
    d = TrivialAugmentPolicy(DHA_OPS[4]).export()
    assert d == {"type": "trivialaugment", "ops": list(DHA_OPS[4])}
    assert isinstance(from_export(d), TrivialAugmentPolicy)


@pytest.mark.parametrize("make", POLICIES, ids=["randaugment", "trivialaugment"])
def test_eval_identity_and_state_dict(make):
    policy = make()
    assert policy.state_dict() == {}
    make().load_state_dict(policy.state_dict())
    x = batch(4)
    y, info = policy.eval()(x)
    assert y is x and info == {}
    with pytest.raises(RuntimeError):
        policy.policy_loss(torch.ones(4), {})


def test_set_magnitude_and_default_ops():
    policy = RandAugmentPolicy()
    assert policy.ops == DHA_OPS[14]
    policy.set_magnitude(30)
    assert policy.export()["magnitude"] == 30.0
    with pytest.raises(ValueError, match="unknown"):
        TrivialAugmentPolicy(["warp"])
