"""Test setup: import from the repo root and keep torch to the machine's two cores."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
torch.set_num_threads(2)
