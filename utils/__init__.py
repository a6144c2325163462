"""Shared helpers: config, errors, checkpoints, logging, seeding, device."""
