"""Augmentation on device batches: fixed preprocessing now, searched policies in issue 3."""
