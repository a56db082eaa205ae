import numpy as np
import pytest
import torch

from genworld.data.episodes import Episode
from genworld.data.multi_env import MultiEnvDataset, gather_transitions
from genworld.data.normalization import Normalizer
from genworld.envs import get_env_spec
from genworld.errors import GenworldError

from .conftest import random_episode


def _counting_episode(
    env_code: float, start: int, steps: int, obs_dim: int, act_dim: int, terminal: bool
):
    """obs[t] = env_code*1000 + start + t in every dim, so a sample says where it came from."""
    values = env_code * 1000 + start + np.arange(steps + 1, dtype=np.float32)
    ends = np.zeros(steps, bool)
    ends[-1] = True
    return Episode.from_arrays(
        np.repeat(values[:, None], obs_dim, 1),
        np.repeat(values[:-1, None], act_dim, 1) / 1e4,
        values[:-1],
        ends if terminal else np.zeros(steps, bool),
        np.zeros(steps, bool) if terminal else ends,
    )


@pytest.fixture
def two_env():
    hopper, cheetah = get_env_spec("hopper"), get_env_spec("halfcheetah")  # obs 11/17, act 3/6
    hop = [_counting_episode(1, 0, 5, 11, 3, True), _counting_episode(1, 100, 3, 11, 3, True)]
    chee = [_counting_episode(2, 0, 20, 17, 6, False)]
    return MultiEnvDataset([(hopper, hop), (cheetah, chee)])


