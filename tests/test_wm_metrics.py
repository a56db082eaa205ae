import numpy as np
import pytest
import torch

from genworld.data.episodes import Episode
from genworld.data.multi_env import MultiEnvDataset
from genworld.data.normalization import Normalizer
from genworld.envs import get_env_spec
from genworld.eval.wm_metrics import COPY, k_step_errors


def drifting_dataset() -> MultiEnvDataset:
    """Hopper-shaped episodes whose every observation dim grows by 1 a step."""
    spec = get_env_spec("hopper")
    rng = np.random.default_rng(0)
    episodes = []
    for _ in range(4):
        obs = rng.normal(size=(1, spec.obs_dim)) + np.arange(31)[:, None]
        actions = rng.uniform(-1, 1, size=(30, spec.act_dim))
        episodes.append(
            Episode.from_arrays(
                obs, actions, rng.normal(size=30), np.zeros(30, bool), np.arange(30) == 29
            )
        )
    return MultiEnvDataset([(spec, episodes)])


def test_copy_predictor_error_is_the_change_it_misses():
    data = drifting_dataset()
    norm = Normalizer.fit(data)
    errors = k_step_errors(COPY, data, norm, horizons=(1, 5), per_env=32)["hopper"]
    std = norm.obs_std[0, : data.specs[0].obs_dim]
    for h in (1, 5):  # every dim is h steps of 1 away from the copied start
        assert errors[f"obs_h{h}"] == pytest.approx(float((h / std).pow(2).mean()), rel=1e-5)
    mean_errors = k_step_errors(None, data, norm, horizons=(1, 5), per_env=32)["hopper"]
    assert errors["rew_h1"] == pytest.approx(mean_errors["rew_h1"])  # the mean's reward
    assert torch.isfinite(torch.tensor(list(errors.values()))).all()
