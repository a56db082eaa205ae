"""``genworld bench rssm``: the RSSM world model (``world_models/rssm.py``, WPT's, seed 004) on
synthetic dmc-cheetah-run data (obs 17, actions 6), as ratios to references measured in the same
run:

- training: updates/s of eq. 1 (``model.loss``, backward, fused AdamW, as
  :func:`~genworld.bench.world_model.model_training`) and FLOP/s (torch's FlopCounterMode on one
  update) as a fraction of the fp32 matmul peak, at the rssm ``mini`` preset (deter 128, hidden
  128, Gaussian latents of 16, batch 16 × 33 observations) and, in full mode, the ``full`` preset
  (DreamerV3 S: deter 512, hidden 512, batch 16 × 65); each also with DreamerV3's categorical
  latents (``stoch_dim`` × 32 classes), the size of the peer below;
- the peer: sheeprl's DreamerV3 world model (``sheeprl.algos.dreamer_v3``: ``build_agent`` on
  its ``dreamer_v3`` config with the same widths, layers, latents, batch and sequence length;
  one ``world_model_loss`` + backward + fused Adam step on the same shapes), in its own venv and
  process (``.venv-sheeprl``, or the python named by ``GENWORLD_SHEEPRL_PYTHON``), printing
  JSON: genworld's updates/s (and imagination steps/s) ÷ sheeprl's. Where that venv is absent (CI)
  the peer is skipped with a note and the FLOP/s ÷ peak stands alone. Same-size but not the same
  work: sheeprl also trains a continue head and a 255-bin two-hot reward head (genworld: one
  reward output, no continue head) and symlogs observations; the FLOPs of each are reported;
- imagination: prior rollouts as WPT's actor-critic imagines (``imagine_step`` from every
  posterior state of a training batch, ``batch_size × (seq_len + 1)`` start states, horizon 16,
  no gradients, uniform random actions in place of the actor) in imagined steps/s, against raw
  dm_control stepping of dmc-cheetah-run through genworld's env registry (``make_env``, one env,
  uniform random actions);
- the sequential part: the GRU's latency at the mini batch size. ``observe`` over ``L + 1``
  observations is ``L`` sequential steps of the sequence model (``img_in`` + the LayerNorm GRU
  cell), each followed by the posterior and a sample. Reported: one sequence-model step (forward,
  autograd on), the same step's FLOPs at the matmul peak, one filtering step of ``observe``, and
  forward + backward through the whole ``observe`` loop, as shares of one training update.

  A step at the mini batch is a small GEMM spread over a few dozen small ops forward and as
  many backward, so per-op dispatch and small-GEMM efficiency bound the loop, not arithmetic;
  fewer, larger kernels (a compiled step, CUDA graphs) or more rows per GEMM would move it.

The networks are untrained and the data random: throughput does not depend on the values.

The peer venv (never a dependency of genworld; torch the CPU build; measured with sheeprl 0.8.4
and torch 2.13 CPU, whose ``world_model_loss`` runs without Fabric's training loop)::

    python3.11 -m venv .venv-sheeprl
    .venv-sheeprl/bin/pip install torch --index-url https://download.pytorch.org/whl/cpu
    .venv-sheeprl/bin/pip install sheeprl
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import time
from pathlib import Path

import torch

from genworld.bench.common import (
    BenchResult,
    count_cpu_attention,
    matmul_peak_gflops,
    rate,
    real_steps_per_s,
    synthetic_suite,
)
from genworld.bench.world_model import model_training

ENV = "dmc-cheetah-run"
HORIZON = 16
"""WPT's imagination horizon (App. E; ``WPTConfig.horizon``)."""
PEER_PYTHON_VAR = "GENWORLD_SHEEPRL_PYTHON"
PEER_VENV = Path(__file__).resolve().parents[3] / ".venv-sheeprl"
PEER_TIMEOUT_S = 600


def train_config(scale: str, latent: str):
    from genworld.train.world_model import config_for_scale

    return config_for_scale(scale, check_ids=False, model="rssm", rssm={"latent": latent})


