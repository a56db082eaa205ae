"""Algorithms: one file each (config dataclass + agent with update/act/state_dict)."""
