"""Published numbers we print next to ours, always marked as a different data source.

Seed 000 (TGW), Table 1: one model per data quality trained on all three envs (multi-env) or
one per env (single-env), 5 seeds, D4RL v2 data (transcribed in PROTOCOL.md). Per baseline the
cells are halfcheetah / hopper / walker2d. Seed 001 (CMT), Table 1: single-env, 3 seeds.
"""

from __future__ import annotations

ENVS = ("halfcheetah", "hopper", "walker2d")


def _cells(text: str) -> dict[str, float]:
    return dict(zip(ENVS, (float(x) for x in text.split("/")), strict=True))


PAPER_TABLE1_MULTI: dict[str, dict[str, dict[str, float]]] = {
    "tgw": {
        "random": _cells("29.7/37.2/31.6"),
        "medium": _cells("41.2/88.4/60.3"),
        "medium-replay": _cells("40.5/70.6/47.3"),
        "medium-expert": _cells("51.1/100.2/86.7"),
    },
    "prompt-dt": {
        "random": _cells("24.3/10.8/17.6"),
        "medium": _cells("45.3/58.9/51.3"),
        "medium-replay": _cells("38.6/56.1/43.2"),
        "medium-expert": _cells("58.2/92.4/75.9"),
    },
    "cql": {
        "random": _cells("12.1/5.7/3.4"),
        "medium": _cells("18.1/49.3/52.7"),
        "medium-replay": _cells("25.1/42.3/25.4"),
        "medium-expert": _cells("46.4/83.2/73.5"),
    },
    "mopo": {
        "random": _cells("18.3/16.7/14.2"),
        "medium": _cells("27.8/27.1/17.8"),
        "medium-replay": _cells("24.2/34.2/18.2"),
        "medium-expert": _cells("42.6/31.7/44.6"),
    },
    "morel": {
        "random": _cells("13.7/23.1/12.6"),
        "medium": _cells("12.4/28.7/28.2"),
        "medium-replay": _cells("18.1/23.9/29.7"),
        "medium-expert": _cells("28.2/42.7/33.7"),
    },
}
"""algo → quality → env → normalized score (seed 000, Table 1, multi-env)."""

PAPER_TABLE1_SINGLE: dict[str, dict[str, dict[str, float]]] = {
    "tgw": {
        "random": _cells("36.2/48.7/38.5"),
        "medium": _cells("46.1/97.5/61.2"),
        "medium-replay": _cells("44.2/82.1/50.7"),
        "medium-expert": _cells("59.3/103.2/84.7"),
    },
    "prompt-dt": {
        "random": _cells("29.3/10.5/18.6"),
        "medium": _cells("47.1/55.3/62.3"),
        "medium-replay": _cells("42.4/60.9/47.1"),
        "medium-expert": _cells("67.2/98.3/103.7"),
    },
    "cql": {
        "random": _cells("35.4/10.8/7.0"),
        "medium": _cells("44.4/86.6/74.5"),
        "medium-replay": _cells("46.2/48.6/32.6"),
        "medium-expert": _cells("62.4/111/98.7"),
    },
    "mopo": {
        "random": _cells("34.4/11.7/13.6"),
        "medium": _cells("42.3/28.0/17.8"),
        "medium-replay": _cells("53.1/67.5/39.0"),
        "medium-expert": _cells("63.3/23.7/44.6"),
    },
    "morel": {
        "random": _cells("25.6/53.6/37.3"),
        "medium": _cells("42.1/95.4/77.8"),
        "medium-replay": _cells("40.2/93.6/49.8"),
        "medium-expert": _cells("53.3/108.7/95.6"),
    },
}
"""algo → quality → env → normalized score (seed 000, Table 1, single-env)."""

CMT_ENVS = ("halfcheetah", "hopper", "walker2d", "ant")
CMT_ALGOS = ("cmt", "cmt-no-pt", "dt", "cql", "iql", "bc")
_CMT_ROWS = {  # quality → per env, CMT with PT / CMT w/o PT / DT / CQL / IQL / BC
    "medium-expert": (
        "92.9/59.8/88.0/91.6/86.7/65.6",
        "106.5/102.0/103.3/105.4/91.5/55.4",
        "97.6/83.5/108.4/108.8/109.6/11.2",
        "101.3/67.1/89.3/115.8/125.6/71.2",
    ),
    "medium": (
        "43.6/40.1/42.1/44.0/47.4/41.6",
        "68.9/62.8/62.0/58.5/66.3/48.6",
        "75.0/69.6/71.6/72.5/78.3/47.8",
        "71.8/61.3/64.6/90.5/102.3/63.7",
    ),
    "medium-replay": (
        "38.7/16.5/36.3/45.5/44.2/2.2",
        "84.9/58.4/67.8/95.0/94.7/30.8",
        "49.5/37.3/47.8/26.7/73.9/5.9",
        "40.6/42.1/61.7/93.9/88.8/30.1",
    ),
}
PAPER_CMT_TABLE1: dict[str, dict[str, dict[str, float]]] = {
    algo: {
        quality: {env: float(cells.split("/")[i]) for env, cells in zip(CMT_ENVS, row, strict=True)}
        for quality, row in _CMT_ROWS.items()
    }
    for i, algo in enumerate(CMT_ALGOS)
}
"""algo → quality → env → normalized score (seed 001, CMT, Table 1: one model per dataset, 3
seeds, D4RL data; BRAC-v's column is left out)."""

PAPER_TGW_MULTI = PAPER_TABLE1_MULTI["tgw"]
PAPER_TABLE1 = {"multi": PAPER_TABLE1_MULTI, "single": PAPER_TABLE1_SINGLE}
SOURCES = {"single": (("TGW", PAPER_TABLE1_SINGLE), ("CMT", PAPER_CMT_TABLE1))}
"""A setting's published tables beside the TGW paper's (single-env: the CMT paper's too)."""


def paper_scores(algo: str, quality: str, env: str, setting: str) -> dict[str, float]:
    """``{paper: number}`` from every published table of the setting that has the cell."""
    tables = SOURCES.get(setting, (("TGW", PAPER_TABLE1[setting]),))
    found = {name: t.get(algo, {}).get(quality, {}).get(env) for name, t in tables}
    return {name: value for name, value in found.items() if value is not None}
