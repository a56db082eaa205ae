"""Score summaries: last-k mean and best, per env and averaged (PROTOCOL.md)."""

from __future__ import annotations

from collections import Counter

import numpy as np


def summarize(
    records: list[dict], env_names: list[str], last_k: int
) -> dict[str, dict[str, float]]:
    """``{env: {last_k_mean, last_k_std, best, best_step}}`` from eval records; ``_mean`` averages envs.

    ``last_k_std`` is the spread of the last k evaluations (one seed); across seeds, aggregate
    the per-seed ``last_k_mean`` values instead. An env whose records carry a success rate
    (Meta-World) also gets ``last_k_success_rate``, the mean of its last k.
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
        success_key = f"eval/{env}/success_rate"
        if all(success_key in r for r in records):
            rates = np.array([r[success_key] for r in records])
            summary[env]["last_k_success_rate"] = float(rates[-last_k:].mean())
    return summary


PRECISION_NAMES = {
    "highest": "highest (IEEE float32)",
    "high": "high (TF32-class inputs)",
    "medium": "medium (bfloat16 inputs, float32 accumulation)",
}


def precision_note(results: list[dict]) -> str:
    """One sentence on the float32 matmul precision the cells trained with (``--matmul-precision``;
    each cell records it in its result), so a report says when numbers mix precisions."""
    counts = Counter(r.get("matmul_precision", "unrecorded") for r in results)
    parts = [
        f"{PRECISION_NAMES.get(name, name)}: {n} cell{'s' if n != 1 else ''}"
        for name, n in sorted(counts.items())
    ]
    return "Matmul precision (`--matmul-precision`): " + "; ".join(parts) + "."
