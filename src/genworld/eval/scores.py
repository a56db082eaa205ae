"""Score summaries: last-k mean and best, per env and averaged (PROTOCOL.md)."""

from __future__ import annotations

import numpy as np


def summarize(
    records: list[dict], env_names: list[str], last_k: int
) -> dict[str, dict[str, float]]:
    """``{env: {last_k_mean, last_k_std, best, best_step}}`` from eval records; ``_mean`` averages envs.

    ``last_k_std`` is the spread of the last k evaluations (one seed); across seeds, aggregate
    the per-seed ``last_k_mean`` values instead.
    """
    if not records:
        return {}
    summary: dict[str, dict[str, float]] = {}
    for env in [*env_names, "_mean"]:
        key = "eval/normalized_score_mean" if env == "_mean" else f"eval/{env}/normalized_score"
        values = np.array([r[key] for r in records])
        tail = values[-last_k:]
        best = int(values.argmax())
        summary[env] = {
            "last_k_mean": float(tail.mean()),
            "last_k_std": float(tail.std()),
            "best": float(values[best]),
            "best_step": int(records[best]["step"]),
            "evaluations": len(values),
            "k": len(tail),
        }
    return summary