def build(cfg, suite):
    from genworld.data.normalization import Normalizer
    from genworld.train.world_model import build_model

    torch.manual_seed(0)
    return build_model(cfg, suite.specs, Normalizer.fit(suite))


def imagination(model, suite, batch_size: int, iters: int) -> dict[str, float]:
    """Imagined steps/s of ``HORIZON`` prior steps (``imagine_step``, no gradients) from every
    posterior state of one training batch, as WPT's actor-critic starts them."""
    from genworld.world_models.rssm import RSSMState

    g = torch.Generator().manual_seed(0)
    batch = model.sample_batch(suite, batch_size, g)
    with torch.no_grad():
        w = model.observe_batch(batch, g)
    env = batch.env_idx[:, None].expand(w.deter.shape[:2]).flatten()
    start = RSSMState(w.deter.flatten(0, 1), w.stoch.flatten(0, 1), env)
    actions = torch.rand(HORIZON, len(env), suite.act_max, generator=g) * 2 - 1

    def rollout() -> None:
        with torch.no_grad():
            state = start
            for a in actions:
                state = model.imagine_step(state, a, g)

    return {
        "start_states": len(env),
        "horizon": HORIZON,
        "imagined_steps_per_s": len(env) * HORIZON * rate(rollout, iters, warmup=1),
    }


def sequential(model, suite, cfg, update_s: float, peak: float, iters: int) -> dict[str, float]:
    """The recurrent part at ``cfg.batch_size``: one sequence-model step ``_step`` (forward,
    autograd on), its FLOPs at the matmul peak, one filtering step of ``observe`` and forward +
    backward through ``observe``'s loop, in ms and as shares of one update (``update_s``)."""
    from torch.utils.flop_counter import FlopCounterMode

    b, rssm = cfg.batch_size, cfg.rssm
    g = torch.Generator().manual_seed(0)
    deter, stoch = torch.randn(b, rssm.deter_dim), torch.randn(b, rssm.latent_width)
    act = torch.rand(b, model.act_max) * 2 - 1
    count_cpu_attention()
    counter = FlopCounterMode(display=False)
    with counter:
        model._step(deter, stoch, act)
    step_s = 1 / rate(lambda: model._step(deter, stoch, act), 50 * iters)
    batch = model.sample_batch(suite, b, g)

    def observe_forward_backward() -> None:
        w = model.observe_batch(batch, g)
        (w.deter.sum() + w.stoch.sum()).backward()

    observe_s = 1 / rate(lambda: model.observe_batch(batch, g), iters)
    loop_s = 1 / rate(observe_forward_backward, iters)
    model.zero_grad(set_to_none=True)
    steps = rssm.seq_len  # L + 1 observations: L GRU steps after h_0
    return {
        "batch_size": b,
        "gru_steps_per_update": steps,
        "gru_step_ms": 1e3 * step_s,
        "gru_step_mflops": counter.get_total_flops() / 1e6,
        "gru_step_at_peak_ms": counter.get_total_flops() / (peak * 1e9) * 1e3,
        "observe_step_ms": 1e3 * observe_s / (steps + 1),
        "observe_forward_backward_ms": 1e3 * loop_s,
        "update_ms": 1e3 * update_s,
        "gru_steps_share_of_update": steps * step_s / update_s,
        "observe_forward_backward_share_of_update": loop_s / update_s,
    }


# ------------------------------------------------------------------ the peer (its own venv)
def peer_python() -> Path | None:
    path = Path(os.environ.get(PEER_PYTHON_VAR) or PEER_VENV / "bin" / "python")
    return path if path.exists() else None


def peer_sizes(configs: dict, threads: int, iters: int) -> dict:
    """What the peer process builds: each categorical config's sizes."""
    from genworld.envs import get_env_spec

    spec = get_env_spec(ENV)
    sizes = {
        name: {
            "deter": cfg.rssm.deter_dim,
            "hidden": cfg.rssm.hidden,
            "mlp_layers": cfg.rssm.mlp_layers,
            "stoch": cfg.rssm.stoch_dim,
            "classes": cfg.rssm.classes,
            "seq_len": cfg.rssm.seq_len,
            "batch_size": cfg.batch_size,
            "obs_dim": spec.obs_dim,
            "act_dim": spec.act_dim,
        }
        for name, cfg in configs.items()
    }
    return {"threads": threads, "iters": iters, "horizon": HORIZON, "sizes": sizes}


