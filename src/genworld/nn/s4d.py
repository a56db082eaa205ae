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

from genworld.nn.dim_tokens import Layout


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


def toeplitz_t(k: torch.Tensor) -> torch.Tensor:
    """The transposed causal Toeplitz matrices ``(H, L_in, L_out)`` of a kernel ``k (H, L)``:
    ``k[h, o - i]`` at ``[h, i, o]``, 0 where ``o < i``."""
    length = k.shape[1]
    padded = F.pad(k, (length - 1, 0))  # (H, 2L-1): L-1 zeros, then k
    return padded.unfold(-1, length, 1).flip(-2)  # window i starts at L-1-i


def causal_conv(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """``y[b, t, h] = sum_{s <= t} k[h, t - s] u[b, s, h]``: ``(B, L, H), (H, L) -> (B, L, H)``."""
    length = u.shape[1]
    if length <= TOEPLITZ_MAX_LENGTH:
        per_channel = u.permute(2, 0, 1).contiguous()  # (H, B, L): one matmul per channel
        return torch.bmm(per_channel, toeplitz_t(k)).permute(1, 2, 0)  # (B, L, H)
    n = 2 * length  # zero-padded FFT: a linear (not circular) convolution
    spectrum = torch.fft.rfft(u.transpose(1, 2), n=n) * torch.fft.rfft(k, n=n)  # (B, H, n/2+1)
    return torch.fft.irfft(spectrum, n=n)[..., :length].transpose(1, 2)  # (B, L, H)


def causal_conv_segments(u: torch.Tensor, layout: Layout, k: torch.Tensor) -> torch.Tensor:
    """:func:`causal_conv` of every sequence of ``u (T, H)`` laid out by ``layout``, with the
    first ``L_g`` lags of ``k (H, L >= every L_g)``: ``(T, H)``. The channels are transposed
    once for all segments, each segment is one batched matmul, and the result stays
    channel-major (``(H, T)`` transposed, as :func:`causal_conv`'s)."""
    channels = u.t().contiguous()  # (H, T)
    outputs = []
    parts = channels.split(layout.sizes, 1) if len(layout.rows) > 1 else [channels]
    for part, rows, length in zip(parts, layout.rows, layout.lengths, strict=True):
        per_channel = part.unflatten(1, (rows, length))  # (H, B_g, L_g)
        if length <= TOEPLITZ_MAX_LENGTH:
            y = torch.bmm(per_channel, toeplitz_t(k[:, :length]))  # (H, B_g, L_g)
        else:
            y = causal_conv(per_channel.permute(1, 2, 0), k[:, :length]).permute(2, 0, 1)
        outputs.append(y.flatten(1))  # (H, B_g L_g)
    return (outputs[0] if len(outputs) == 1 else torch.cat(outputs, 1)).t()  # (T, H)


class S4DBlock(nn.Module):
    """Pre-norm residual S4D layer on token sequences ``(T, H)`` (a :class:`Layout`): causal
    convolution + D skip, GELU, GLU."""

    def __init__(self, d_model: int, d_state: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.kernel = S4DKernel(d_model, d_state)
        self.D = nn.Parameter(torch.randn(d_model))
        self.dropout = nn.Dropout(dropout)
        self.output_linear = nn.Linear(d_model, 2 * d_model)

    def forward(self, x: torch.Tensor, layout: Layout, mask: torch.Tensor | None) -> torch.Tensor:
        """``x (T, H)``: sequences laid out by ``layout``; ``mask (T,)``: True on true tokens (a
        prefix of each sequence), or None where every token is true."""
        u = self.norm(x)  # (T, H)
        k = self.kernel(max(layout.lengths))  # (H, L): one kernel for every segment
        # the D skip u * D is the convolution's lag-0 term: k[:, 0] + D, one pass fewer
        k = torch.cat([k[:, :1] + self.D[:, None], k[:, 1:]], 1)  # (H, L)
        y = self.dropout(F.gelu(causal_conv_segments(u, layout, k)))  # (T, H)
        y = F.glu(self.output_linear(y), dim=-1)  # (T, H)
        return x + y if mask is None else (x + y) * mask[:, None]  # padded tokens back to 0


__all__ = ["TOEPLITZ_MAX_LENGTH", "S4DBlock", "S4DKernel", "causal_conv", "causal_conv_segments"]
