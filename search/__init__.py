"""The search: the mode table, building stages from the config, the one loop, the run state, artifacts."""
