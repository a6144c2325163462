"""Learning-rate / weight-decay schedules: fixed (cosine) now, learned by hypergradient later."""
