"""The arithmetic of X-Cross: n LoRA adapters applied in one call, and the integrator of one layer."""

from __future__ import annotations

import torch
from torch import nn

PARAMETRISATIONS = ("paper", "fan_in", "normalised")


class StackedLoRALinear(nn.Module):
    """A frozen linear layer with n frozen LoRA adapters, one per stream, in one call.

    Input (n*B, T, d_in), stream-major (rows s*B .. (s+1)*B-1 are stream s).
    Output: base(x) + scaling_s * x A_s^T B_s^T for each stream s.
    LoRA dropout is not applied: the adapters are frozen and used as trained.
    """

    def __init__(self, base: nn.Linear, lora_A: torch.Tensor, lora_B: torch.Tensor, scaling: torch.Tensor):
        super().__init__()
        self.base = base
        n, r, d_in = lora_A.shape  # (n, r, d_in)
        assert lora_B.shape[0] == n and lora_B.shape[2] == r, (lora_A.shape, lora_B.shape)
        self.n_streams = n
        self.register_buffer("lora_A", lora_A.detach().clone())  # (n, r, d_in)
        self.register_buffer("lora_B", lora_B.detach().clone())  # (n, d_out, r)
        self.register_buffer("scaling", scaling.detach().clone().view(n, 1, 1, 1))  # (n, 1, 1, 1)
        for p in self.base.parameters():
            p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)  # (n*B, T, d_out)
        xs = x.view(self.n_streams, -1, *x.shape[1:])  # (n, B, T, d_in)
        a = self.lora_A.to(x.dtype)
        b = self.lora_B.to(x.dtype)
        low = torch.einsum("nbti,nri->nbtr", xs, a)  # (n, B, T, r)
        delta = torch.einsum("nbtr,nor->nbto", low, b) * self.scaling.to(x.dtype)  # (n, B, T, d_out)
        return out + delta.reshape(out.shape).to(out.dtype)  # under autocast, out is bf16: keep it so


class Integrator(nn.Module):
    """Stages 1-3 of one layer: concatenate the n streams per token, scale by W (n*d -> 2n(n-1)),
    refine each stream with the others.

        z = [h_1; ...; h_n] W               alpha_ij = z[pair(i, j)], beta_ij = z[n(n-1) + pair(i, j)]
        h~_i = h_i + lambda1 * sum_{j != i} alpha_ij h_j + lambda2 * sum_{j != i} beta_ij (h_i - h_j)

    Pairs (i, j), j != i, are ordered by i, then j. W starts at zero (h~ = h), no softmax.

    `parametrisation` says how c enters z (all equal the paper's model at the zero start; they differ
    in how far one optimizer step on W moves alpha and beta):
      "paper"       z = c W
      "fan_in"      z = c W / sqrt(n d)
      "normalised"  z = (c / rms(c)) W / (n d), rms over the n d values of the token: an Adam step
                    of size lr on every element of W moves each factor by at most about lr
    """

    def __init__(self, n_streams: int, hidden_size: int, parametrisation: str = "paper"):
        super().__init__()
        if parametrisation not in PARAMETRISATIONS:
            raise ValueError(f"parametrisation must be one of {PARAMETRISATIONS}, got {parametrisation!r}")
        self.n = n_streams
        self.parametrisation = parametrisation
        self.scaling = nn.Linear(n_streams * hidden_size, 2 * n_streams * (n_streams - 1), bias=False)  # W
        nn.init.zeros_(self.scaling.weight)
        others = [[j for j in range(n_streams) if j != i] for i in range(n_streams)]
        self.register_buffer("others", torch.tensor(others, dtype=torch.long), persistent=False)  # (n, n-1)

    def factors(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """h (n, B, T, d) -> alpha, beta, each (n, n-1, B, T): the factor of stream j in stream i."""
        n, b, t, d = h.shape
        c = h.permute(1, 2, 0, 3).reshape(b, t, n * d)  # (B, T, n*d): [h_1; ...; h_n] per token
        if self.parametrisation == "normalised":
            c = c * torch.rsqrt(c.float().pow(2).mean(-1, keepdim=True) + 1e-6).to(c.dtype)  # unit rms per token
        z = self.scaling(c)  # (B, T, 2n(n-1))
        if self.parametrisation != "paper":
            z = z * (1.0 / (n * d) if self.parametrisation == "normalised" else (n * d) ** -0.5)
        pairs = n * (n - 1)
        alpha = z[..., :pairs].reshape(b, t, n, n - 1).permute(2, 3, 0, 1)  # (n, n-1, B, T)
        beta = z[..., pairs:].reshape(b, t, n, n - 1).permute(2, 3, 0, 1)
        return alpha, beta

    def forward(self, h: torch.Tensor, lambda1: float, lambda2: float):
        """h (n, B, T, d) -> (h~ (n, B, T, d), alpha, beta)."""
        alpha, beta = self.factors(h)
        h_others = h[self.others]  # (n, n-1, B, T, d): for stream i, the streams j != i
        refined = h
        if lambda1:
            refined = refined + lambda1 * (alpha.unsqueeze(-1) * h_others).sum(1)
        if lambda2:
            refined = refined + lambda2 * (beta.unsqueeze(-1) * (h.unsqueeze(1) - h_others)).sum(1)
        return refined, alpha, beta
