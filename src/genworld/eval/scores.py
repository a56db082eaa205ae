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


def _cells(n: int) -> str:
    return f"{n} cell{'s' if n != 1 else ''}"


def precision_counts(results: list[dict]) -> dict[str, dict[str, int]]:
    """How many cells ran at each precision: ``matmul`` (the float32 matmul precision,
    ``--matmul-precision``) and each part an agent runs at a precision it resolves itself
    (``numerics`` in a cell's result, e.g. CQL's ``ood_precision``, which ``auto`` sets by the
    machine's CPU). A part counts the cells of the algorithms that record it; their cells
    written before it was recorded count as ``unrecorded``."""
    counts = {"matmul": dict(Counter(r.get("matmul_precision", "unrecorded") for r in results))}
    algo = [r.get("algo", r.get("method")) for r in results]
    parts: dict[str, set] = {}
    for r, a in zip(results, algo, strict=True):
        for part in r.get("numerics") or {}:
            parts.setdefault(part, set()).add(a)
    for part, algos in sorted(parts.items()):
        values = [
            (r.get("numerics") or {}).get(part, "unrecorded")
            for r, a in zip(results, algo, strict=True)
            if a in algos
        ]
        counts[part] = dict(Counter(values))
    return counts


def precision_note(results: list[dict]) -> str:
    """One sentence on the precisions the cells trained with (:func:`precision_counts`), so a
    report says when numbers mix precisions."""
    counts = precision_counts(results)
    matmul = [
        f"{PRECISION_NAMES.get(name, name)}: {_cells(n)}"
        for name, n in sorted(counts.pop("matmul").items())
    ]
    note = "Matmul precision (`--matmul-precision`): " + "; ".join(matmul) + "."
    for part, values in counts.items():
        spread = "; ".join(f"{name}: {_cells(n)}" for name, n in sorted(values.items()))
        recorded = set(values) - {"unrecorded"}
        mixed = " (mixed: these cells are not the same computation)" if len(recorded) > 1 else ""
        note += f" `{part}`, resolved per machine: {spread}{mixed}."
    return note
