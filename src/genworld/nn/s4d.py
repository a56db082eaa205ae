"""S4D: the diagonal S4 layer of Gu, Gupta, Goel & Ré 2022, "On the Parameterization and
Initialization of Diagonal State Space Models" (arXiv:2206.11893), written as in the authors'
minimal reference ``models/s4/s4d.py`` (state-spaces/s4, commit 2ed46fcf,
https://github.com/state-spaces/s4/blob/2ed46fcf77f2392145ceb801a553367c9111675a/models/s4/s4d.py):
S4D-Lin initialisation ``A_n = -1/2 + i*pi*n``, ``log dt ~ U[log 1e-3, log 1e-1]``, ``C ~ CN(0, 1)``,
ZOH discretisation, the kernel by a Vandermonde product (in real arithmetic), the convolution (the reference's FFT;
here one matmul with the kernel's Toeplitz matrix up to ``TOEPLITZ_MAX_LENGTH`` tokens, faster on
CPU for state-sized sequences), the ``D`` skip, GELU and a GLU output projection. The
convolution is causal along the sequence axis (in the agnostic networks: the dimension axis,
nn/agnostic.py)."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class S4DKernel(nn.Module):
    """The S4D-Lin convolution kernel ``K (H, L)`` from diagonal SSM parameters."""

    def __init__(self, d_model: int, d_state: int, dt_min: float = 1e-3, dt_max: float = 1e-1):
        super().__init__()
        modes = max(d_state // 2, 1)
        log_dt = torch.rand(d_model) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        self.log_dt = nn.Parameter(log_dt)  # (H,)
        self.C = nn.Parameter(torch.view_as_real(torch.randn(d_model, modes, dtype=torch.cfloat)))
        self.log_A_real = nn.Parameter(torch.log(0.5 * torch.ones(d_model, modes)))  # (H, N/2)
        self.A_imag = nn.Parameter(math.pi * torch.arange(modes).float().repeat(d_model, 1))

    def forward(self, length: int) -> torch.Tensor:
        """``K[h, l] = 2 Re(sum_n C_n (exp(dt A_n) - 1) / A_n * exp(dt A_n l))`` (ZOH), written
        in real arithmetic (``exp(a + ib) = e^a (cos b + i sin b)``): the same kernel as the
        reference's complex one, without complex autograd, which costs several times more on
        CPU."""
        dt = self.log_dt.exp()  # (H,)
        a_re, a_im = -self.log_A_real.exp(), self.A_imag  # A = a_re + i a_im, (H, N/2)
        z_re, z_im = a_re * dt[:, None], a_im * dt[:, None]  # dt A
        c_re, c_im = self.C[..., 0], self.C[..., 1]  # (H, N/2)
        # B = (exp(dt A) - 1) / A, then C B
        growth = z_re.exp()
        n_re, n_im = growth * torch.cos(z_im) - 1.0, growth * torch.sin(z_im)
        norm = a_re * a_re + a_im * a_im
        b_re, b_im = (n_re * a_re + n_im * a_im) / norm, (n_im * a_re - n_re * a_im) / norm
        cb_re, cb_im = c_re * b_re - c_im * b_im, c_re * b_im + c_im * b_re
        positions = torch.arange(length, device=dt.device, dtype=dt.dtype)  # (L,)
        magnitude = (z_re[..., None] * positions).exp()  # (H, N/2, L)
        phase = z_im[..., None] * positions  # (H, N/2, L)
        return 2 * (  # Re(C B exp(dt A l))
            torch.einsum("hn,hnl->hl", cb_re, magnitude * torch.cos(phase))
            - torch.einsum("hn,hnl->hl", cb_im, magnitude * torch.sin(phase))
        )  # (H, L)


TOEPLITZ_MAX_LENGTH = 128
"""Up to this sequence length the causal convolution is one batched matmul with the kernel's
Toeplitz matrix; longer ones use the FFT (the matmul is several times faster on CPU at
state-sized lengths; measured: docs/notes/history.md)."""


def causal_conv(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """``y[b, t, h] = sum_{s <= t} k[h, t - s] u[b, s, h]``: ``(B, L, H), (H, L) -> (B, L, H)``."""
    length = u.shape[1]
    if length <= TOEPLITZ_MAX_LENGTH:
        padded = F.pad(k, (length - 1, 0)).flip(-1)  # (H, 2L-1): k reversed, then L-1 zeros
        toeplitz = padded.unfold(-1, length, 1).flip(
            -2
        )  # (H, L_out, L_in): k[h, o - i], 0 if i > o
        per_channel = u.permute(2, 0, 1).contiguous()  # (H, B, L): one matmul per channel
        return torch.bmm(per_channel, toeplitz.transpose(1, 2)).permute(1, 2, 0)  # (B, L, H)
    n = 2 * length  # zero-padded FFT: a linear (not circular) convolution
    spectrum = torch.fft.rfft(u.transpose(1, 2), n=n) * torch.fft.rfft(k, n=n)  # (B, H, n/2+1)
    return torch.fft.irfft(spectrum, n=n)[..., :length].transpose(1, 2)  # (B, L, H)


class S4DBlock(nn.Module):
    """Pre-norm residual S4D layer on ``(B, L, H)``: causal FFT convolution + D skip, GELU, GLU."""

    def __init__(self, d_model: int, d_state: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.kernel = S4DKernel(d_model, d_state)
        self.D = nn.Parameter(torch.randn(d_model))
        self.dropout = nn.Dropout(dropout)
        self.output_linear = nn.Linear(d_model, 2 * d_model)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        u = self.norm(x)  # (B, L, H)
        y = causal_conv(u, self.kernel(x.shape[1])) + u * self.D  # (B, L, H)
        y = self.dropout(F.gelu(y))
        y = F.glu(self.output_linear(y), dim=-1)  # (B, L, H)
        return (x + y) * mask[..., None]  # (B, L, H) padded tokens back to 0


__all__ = ["TOEPLITZ_MAX_LENGTH", "S4DBlock", "S4DKernel", "causal_conv"]
