"""Studies on top of ``genworld table``'s runner: TGW ablations (seed 000 Table 2) and the β
sweep (Fig. 5). Same cells, same resume and parallelism, other algorithm lists."""

from __future__ import annotations

from typing import Any

from genworld.errors import GenworldError
from genworld.train.table import TableConfig, config_for_scale

ABLATIONS = ("tgw", "tgw-no-prompt", "tgw-no-rssm", "tgw-no-ri")
"""Full TGW, w/o prompt (current step only), w/o RSSM (no stochastic state), w/o ri (β = 0)."""
ABLATION_TITLE = "TGW ablations (seed 000, Table 2 layout)"


def ablation_config(scale: str = "mini", **options: Any) -> TableConfig:
    """Table 2: every ablation in single- and multi-env settings (unless ``settings`` given)."""
    if options.get("settings") is None:
        options["settings"] = ("multi", "single")
    return config_for_scale(scale, algos=ABLATIONS, **options)


def sweep_names(values: tuple[float, ...], algo: str = "tgw") -> dict[str, float]:
    """The variant name of each β value (``tgw-beta=0.5``), in order."""
    if not values:
        raise GenworldError("--values is empty: give β values such as 0,0.5,1")
    if any(v < 0 for v in values):
        raise GenworldError(f"β values must be ≥ 0, got {values}")
    return {f"{algo}-beta={v:g}": v for v in values}


def sweep_config(
    values: tuple[float, ...], algo: str = "tgw", scale: str = "mini", **options: Any
) -> TableConfig:
    """Fig. 5: TGW's score against β (risk tolerance, eq. 6), one cell list per value."""
    return config_for_scale(scale, algos=tuple(sweep_names(values, algo)), **options)


def sweep_betas(algos: tuple[str, ...]) -> dict[str, float]:
    """The β of each ``<algo>-beta=<v>`` name of a sweep's table."""
    return {name: float(name.partition("-beta=")[2]) for name in algos}
