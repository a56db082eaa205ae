"""Device selection: ``auto`` picks CUDA when present, else CPU; never a hard-coded cuda:0."""

from __future__ import annotations

import contextlib

import torch

from genworld.errors import GenworldError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise GenworldError(
            "--device cuda asked for, but no CUDA device is visible; use --device cpu or auto"
        )
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise GenworldError(f"unknown --device {name!r}: use auto, cpu or cuda")
    return torch.device(name)


def fast_cpu_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware (AMX tiles or AVX512-BF16),
    where bfloat16 GEMMs run at several times the float32 rate."""
    return torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()


def fused_optimizer(device: torch.device) -> bool:
    """Whether torch's fused Adam kernels exist for ``device`` (CPU and CUDA: faster steps)."""
    return device.type in ("cpu", "cuda")


def load_optimizer_state(opt: torch.optim.Optimizer, state: dict, device: torch.device) -> None:
    """``opt.load_state_dict(state)``, keeping ``opt``'s fused kernels: a checkpoint saved before
    an optimizer was fused carries ``fused=None`` in its param groups, which would turn them off."""
    opt.load_state_dict(state)
    for group in opt.param_groups:
        if "fused" in group:
            group["fused"] = fused_optimizer(device)


@contextlib.contextmanager
def _temporarily(get, set_, value):
    """``set_(value)`` inside the block, the caller's ``get()`` restored after it."""
    previous = get()
    set_(value)
    try:
        yield
    finally:
        set_(previous)


def torch_threads(n: int):
    """``n`` torch threads inside the block, the caller's setting restored after it (library
    entry points such as ``train_behaviour_policy`` run inside other pipelines)."""
    return _temporarily(torch.get_num_threads, torch.set_num_threads, n)


def simulator_threads():
    """One torch thread while policies act in MuJoCo loops: small batches gain nothing from
    more, and OpenMP's spinning workers take the core the simulator steps on (measured:
    docs/notes/history.md). The caller's setting is restored."""
    return torch_threads(1)


MATMUL_PRECISIONS = ("highest", "high", "medium")
PRECISION_ENV = "GENWORLD_MATMUL_PRECISION"


def set_matmul_precision(name: str | None = None) -> str:
    """torch's float32 matmul precision for this process (workers read
    ``GENWORLD_MATMUL_PRECISION``, which the CLI sets for them). ``highest``: IEEE float32 (the default). ``medium``: inputs
    rounded to bfloat16, products accumulated in float32 (AMX on recent Intel CPUs, tensor cores
    on GPUs): several times the float32 GEMM rate and more updates/s for SAC, IQL, TD3+BC
    (``genworld bench algos``; measured: docs/RESULTS.md). ``None`` applies the environment's
    setting, if any."""
    import os

    name = name or os.environ.get(PRECISION_ENV) or "highest"
    if name not in MATMUL_PRECISIONS:
        raise GenworldError(
            f"matmul precision {name!r}: use {', '.join(MATMUL_PRECISIONS)} "
            f"(--matmul-precision or {PRECISION_ENV})"
        )
    torch.set_float32_matmul_precision(name)
    return name


def matmul_precision(name: str):
    """torch's float32 matmul precision ``name`` inside the block, the caller's restored after
    (work whose numbers must not depend on ``--matmul-precision``, e.g. dataset collection)."""
    return _temporarily(
        torch.get_float32_matmul_precision, torch.set_float32_matmul_precision, name
    )


def maybe_compile(fn, enabled: bool, *, what: str):
    """``torch.compile(fn)`` when ``enabled`` (else ``fn``), with an eager fallback: if compiling
    or running the compiled code fails (no C++ compiler for inductor, an unsupported op), warn
    once and call ``fn`` eagerly from then on, so a run never dies of the optimisation. ``fn``
    must not mutate state before it can fail (a loss computation, not an update)."""
    if not enabled:
        return fn
    import warnings

    current = [torch.compile(fn, dynamic=False)]

    def call(*args, **kwargs):
        if current[0] is fn:
            return fn(*args, **kwargs)
        try:
            return current[0](*args, **kwargs)
        except Exception as exc:  # torch._dynamo / inductor errors of many types
            warnings.warn(
                f"torch.compile of {what} failed ({type(exc).__name__}: {exc}); running eagerly",
                RuntimeWarning,
                stacklevel=2,
            )
            current[0] = fn
            return fn(*args, **kwargs)

    return call
