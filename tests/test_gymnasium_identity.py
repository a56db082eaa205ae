"""The Gymnasium MuJoCo v5 datasets do not depend on the installed Gymnasium release.

The golden digests below were produced under gymnasium 1.0.0 (mujoco 3.3.0, numpy 2.4.6) by
``build_dataset(<id>, steps=3000, seed=0)`` and :func:`dataset_digest`. The test rebuilds each
dataset under the installed Gymnasium and asserts the same bytes: a Gymnasium upgrade that
changes a robot's observations, rewards, terminations or seeding fails here.
"""

from __future__ import annotations

import hashlib

import pytest

from genworld.data.build import build_dataset
from genworld.data.minari_io import read_episodes

GOLDEN_DIGESTS = {
    # produced under gymnasium 1.0.0
    "hopper-medium": "2c67d904ee7f7c1159b5a10db2cfad58a9fe1c7b70289be63e500a5ed8d70692",
    "halfcheetah-random": "c86c911ac67d5251095c5a3887223d12d28761f60bf3e2f856ca893616945d81",
    "walker2d-random": "a3fe0909117378a69ee2863aa33403ddcc2cabede3cb235a37b782caeccfd085",
    "ant-random": "493bc8d6cbbbedccc97ac2e4cd40e77726ec1ed0b4be3c675544fdd48abbe985",
}


def dataset_digest(dataset_id: str) -> str:
    """SHA-256 over every episode's observations, actions, rewards, terminations and
    truncations (shape, dtype and bytes of each, in episode order), read back with genworld's
    own reader."""
    digest = hashlib.sha256()
    for episode in read_episodes(dataset_id):
        for name in ("observations", "actions", "rewards", "terminations", "truncations"):
            array = getattr(episode, name)
            digest.update(f"{name}{array.shape}{array.dtype}".encode())
            digest.update(array.tobytes())
    return digest.hexdigest()


@pytest.mark.parametrize("dataset", sorted(GOLDEN_DIGESTS))
def test_v5_datasets_are_byte_identical_to_gymnasium_1_0(dataset):
    card = build_dataset(dataset, steps=3000, seed=0, show_progress=False)
    assert dataset_digest(card["dataset_id"]) == GOLDEN_DIGESTS[dataset]
