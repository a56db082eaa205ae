"""A lean call path for torch's fused Adam: the same kernel and maths, less Python per step.

``torch.optim.Adam(fused=True).step()`` spends tens of microseconds of Python per call around
its fused kernel (hooks, profiler ranges, grouping tensors by device and dtype, reading the state
dict), and ``zero_grad`` more: a visible share of a small offline-RL update on CPU (measured:
docs/notes/history.md). :class:`Minimizer`
keeps the optimizer (its state, checkpoints and ``load_state_dict`` untouched) and calls
``torch._fused_adam_`` itself, per param group, on the parameters that have a gradient (as
torch does), with tensor lists it caches once the optimizer has state. It calls ``opt.step()``
instead whenever the fast path would not be exact: step hooks registered, a parameter with a
gradient but no state yet (its first step), options not passed here (amsgrad, maximize,
capturable, differentiable, tensor hyper-parameters, AdamW, not fused), mixed devices or dtypes
in a group. A state or param group replaced by ``load_state_dict`` rebuilds the lists. Learning
rates are read at every step (schedulers). Tests compare both paths bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.optim.optimizer import _global_optimizer_post_hooks, _global_optimizer_pre_hooks

_UNSUPPORTED = ("amsgrad", "maximize", "capturable", "differentiable", "decoupled_weight_decay")


@dataclass
class _Group:
    group: dict
    params: list[torch.Tensor]
    exp_avgs: list[torch.Tensor | None]
    exp_avg_sqs: list[torch.Tensor | None]
    steps: list[torch.Tensor | None]


class Minimizer:
    """``minimize(loss)``: clear the gradients, ``loss.backward()``, one Adam step (optionally
    after clipping each param group's gradient norm)."""

    def __init__(self, opt: torch.optim.Optimizer):
        self.opt = opt
        self._params = [p for group in opt.param_groups for p in group["params"]]
        self._groups: list[_Group] | None = None
        """Cached tensor lists per param group; None: ``opt.step()`` (options not passed)."""
        self._seen: tuple = ()
        """(state, param_groups, their count) that ``_groups`` was built for."""

    def minimize(self, loss: torch.Tensor, max_grad_norm: float = 0.0) -> None:
        """``max_grad_norm`` > 0: each param group's gradient norm is clipped to it before the
        step (one network per group: a per-network clip)."""
        self.zero_grad()
        loss.backward()
        if max_grad_norm > 0:
            for group in self.opt.param_groups:
                torch.nn.utils.clip_grad_norm_(group["params"], max_grad_norm)
        self.step()

    def zero_grad(self) -> None:
        for p in self._params:
            p.grad = None

    def step(self) -> None:
        groups = self._cached_groups()
        if groups is None or not self._fast_step(groups):
            self.opt.step()

    def _fast_step(self, groups: list[_Group]) -> bool:
        calls = []
        for g in groups:
            rows = [i for i, p in enumerate(g.params) if p.grad is not None]
            if not rows:
                continue
            if any(g.steps[i] is None for i in rows):
                self._seen = ()  # a parameter's first step: torch creates its state, then
                return False  # the lists are rebuilt
            if len(rows) == len(g.params):
                calls.append((g, g.params, g.exp_avgs, g.exp_avg_sqs, g.steps))
            else:
                lists = (g.params, g.exp_avgs, g.exp_avg_sqs, g.steps)
                calls.append((g, *([xs[i] for i in rows] for xs in lists)))
        with torch.no_grad():
            for g, params, exp_avgs, exp_avg_sqs, steps in calls:
                beta1, beta2 = g.group["betas"]
                torch._foreach_add_(steps, 1)
                torch._fused_adam_(
                    params,
                    [p.grad for p in params],
                    exp_avgs,
                    exp_avg_sqs,
                    [],
                    steps,
                    amsgrad=False,
                    lr=g.group["lr"],
                    beta1=beta1,
                    beta2=beta2,
                    weight_decay=g.group["weight_decay"],
                    eps=g.group["eps"],
                    maximize=False,
                )
        return True

    def _cached_groups(self) -> list[_Group] | None:
        """The cached lists (rebuilt when the state or the param groups were replaced), or None
        where ``opt.step()`` must run (hooks, options the fast path does not pass)."""
        opt = self.opt
        if (
            opt._optimizer_step_pre_hooks
            or opt._optimizer_step_post_hooks
            or _global_optimizer_pre_hooks
            or _global_optimizer_post_hooks
        ):
            return None
        seen = (opt.state, opt.param_groups, len(opt.param_groups))
        same = self._seen and all(a is b for a, b in zip(seen[:2], self._seen[:2], strict=True))
        if same and seen[2] == self._seen[2]:
            return self._groups  # None: rejected, opt.step() for these groups
        if all(_fusable(opt, group) for group in opt.param_groups):
            self._groups = [_lists(opt, group) for group in opt.param_groups]
        else:
            self._groups = None
        self._seen = seen
        return self._groups


def _fusable(opt: torch.optim.Optimizer, group: dict) -> bool:
    if type(opt) is not torch.optim.Adam or not group.get("fused"):
        return False
    if any(group.get(k) for k in _UNSUPPORTED):
        return False
    if any(isinstance(v, torch.Tensor) for v in (group["lr"], group["eps"], *group["betas"])):
        return False
    return len({(p.device, p.dtype) for p in group["params"]}) <= 1


def _lists(opt: torch.optim.Optimizer, group: dict) -> _Group:
    states = [opt.state.get(p) or {} for p in group["params"]]
    return _Group(
        group,
        list(group["params"]),
        [s.get("exp_avg") for s in states],
        [s.get("exp_avg_sq") for s in states],
        [s.get("step") for s in states],
    )