def run_peer(python: Path, spec: dict) -> dict:
    """:func:`sheeprl_peer` in ``python``'s process (isolated mode: nothing of genworld on its
    path); its JSON, or ``{"error": …}``."""
    source = inspect.getsource(sheeprl_peer)
    code = f"{source}\nimport json, sys\nprint(json.dumps(sheeprl_peer(json.loads(sys.argv[1]))))"
    try:
        done = subprocess.run(
            [str(python), "-I", "-c", code, json.dumps(spec)],
            capture_output=True,
            text=True,
            timeout=PEER_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {PEER_TIMEOUT_S} s"}
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit {done.returncode}: {tail}"}
    try:
        return json.loads(lines[-1])
    except json.JSONDecodeError:
        return {"error": f"no JSON: {lines[-1][:200]}"}


def sheeprl_peer(spec: dict) -> dict:
    """Runs in the sheeprl venv: for each size, sheeprl's DreamerV3 world model from its own
    ``build_agent`` and ``dreamer_v3`` config, then its updates/s (``world_model_loss``,
    backward, fused Adam), FLOPs per update, imagination steps/s (``rssm.imagination`` from every
    posterior state of the batch, random actions, no gradients) and its sequence-model step."""
    import importlib.metadata
    import time

    import gymnasium as gym
    import numpy as np
    import torch
    from hydra import compose, initialize_config_module
    from lightning.fabric import Fabric
    from omegaconf import OmegaConf
    from sheeprl.algos.dreamer_v3.agent import build_agent
    from sheeprl.algos.dreamer_v3.dreamer_v3 import world_model_loss, world_model_loss_kwargs
    from sheeprl.utils.utils import dotdict
    from torch.utils.flop_counter import FlopCounterMode

    def per_s(fn, iters, warmup=1):
        for _ in range(warmup):
            fn()
        start = time.perf_counter()
        for _ in range(iters):
            fn()
        return iters / (time.perf_counter() - start)

    def measure(s: dict) -> dict:
        """One size's figures."""
        wm_key = "algo.world_model"
        overrides = [
            "exp=dreamer_v3",
            "env=dmc",
            "algo.cnn_keys.encoder=[]",
            "algo.cnn_keys.decoder=[]",
            "algo.mlp_keys.encoder=[state]",
            "algo.mlp_keys.decoder=[state]",
            f"algo.dense_units={s['hidden']}",
            f"algo.mlp_layers={s['mlp_layers']}",
            f"{wm_key}.recurrent_model.recurrent_state_size={s['deter']}",
            f"{wm_key}.transition_model.hidden_size={s['hidden']}",
            f"{wm_key}.representation_model.hidden_size={s['hidden']}",
            f"{wm_key}.stochastic_size={s['stoch']}",
            f"{wm_key}.discrete_size={s['classes']}",
        ]
        with initialize_config_module("sheeprl.configs", version_base="1.3"):
            cfg = dotdict(OmegaConf.to_container(compose("config", overrides), resolve=True))
        torch.manual_seed(0)
        box = gym.spaces.Box(-np.inf, np.inf, (s["obs_dim"],), np.float32)
        fabric = Fabric(accelerator="cpu", devices=1, precision="32-true")
        wm = build_agent(fabric, (s["act_dim"],), True, cfg, gym.spaces.Dict({"state": box}))[0]
        length, b = s["seq_len"] + 1, s["batch_size"]
        data = {
            "state": torch.randn(length, b, s["obs_dim"]),
            "actions": torch.rand(length, b, s["act_dim"]) * 2 - 1,
            "rewards": torch.randn(length, b, 1),
            "terminated": torch.zeros(length, b, 1),
            "is_first": torch.zeros(length, b, 1),
        }
        data["is_first"][0] = 1.0
        opt = torch.optim.Adam(wm.parameters(), lr=1e-4, fused=True)
        kwargs = world_model_loss_kwargs(cfg)

        def update():
            loss = world_model_loss(wm, data, **kwargs, entropies=False)[0]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        update()
        counter = FlopCounterMode(display=False)
        with counter:
            update()
        updates = per_s(update, spec["iters"])
        with torch.no_grad():
            _, posteriors, recurrent, _ = world_model_loss(wm, data, **kwargs, entropies=False)
        width = s["stoch"] * s["classes"]
        prior0, rec0 = posteriors.reshape(1, -1, width), recurrent.reshape(1, -1, s["deter"])
        actions = torch.rand(spec["horizon"], 1, prior0.shape[1], s["act_dim"]) * 2 - 1

        def rollout():
            with torch.no_grad():
                prior, rec = prior0, rec0
                for a in actions:
                    prior, rec = wm.rssm.imagination(prior, rec, a)
                    prior = prior.view(1, -1, width)

        step_in = torch.cat([torch.randn(1, b, width), torch.rand(1, b, s["act_dim"])], -1)
        step_h = torch.randn(1, b, s["deter"])
        steps = per_s(lambda: wm.rssm.recurrent_model(step_in, step_h), 50 * spec["iters"])
        return {
            "updates_per_s": updates,
            "gflops_per_update": counter.get_total_flops() / 1e9,
            "gflop_per_s": counter.get_total_flops() * updates / 1e9,
            "imagined_steps_per_s": prior0.shape[1]
            * spec["horizon"]
            * per_s(rollout, spec["iters"]),
            "gru_step_ms": 1e3 / steps,
        }

    torch.set_num_threads(spec["threads"])
    sizes = {name: measure(s) for name, s in spec["sizes"].items()}
    return {"version": importlib.metadata.version("sheeprl"), "sizes": sizes}


# ------------------------------------------------------------------ the benchmark
def run(quick: bool = False) -> BenchResult:
    iters = 3 if quick else 10
    threads = torch.get_num_threads()
    peak = matmul_peak_gflops(repeats=5 if quick else 20)
    real = real_steps_per_s(ENV, 2_000 if quick else 10_000)
    suite = synthetic_suite((ENV,), steps=300 if quick else 1000, episodes=2)
    res = BenchResult(
        "rssm",
        {
            "env": ENV,
            "threads": threads,
            "matmul_peak_gflops": peak,
            "real_dmc_steps_per_s": real,
            "configs": {},
        },
    )
    res.notes.append(
        f"rssm: fp32 matmul peak {peak:.0f} GFLOP/s, raw {ENV} stepping (make_env, random "
        f"actions) {real:,.0f} steps/s on {threads} thread(s) (the references)"
    )
    configs = {}
    for scale in ("mini",) if quick else ("mini", "full"):
        configs[scale] = train_config(scale, "gaussian")  # the preset
        configs[f"{scale}-categorical"] = train_config(scale, "categorical")  # the peer's latents
    for name, cfg in configs.items():
        model = build(cfg, suite)
        train = model_training(model, suite, cfg.batch_size, cfg.lr, iters)
        imagined = imagination(model, suite, cfg.batch_size, iters)
        r = cfg.rssm
        res.figures["configs"][name] = {
            "size": {
                "deter": r.deter_dim,
                "hidden": r.hidden,
                "latent": r.latent,
                "latent_width": r.latent_width,
                "seq_len": r.seq_len,
                "batch_size": cfg.batch_size,
            },
            "training": {**train, "fraction_of_matmul_peak": train["gflop_per_s"] / peak},
            "imagination": {**imagined, "ratio": imagined["imagined_steps_per_s"] / real},
        }
        res.notes.append(
            f"rssm/{name}: deter {r.deter_dim}, hidden {r.hidden}, {r.latent} latents "
            f"({r.latent_width} wide), batch {cfg.batch_size} x {r.seq_len + 1} observations: "
            f"{train['updates_per_s']:.2f} updates/s, {train['gflops_per_update']:.2f} GFLOP "
            "per update"
        )
        if name == "mini":
            seq = sequential(model, suite, cfg, 1 / train["updates_per_s"], peak, iters)
            res.figures["sequential"] = seq
    peer_figures(
        res, {k: v for k, v in configs.items() if k.endswith("-categorical")}, threads, iters
    )
    for name, fig in res.figures["configs"].items():
        train, imagined = fig["training"], fig["imagination"]
        peer = fig.get("peer_training_ratio")
        versus = f" = {peer:.2f}x sheeprl's DreamerV3 world model" if peer else ""
        res.ratios.append(
            f"rssm/training-{name}: {train['gflop_per_s']:.1f} GFLOP/s = "
            f"{train['fraction_of_matmul_peak']:.2f}x the fp32 matmul peak; "
            f"{train['updates_per_s']:.2f} updates/s{versus}"
        )
        res.ratios.append(
            f"rssm/imagination-{name}: {imagined['start_states']} start states x horizon "
            f"{HORIZON}: {imagined['imagined_steps_per_s']:,.0f} steps/s = "
            f"{imagined['ratio']:.2f}x raw {ENV} stepping"
            + (
                f" ({fig['peer_imagination_ratio']:.2f}x sheeprl's)"
                if "peer_imagination_ratio" in fig
                else ""
            )
        )
    seq = res.figures["sequential"]
    res.notes.append(
        f"rssm/sequential-mini: one GRU step (img_in + LayerNorm GRU cell, forward) "
        f"{seq['gru_step_ms']:.3f} ms at batch {seq['batch_size']} for "
        f"{seq['gru_step_mflops']:.1f} MFLOP ({seq['gru_step_at_peak_ms']:.3f} ms at the matmul "
        f"peak); one observe step {seq['observe_step_ms']:.3f} ms; the update "
        f"{seq['update_ms']:.1f} ms"
    )
    res.ratios.append(
        f"rssm/sequential-mini: {seq['gru_steps_per_update']} GRU steps = "
        f"{seq['gru_steps_share_of_update']:.2f} of an update (forward); forward + backward "
        f"through observe's loop = {seq['observe_forward_backward_share_of_update']:.2f} of it"
    )
    return res


def peer_figures(res: BenchResult, configs: dict, threads: int, iters: int) -> None:
    """sheeprl's figures and genworld ÷ sheeprl ratios into ``res`` (or a note why not)."""
    python = peer_python()
    if python is None:
        reason = (
            f"no sheeprl venv ({PEER_VENV.name}/ or ${PEER_PYTHON_VAR}): see "
            "genworld.bench.rssm's docstring to build it"
        )
        res.figures["peer"] = {"name": "sheeprl", "available": False, "note": reason}
        res.notes.append(f"rssm: peer unavailable, {reason}; FLOP/s ÷ peak stands alone")
        return
    start = time.perf_counter()
    out = run_peer(python, peer_sizes(configs, threads, iters))
    if "error" in out:
        res.figures["peer"] = {"name": "sheeprl", "available": False, "note": out["error"]}
        res.notes.append(f"rssm: peer unavailable, sheeprl failed: {out['error']}")
        return
    res.figures["peer"] = {
        "name": "sheeprl",
        "available": True,
        "version": out["version"],
        "seconds": time.perf_counter() - start,
        "configs": out["sizes"],
    }
    for name, theirs in out["sizes"].items():
        fig = res.figures["configs"][name]
        theirs["fraction_of_matmul_peak"] = (
            theirs["gflop_per_s"] / res.figures["matmul_peak_gflops"]
        )
        fig["peer_training_ratio"] = fig["training"]["updates_per_s"] / theirs["updates_per_s"]
        fig["peer_imagination_ratio"] = (
            fig["imagination"]["imagined_steps_per_s"] / theirs["imagined_steps_per_s"]
        )
        res.notes.append(
            f"rssm/sheeprl-{name}: sheeprl {out['version']} DreamerV3 world model at the same "
            f"size (+ continue head, 255-bin reward head): {theirs['updates_per_s']:.2f} "
            f"updates/s, {theirs['gflops_per_update']:.2f} GFLOP per update "
            f"({theirs['fraction_of_matmul_peak']:.2f}x peak), imagination "
            f"{theirs['imagined_steps_per_s']:,.0f} steps/s, GRU step "
            f"{theirs['gru_step_ms']:.3f} ms"
        )
