"""Config sections -> the stage's augmentation policy and how it learns: one builder per Augment
member (search/modes.py), through a table checked at import."""
from __future__ import annotations

import torch

from search.build import StageSections
from search.modes import Augment, StageSpec
from search.policy_step import AffinityStep, GeneralizationStep, PolicyStep, ScoreFunctionStep, ThroughImagesStep
from utils.config_sections import DatasetConfig
from utils.errors import UserError


def _pair_policy(sec: StageSections, replay: dict | None, device: torch.device) -> PolicyStep:
    from augment.ops import DHA_OPS
    from augment.pair_policy import PairPolicy
    da = sec.da
    policy = PairPolicy(DHA_OPS[sec.dataset.aug_choice], temperature=da.temperature, magnitude=da.magnitude,
                        update_rule=da.update_rule, entropy_weight=da.entropy_weight,
                        min_entropy=da.min_entropy, level_scale=da.level_scale).to(device)
    if da.update_rule == "reinforce":  # normalised advantages: Adam's steps are about d_lr per entry
        opt = torch.optim.Adam(policy.policy_parameters(), lr=da.d_lr)
    else:
        opt = torch.optim.SGD(policy.policy_parameters(), lr=da.d_lr, momentum=da.d_momentum,
                              nesterov=da.d_nesterov and da.d_momentum > 0, weight_decay=da.d_weight_decay)
    if da.objective == "generalization":
        return GeneralizationStep(policy, opt, da.val_every)
    return AffinityStep(policy, opt) if da.objective == "affinity" else ScoreFunctionStep(policy, opt)


def _policy_gradient(sec: StageSections, replay: dict | None, device: torch.device) -> PolicyStep:
    from augment.daas_policy import SubPolicyDistribution
    from augment.ops import DHA_OPS
    da = sec.da
    policy = SubPolicyDistribution(DHA_OPS[sec.dataset.aug_choice], bins=da.magnitude_bins).to(device)
    # DAAS: the reward of an image is how much training on it lowers the validation loss (first order,
    # the generalization objective's closed form); plain REINFORCE under Adam at d_lr.
    return GeneralizationStep(policy, torch.optim.Adam(policy.policy_parameters(), lr=da.d_lr), da.val_every)


def _subpolicy(sec: StageSections, replay: dict | None, device: torch.device) -> PolicyStep:
    from augment.ops import FASTER_AA_OPS
    from augment.subpolicy import SubPolicy
    da = sec.da
    policy = SubPolicy(FASTER_AA_OPS, num_subpolicies=da.subpolicies, num_stages=da.subpolicy_stages,
                       temperature=da.subpolicy_temperature).to(device)
    # Faster-AA learns its policy with Adam; d_lr is its learning rate.
    return ThroughImagesStep(policy, torch.optim.Adam(policy.policy_parameters(), lr=da.d_lr, betas=(0.5, 0.999)))


def _replayed_policy(sec: StageSections, replay: dict | None, device: torch.device) -> PolicyStep:
    from augment.replay import from_export
    return PolicyStep(from_export(replay or {"type": "none"}).to(device))


def _fixed_policy(sec: StageSections, replay: dict | None, device: torch.device) -> PolicyStep:
    return PolicyStep(build_fixed_policy(sec.da.fixed_policy, sec.dataset, device))


POLICY_STEPS = {
    Augment.NONE: _fixed_policy,
    Augment.PAIR: _pair_policy,
    Augment.SUBPOLICY: _subpolicy,
    Augment.REINFORCE: _policy_gradient,
    Augment.REPLAY: _replayed_policy,
}

if set(POLICY_STEPS) != set(Augment):
    raise ImportError(f"search/build_policy.py: no builder for {sorted(m.value for m in set(Augment) - set(POLICY_STEPS))}")


def build_policy_step(spec: StageSpec, sec: StageSections, device: torch.device,
                      replay: dict | None = None) -> PolicyStep:
    """The stage's augmentation policy and its update rule (`replay`: the policy a replay stage replays)."""
    return POLICY_STEPS[spec.augment](sec, replay, device)


def build_fixed_policy(name: str, ds: DatasetConfig, device: torch.device):
    """A non-searched policy: none, a RandAugment / TrivialAugment baseline, or a replayed policy.json."""
    if name == "none":
        return None
    from augment.ops import DHA_OPS
    if name == "randaugment":
        from augment.baselines import RandAugmentPolicy
        return RandAugmentPolicy(DHA_OPS[ds.aug_choice]).to(device)
    if name == "trivialaugment":
        from augment.baselines import TrivialAugmentPolicy
        return TrivialAugmentPolicy(DHA_OPS[ds.aug_choice]).to(device)
    import json
    from pathlib import Path

    from augment.replay import from_export
    path = Path(name)
    if not path.is_file():
        raise UserError(f"da.fixed_policy: '{name}' is neither none, randaugment, trivialaugment nor a policy.json file")
    try:
        return from_export(json.loads(path.read_text(encoding="utf-8-sig"))).to(device)
    except (UserError, ValueError, KeyError, TypeError, AttributeError, IndexError, OSError, RecursionError) as exc:
        raise UserError(f"da.fixed_policy: '{name}' is not a policy this tool exported ({exc})") from None
