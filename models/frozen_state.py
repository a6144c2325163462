"""Training-mode forwards that leave the network's state alone (thread-local, like `torch.no_grad`).

Inside `frozen_state()` a network in training mode still normalises with batch statistics, but its
BatchNorms do not update their running statistics and drop path is off. The hypergradient's
validation pass needs exactly that, and because the switch is per thread (no module attribute is
flipped) that pass can run on a helper thread while the main thread trains the same modules.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

_local = threading.local()


@contextmanager
def frozen_state() -> Iterator[None]:
    """Within this block (on this thread): batch statistics only, no running-stat updates, no drop path."""
    previous = getattr(_local, "frozen", False)
    _local.frozen = True
    try:
        yield
    finally:
        _local.frozen = previous


def state_frozen() -> bool:
    """Whether the calling thread is inside `frozen_state()`."""
    return getattr(_local, "frozen", False)
