"""Self-attention that picks the faster kernel for the precision at hand (BERT-family backbones).

Measured on a 2-core AVX-512-BF16 CPU (MiniLM training step, 30 prompts of 92 tokens,
`benchmarks/bench_speed.py`): PyTorch's fused scaled-dot-product attention is the fastest in
float32, but under bf16 autocast its CPU backward is slow (about a third of the step), and
the plain product-softmax-product in bf16 is about 1.6 x faster for the whole step. So:

- a CPU and bf16 inputs: softmax(Q K^T / sqrt(d) + mask) V with bf16 matrix products, the mask
  added in bf16 and the softmax taken in bf16 (its kernel accumulates in float32);
- a CPU in training with attention dropout, any precision: the same products, with the cheap
  dropout mask of `dropout.py` on the attention weights;
- anything else (float32 evaluation, CUDA): transformers' SDPA path, unchanged.

Registered with transformers as the attention implementation "xcross"; `use_fast_attention`
switches a loaded model to it (models without the attention interface, DeBERTa-v2, keep their own).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

from .dropout import dropout as fast_dropout

NAME = "xcross"


def product_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      attention_mask: torch.Tensor | None, scaling: float, dropout: float = 0.0,
                      training: bool = False) -> torch.Tensor:
    """q, k, v (B, H, T, d_head); mask (B, 1, T, T) boolean (True: attend) or None -> (B, T, H, d_head)."""
    scores = torch.matmul(query * scaling, key.transpose(2, 3))  # (B, H, T, T), in the inputs' dtype
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            blocked = torch.zeros(attention_mask.shape, dtype=scores.dtype, device=scores.device)
            attention_mask = blocked.masked_fill_(~attention_mask, torch.finfo(scores.dtype).min)
        scores = scores + attention_mask.to(scores.dtype)  # (B, 1, T, T) broadcast over heads
    weights = nn.functional.softmax(scores, dim=-1)
    weights = fast_dropout(weights, dropout, training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous()  # (B, T, H, d_head)


def xcross_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                     **kwargs):
    """transformers' attention-function signature: returns (output (B, T, H, d_head), None)."""
    if query.device.type == "cpu" and (query.dtype == torch.bfloat16 or (module.training and dropout > 0)):
        scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
        return product_attention(query, key, value, attention_mask, scaling, dropout, module.training), None
    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)


AttentionInterface.register(NAME, xcross_attention)
AttentionMaskInterface.register(NAME, sdpa_mask)  # the same masks as SDPA: boolean, or None without padding


def use_fast_attention(model: nn.Module) -> nn.Module:
    """Switch a transformers model that uses the attention interface (BERT) to "xcross"; others
    are left as they are. Returns the model."""
    if getattr(model.config, "model_type", None) == "bert":
        model.set_attn_implementation(NAME)
    return model
