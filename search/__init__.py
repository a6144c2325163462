"""The search: the mode table, building objects from the config, the one loop, artifacts."""
