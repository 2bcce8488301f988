"""Baselines that mix the same frozen source adapters inside one stream (DESIGN.md section 5).

- XLoRA-style: a first pass of the frozen backbone without adapters; a classifier on its last
  hidden states gives, per token, a softmax over the adapters for every layer; the second pass
  weights each layer's LoRA deltas by them.
- MeteoRA-style: per layer, a gate (linear on the layer's input hidden states, softmax, top-k)
  weights the adapters of that layer's projections, per token.

Backbone and adapters are frozen; the classifier or the gates train, with the pooler and scorer
started from the best source model. Gates start at zero: every adapter weighted 1/n.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .backbones import Backbone
from .scorer import ScoresFromEncode, Scorer, TrainableState
from .xcross.model import _get, _set, lora_modules

KINDS = ("xlora", "meteora")


class GatedLoRALinear(nn.Module):
    """A frozen linear layer with n frozen adapters mixed per token:
    base(x) + sum_s g_s * scaling_s * x A_s^T B_s^T, with g (B, T, n) set before each pass
    (`gate`; None: no adapters at all, the plain backbone)."""

    def __init__(self, base: nn.Linear, lora_A: torch.Tensor, lora_B: torch.Tensor, scaling: torch.Tensor):
        super().__init__()
        self.base = base
        self.register_buffer("lora_A", lora_A.detach().clone())  # (n, r, d_in)
        self.register_buffer("lora_B", lora_B.detach().clone())  # (n, d_out, r)
        self.register_buffer("scaling", scaling.detach().clone().view(-1, 1, 1, 1))  # (n, 1, 1, 1)
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.gate: torch.Tensor | None = None  # (B, T, n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)  # (B, T, d_out)
        if self.gate is None:
            return out
        low = torch.einsum("bti,nri->nbtr", x, self.lora_A.to(x.dtype))  # (n, B, T, r)
        delta = torch.einsum("nbtr,nor->nbto", low, self.lora_B.to(x.dtype)) * self.scaling.to(x.dtype)
        return out + torch.einsum("btn,nbto->bto", self.gate.to(x.dtype), delta).to(out.dtype)


def top_k_softmax(logits: torch.Tensor, k: int | None) -> torch.Tensor:
    """Softmax over the last axis, keeping the k largest weights (renormalised); None keeps all."""
    weights = logits.softmax(-1)
    if k is None or k >= logits.shape[-1]:
        return weights
    kept = weights.topk(k, dim=-1)
    sparse = torch.zeros_like(weights).scatter(-1, kept.indices, kept.values)
    return sparse / sparse.sum(-1, keepdim=True)


class AdapterMixture(ScoresFromEncode, TrainableState, nn.Module):
    """XLoRA-style (`kind="xlora"`) or MeteoRA-style (`kind="meteora"`) mixing of n source adapters."""

    def __init__(self, backbone: Backbone, sources: list[Scorer], kind: str = "meteora", top_k: int | None = None,
                 head_from: int = 0):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if len(sources) < 2:
            raise ValueError("a mixture needs at least two source models")
        if len({s.config.encoding for s in sources}) != 1:
            raise ValueError("the source models must share one encoding")
        self.kind, self.top_k, self.n = kind, top_k, len(sources)
        self.scorer_config = sources[0].config
        self.tokenizer, self.backbone_name = backbone.tokenizer, backbone.name
        self.encoder = backbone.model
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        per_source = [lora_modules(s) for s in sources]
        self.gated: dict[str, GatedLoRALinear] = {}
        for name in sorted(per_source[0]):
            layers = [m[name] for m in per_source]
            module = GatedLoRALinear(_get(self.encoder, name),
                                     torch.stack([m.lora_A["default"].weight for m in layers]),
                                     torch.stack([m.lora_B["default"].weight for m in layers]),
                                     torch.tensor([m.scaling["default"] for m in layers], dtype=torch.float32))
            _set(self.encoder, name, module)
            self.gated[name] = module
        self.layer_of = {name: int(name.split("encoder.layer.")[1].split(".")[0]) for name in self.gated}
        n_layers, d = backbone.num_layers, backbone.hidden_size
        if kind == "xlora":
            self.classifier = nn.Linear(d, n_layers * self.n)  # last hidden state -> per-layer adapter logits
            nn.init.zeros_(self.classifier.weight)
            nn.init.zeros_(self.classifier.bias)
        else:
            self.gates = nn.ModuleList(nn.Linear(d, self.n) for _ in range(n_layers))
            for gate in self.gates:
                nn.init.zeros_(gate.weight)
                nn.init.zeros_(gate.bias)
            for i, block in enumerate(self.encoder.encoder.layer):
                block.register_forward_pre_hook(self._gate_hook(i), with_kwargs=True)
        self.head = copy.deepcopy(sources[head_from].head)
        for p in self.head.parameters():
            p.requires_grad_(True)

    def _set_gates(self, per_layer) -> None:
        for name, module in self.gated.items():
            module.gate = None if per_layer is None else per_layer(self.layer_of[name])

    def _gate_hook(self, layer: int):
        def hook(module, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]  # the layer's input (B, T, d)
            weights = top_k_softmax(self.gates[layer](hidden), self.top_k)  # (B, T, n)
            for name, m in self.gated.items():
                if self.layer_of[name] == layer:
                    m.gate = weights
        return hook

    def encode(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        """Last hidden states (B, T, d) with the adapters mixed."""
        kwargs = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        if self.kind == "xlora":
            self._set_gates(None)
            with torch.no_grad():  # the frozen backbone alone: no gradient needed
                plain = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state
            b, t, _ = plain.shape
            weights = top_k_softmax(self.classifier(plain).view(b, t, -1, self.n), self.top_k)  # (B, T, L, n)
            self._set_gates(lambda layer: weights[:, :, layer])
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state
        self._set_gates(None)  # no stale gates (and their graphs) between passes
        return hidden

    def parameter_counts(self) -> dict[str, int]:
        mixing = self.classifier if self.kind == "xlora" else self.gates
        weights = sum(p.numel() for p in mixing.parameters())
        return {"mixing": weights, "per_layer": weights // len(self.encoder.encoder.layer), "without_head": weights,
                "head": sum(p.numel() for p in self.head.parameters()),
                "trainable": sum(p.numel() for p in self.parameters() if p.requires_grad)}


def head_only(model: Scorer) -> Scorer:
    """The Pooler + Scorer baseline: a source model whose adapter is frozen, only its head trains."""
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith("head."))
    return model
