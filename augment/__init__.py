"""Augmentation on device batches: pure batched ops (functional.py, ops.py, apply.py), the fixed
crop / flip / Cutout (fixed.py), searched policies (pair_policy.py: DHA; subpolicy.py: Faster-AA
style), baselines (baselines.py: RandAugment, TrivialAugment) and the replay of an exported policy."""
