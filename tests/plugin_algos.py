"""Algorithms registered as plugins by tests/test_plugins.py that break the agent contract: one's
actions are not zero on padded dims, one's update raises, one forgets its state on a load."""

from __future__ import annotations

import torch

from genworld.algos.bc import build as build_bc


class Wrapped:
    """genworld's BC, as it is."""

    def __init__(self, agent):
        self.agent = agent

    def update(self, generator):
        return self.agent.update(generator)

    def act(self, obs, env_idx, *, deterministic=True):
        return self.agent.act(obs, env_idx, deterministic=deterministic)

    def state_dict(self):
        return self.agent.state_dict()

    def load_state_dict(self, state):
        self.agent.load_state_dict(state)


class Unmasked(Wrapped):
    """BC whose ``act`` leaves padded action dims non-zero."""

    def act(self, obs, env_idx, *, deterministic=True):
        return torch.full((len(obs), self.agent.dataset.act_max), 0.5)


class Crashing(Wrapped):
    """BC whose ``update`` raises."""

    def update(self, generator):
        raise RuntimeError("the loss is not ready")


class Forgetful(Wrapped):
    """BC whose ``load_state_dict`` loads nothing."""

    def load_state_dict(self, state):
        pass


def build_forgetful(ctx):
    return Forgetful(build_bc(ctx))


def build_unmasked(ctx):
    return Unmasked(build_bc(ctx))


def build_crashing(ctx):
    return Crashing(build_bc(ctx))
