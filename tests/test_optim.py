import copy

import pytest
import torch

from genworld.utils.optim import Minimizer


def _pair(**adam):
    """Two identical nets, one stepped by torch's Adam, one through Minimizer."""
    torch.manual_seed(0)
    a = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    b = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    b.load_state_dict(a.state_dict())
    opt_a = torch.optim.Adam(a.parameters(), lr=1e-2, **adam)
    opt_b = torch.optim.Adam(b.parameters(), lr=1e-2, **adam)
    return a, opt_a, b, opt_b, Minimizer(opt_b)


def _loss(net, seed):
    x = torch.randn(16, 5, generator=torch.Generator().manual_seed(seed))
    return net(x).pow(2).mean()


def _same(a, b):
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


@pytest.mark.parametrize("adam", [{"fused": True}, {"fused": True, "weight_decay": 0.1}, {}])
def test_minimize_matches_torch_adam_bit_for_bit(adam):
    a, opt_a, b, opt_b, minimizer = _pair(**adam)
    for step in range(6):
        if step == 3:  # a scheduler's change is read at the next step
            for opt in (opt_a, opt_b):
                opt.param_groups[0]["lr"] = 3e-3
        opt_a.zero_grad()
        _loss(a, step).backward()
        opt_a.step()
        minimizer.minimize(_loss(b, step))
        assert _same(a, b), step
    assert (minimizer._groups is not None) == bool(adam.get("fused"))
    state_a, state_b = opt_a.state_dict()["state"], opt_b.state_dict()["state"]
    for k in state_a:
        for key in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(state_a[k][key], state_b[k][key])


def test_reloaded_state_and_fallbacks_stay_exact():
    a, opt_a, b, opt_b, minimizer = _pair(fused=True)
    for step in range(2):
        opt_a.zero_grad()
        _loss(a, step).backward()
        opt_a.step()
        minimizer.minimize(_loss(b, step))
    # load_state_dict replaces the state: the cached lists must not be used any more
    saved = {k: v.clone() for k, v in a.state_dict().items()}
    opt_state = copy.deepcopy(opt_a.state_dict())  # else b would share a's tensors
    b.load_state_dict(saved)
    opt_b.load_state_dict(opt_state)
    for step in range(2, 4):
        opt_a.zero_grad()
        _loss(a, step).backward()
        opt_a.step()
        minimizer.minimize(_loss(b, step))
        assert _same(a, b)
    assert minimizer._groups[0].exp_avgs[0] is opt_b.state[next(b.parameters())]["exp_avg"]
    # a step hook makes it call opt.step(), so the hook runs
    calls = []
    handle = opt_b.register_step_post_hook(lambda *_: calls.append(1))
    minimizer.minimize(_loss(b, 9))
    handle.remove()
    assert calls == [1]
    # a parameter without a gradient: torch skips it, and so does the fallback
    frozen = list(b.parameters())[0]
    before = frozen.clone()
    minimizer.zero_grad()
    b[2](torch.relu(torch.randn(4, 8))).sum().backward()
    minimizer.step()
    assert torch.equal(frozen, before)


def test_param_groups_and_partial_gradients_match_torch():
    """CQL's pattern: one optimizer, groups with their own learning rates, and steps where only
    some parameters have gradients (torch skips the others; a parameter's first step creates its
    state)."""
    torch.manual_seed(0)
    nets = [torch.nn.Linear(4, 4) for _ in range(3)]
    twins = [torch.nn.Linear(4, 4) for _ in range(3)]
    for a, b in zip(nets, twins, strict=True):
        b.load_state_dict(a.state_dict())

    def adam(ms):
        groups = [
            {"params": m.parameters(), "lr": lr}
            for m, lr in zip(ms, (1e-2, 1e-3, 3e-2), strict=True)
        ]
        return torch.optim.Adam(groups, fused=True)

    opt_a, opt_b = adam(nets), adam(twins)
    minimizer = Minimizer(opt_b)
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(1))
    # which nets get a gradient at each step: net 2 first trains at step 3
    for step, used in enumerate([(0, 1), (0,), (1,), (0, 1, 2), (2,), (0, 1, 2)]):
        opt_a.zero_grad(set_to_none=True)
        sum(nets[i](x * (step + 1)).pow(2).mean() for i in used).backward()
        opt_a.step()
        minimizer.minimize(sum(twins[i](x * (step + 1)).pow(2).mean() for i in used))
        for a, b in zip(nets, twins, strict=True):
            assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias), step
    assert minimizer._groups is not None and all(s is not None for s in minimizer._groups[2].steps)
