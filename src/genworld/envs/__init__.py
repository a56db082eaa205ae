"""Environments: the EnvSpec registry, termination functions and constructors."""

from genworld.envs.registry import ENV_SPECS, get_env_spec, make_env
from genworld.envs.vector import EnvPool

__all__ = ["ENV_SPECS", "get_env_spec", "make_env", "EnvPool"]