def test_padding_masks_and_env_idx(two_env):
    batch = two_env.sample_transitions(64, torch.Generator().manual_seed(0))
    assert batch.observations.shape == (64, 17) and batch.actions.shape == (64, 6)
    hop = batch.env_idx == 0
    assert hop.sum() == 32  # balanced
    assert (batch.observations[hop, 11:] == 0).all() and (batch.actions[hop, 3:] == 0).all()
    assert (batch.next_observations[hop, 11:] == 0).all()
    assert batch.obs_mask[hop].sum(1).eq(11).all() and batch.obs_mask[~hop].sum(1).eq(17).all()
    assert batch.act_mask[hop].sum(1).eq(3).all() and batch.act_mask[~hop].sum(1).eq(6).all()
    # every sample comes from its own env, and next obs is the same episode's next step
    assert (batch.observations[hop, 0] // 1000 == 1).all()
    assert (batch.observations[~hop, 0] // 1000 == 2).all()
    assert torch.equal(batch.next_observations[:, 0], batch.observations[:, 0] + 1)
    assert torch.equal(batch.rewards, batch.observations[:, 0])


def test_terminal_only_at_true_end_never_at_truncation(two_env):
    batch = two_env.sample_transitions(2000, torch.Generator().manual_seed(1))
    terminal_obs = set(batch.observations[batch.terminations == 1, 0].tolist())
    assert terminal_obs == {1004.0, 1102.0}  # the last step of each hopper episode
    # halfcheetah's episode ends by truncation: never a terminal
    assert batch.terminations[batch.env_idx == 1].sum() == 0


def test_sampling_is_seeded(two_env):
    a = two_env.sample_transitions(50, torch.Generator().manual_seed(3), "proportional")
    b = two_env.sample_transitions(50, torch.Generator().manual_seed(3), "proportional")
    c = two_env.sample_transitions(50, torch.Generator().manual_seed(4), "proportional")
    assert torch.equal(a.observations, b.observations)
    assert not torch.equal(a.observations, c.observations)


@pytest.mark.parametrize("mode", ["balanced", "proportional"])
def test_packed_sampling_equals_per_env_gathers(two_env, mode):
    """The packed one-gather path returns exactly the batch of per-env gathers with the same
    draws (so results from before the packed table reproduce), and a batch owns its memory."""
    gen, ref_gen = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    for _ in range(3):  # the cached env ids/masks are reused from the second batch on
        batch = two_env.sample_transitions(40, gen, mode)
        counts = two_env.env_counts(40, ref_gen, mode)
        parts = [
            (env, torch.randint(len(env), (n,), generator=ref_gen), k)
            for k, (env, n) in enumerate(zip(two_env.envs, counts, strict=True))
            if n
        ]
        expected = gather_transitions(parts, two_env.obs_max, two_env.act_max)
        for field in expected.__dataclass_fields__:
            assert torch.equal(getattr(batch, field), getattr(expected, field)), field
        assert batch.env_idx.dtype == torch.int64 and batch.obs_mask.dtype == torch.bool
        batch.observations.fill_(-1.0), batch.rewards.fill_(-1.0), batch.env_idx.fill_(5)
        batch.obs_mask.fill_(False)
    again = two_env.sample_transitions(40, torch.Generator().manual_seed(7), mode)
    assert (again.observations[:, 0] > 0).all() and (again.rewards > 0).all()
    assert set(again.env_idx.tolist()) <= {0, 1} and again.obs_mask.any(1).all()


def test_proportional_follows_sizes(two_env):
    # hopper has 8 transitions, halfcheetah 20: shares 8/28 and 20/28
    batch = two_env.sample_transitions(28_000, torch.Generator().manual_seed(0), "proportional")
    share = (batch.env_idx == 0).float().mean().item()
    assert share == pytest.approx(8 / 28, abs=0.01)
    with pytest.raises(GenworldError, match="unknown sampling mode"):
        two_env.sample_transitions(4, torch.Generator(), "uniform")


def test_windows_never_cross_episode_boundaries(two_env):
    seq = two_env.sample_windows(400, 6, torch.Generator().manual_seed(0))
    assert seq.observations.shape == (400, 6, 17)
    hop = seq.env_idx == 0
    first = seq.observations[:, 0, 0]
    for i in torch.nonzero(hop).flatten().tolist():
        valid = seq.step_mask[i]
        # consecutive values inside one episode, then masked zeros
        n = int(valid.sum())
        assert valid[:n].all() and not valid[n:].any()
        np.testing.assert_array_equal(
            seq.observations[i, :n, 0].numpy(), first[i].item() + np.arange(n)
        )
        assert (seq.observations[i, n:] == 0).all() and (seq.rewards[i, n:] == 0).all()
        last = first[i].item() + n - 1
        assert last in (1004.0, 1102.0) or n == 6  # stopped only at an episode's end
        assert (seq.observations[i, :, 11:] == 0).all()
    assert torch.equal(seq.timesteps[:, 0], (seq.observations[:, 0, 0] % 100).long())


def test_normalizer_inverts_and_keeps_padding_zero(two_env):
    norm = Normalizer.fit(two_env)
    batch = two_env.sample_transitions(64, torch.Generator().manual_seed(0))
    z = norm.normalize_obs(batch.observations, batch.env_idx)
    assert torch.allclose(norm.denormalize_obs(z, batch.env_idx), batch.observations, atol=1e-3)
    assert (z[~batch.obs_mask] == 0).all()
    r = norm.normalize_reward(batch.rewards, batch.env_idx)
    assert torch.allclose(norm.denormalize_reward(r, batch.env_idx), batch.rewards, atol=1e-3)
    # statistics saved with models: a state_dict round trip restores them
    other = Normalizer(2, 17)
    other.load_state_dict(norm.state_dict())
    assert torch.equal(other.obs_mean, norm.obs_mean)


def test_normalizer_fitted_values():
    spec = get_env_spec("hopper")
    rng = np.random.default_rng(0)
    episodes = [random_episode(rng, 400, 11, 3, True) for _ in range(5)]
    norm = Normalizer.fit(MultiEnvDataset([(spec, episodes)]))
    allobs = np.concatenate(
        [e.observations[:-1] for e in episodes] + [episodes[-1].observations[-1:]]
    )
    np.testing.assert_allclose(norm.obs_mean[0].numpy(), allobs.mean(0), atol=1e-5)
    np.testing.assert_allclose(norm.obs_std[0].numpy(), allobs.std(0, ddof=1), rtol=1e-4)


def test_wrong_dims_rejected():
    spec = get_env_spec("hopper")
    rng = np.random.default_rng(0)
    with pytest.raises(GenworldError, match="observation dim 17 disagrees"):
        MultiEnvDataset([(spec, [random_episode(rng, 5, 17, 3, True)])])
