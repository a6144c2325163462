"""Learning rate and weight decay of the weights: fixed schedules (schedule.py), learned by
hypergradient (hypergrad.py), and the weight update that applies either (weight_update.py)."""
