"""X-Cross over one frozen backbone and n frozen source models (DESIGN.md section 4).

The n streams run as one batch of n*B rows (stream-major) through every layer; each LoRA-adapted
projection applies the n adapters in one call (StackedLoRALinear). After each of the top K layers
(or each adapted projection there), an Integrator mixes the streams. After the last layer the
streams are summed with learnable weights w (start 1/n) and scored by the pooler and scorer of the
best source model. Trainable: every W, w, pooler and scorer; frozen: backbone and adapters.
"""

from __future__ import annotations

import copy

import torch
from peft.tuners.lora import LoraLayer
from torch import nn

from ..backbones import Backbone
from ..scorer import ScoresFromEncode, Scorer, TrainableState
from .config import XCrossConfig
from .layer import Integrator, StackedLoRALinear


def _get(module: nn.Module, dotted: str) -> nn.Module:
    for part in dotted.split("."):
        module = getattr(module, part)
    return module


def _set(module: nn.Module, dotted: str, child: nn.Module) -> None:
    parent, _, name = dotted.rpartition(".")
    setattr(_get(module, parent) if parent else module, name, child)


def lora_modules(source: Scorer) -> dict[str, LoraLayer]:
    """{name in the plain backbone: peft LoRA layer} of a source model."""
    prefix = "base_model.model."
    return {name[len(prefix):] if name.startswith(prefix) else name: m
            for name, m in source.encoder.named_modules() if isinstance(m, LoraLayer)}


class XCross(ScoresFromEncode, TrainableState, nn.Module):
    def __init__(self, backbone: Backbone, sources: list[Scorer], config: XCrossConfig | None = None,
                 head_from: int = 0):
        super().__init__()
        if len(sources) < 2:
            raise ValueError("X-Cross integrates at least two source models")
        encodings = {s.config.encoding for s in sources}
        if len(encodings) != 1:
            raise ValueError(f"the source models must share one encoding, got {encodings}")
        self.config = config or XCrossConfig()
        self.scorer_config = sources[0].config
        self.n = len(sources)
        self.tokenizer = backbone.tokenizer
        self.backbone_name = backbone.name
        self.encoder = backbone.model
        for p in self.encoder.parameters():
            p.requires_grad_(False)

        # the n adapters of every adapted projection, stacked into one module
        per_source = [lora_modules(s) for s in sources]
        names = sorted(per_source[0])
        if any(sorted(m) != names for m in per_source[1:]):
            raise ValueError("the source models' adapters sit on different modules")
        for name in names:
            layers = [m[name] for m in per_source]
            a = torch.stack([m.lora_A["default"].weight for m in layers])  # (n, r, d_in)
            b = torch.stack([m.lora_B["default"].weight for m in layers])  # (n, d_out, r)
            scaling = torch.tensor([m.scaling["default"] for m in layers], dtype=torch.float32)
            _set(self.encoder, name, StackedLoRALinear(_get(self.encoder, name), a, b, scaling))
        self.adapted = names

        # integrators on the top K layers, at layer outputs or at adapted projections
        blocks = self.encoder.encoder.layer
        n_layers = len(blocks)
        k = self.config.top_k_layers or n_layers
        if not 1 <= k <= n_layers:
            raise ValueError(f"top_k_layers must be in 1..{n_layers}, got {k}")
        self.integrated_layers = list(range(n_layers - k, n_layers))
        self.integrators = nn.ModuleDict()
        if self.config.integration_point == "layer":
            targets = {f"encoder.layer.{i}": backbone.hidden_size for i in self.integrated_layers}
        else:
            targets = {name: _get(self.encoder, name).base.out_features for name in names
                       if int(name.split("encoder.layer.")[1].split(".")[0]) in self.integrated_layers}
        if self.config.lambda1 == 0 and self.config.lambda2 == 0:  # -Layers: no layer-wise integration at all
            targets = {}
        for name, width in targets.items():
            key = name.replace(".", "_")
            self.integrators[key] = Integrator(self.n, width)
            _get(self.encoder, name).register_forward_hook(self._hook(key))

        self.stream_weights = nn.Parameter(torch.full((self.n,), 1.0 / self.n))  # w
        self.head = copy.deepcopy(sources[head_from].head)
        for p in self.head.parameters():
            p.requires_grad_(True)
        self.record = False  # when set, per-example mean alpha/beta of each integrator are kept
        self.recorded: list[dict[str, tuple[torch.Tensor, torch.Tensor]]] = []
        self._mask: torch.Tensor | None = None

    # -- the integration hook -------------------------------------------------------------------
    def _hook(self, key: str):
        def hook(module, inputs, output):
            hidden = output[0] if isinstance(output, tuple) else output  # (n*B, T, d)
            h = hidden.view(self.n, -1, *hidden.shape[1:])  # (n, B, T, d)
            refined, alpha, beta = self.integrators[key](h, self.config.lambda1, self.config.lambda2)
            if self.record and self._mask is not None:
                m = self._mask.to(alpha.dtype)  # (B, T)
                mean = lambda f: (f * m).sum(-1) / m.sum(-1).clamp(min=1)  # (n, n-1, B)  # noqa: E731
                self.recorded[-1][key] = (mean(alpha).permute(2, 0, 1).detach().float().cpu(),
                                          mean(beta).permute(2, 0, 1).detach().float().cpu())
            refined = refined.reshape(hidden.shape)
            return (refined, *output[1:]) if isinstance(output, tuple) else refined
        return hook

    # -- forward --------------------------------------------------------------------------------
    def stream_states(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        """Last hidden states of the n integrated streams: (n, B, T, d)."""
        rep = lambda t: None if t is None else t.repeat(self.n, *([1] * (t.dim() - 1)))  # noqa: E731
        self._mask = attention_mask
        if self.record:
            self.recorded.append({})
        kwargs = {} if token_type_ids is None else {"token_type_ids": rep(token_type_ids)}
        out = self.encoder(input_ids=rep(input_ids), attention_mask=rep(attention_mask), **kwargs).last_hidden_state
        return out.view(self.n, -1, *out.shape[1:])

    def encode(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        """Stage 4: h = sum_i w_i h~_i^L, (B, T, d)."""
        h = self.stream_states(input_ids, attention_mask, token_type_ids)
        return torch.einsum("n,nbtd->btd", self.stream_weights.to(h.dtype), h)

    # -- sizes ----------------------------------------------------------------------------------
    def parameter_counts(self) -> dict[str, int]:
        integrators = sum(p.numel() for p in self.integrators.parameters())
        lora_one_source = sum(m.lora_A[0].numel() + m.lora_B[0].numel()
                              for m in self.encoder.modules() if isinstance(m, StackedLoRALinear))
        return {
            "integrators": integrators,
            "integrator_per_point": integrators // max(1, len(self.integrators)),
            "stream_weights": self.stream_weights.numel(),
            "head": sum(p.numel() for p in self.head.parameters()),
            "trainable": sum(p.numel() for p in self.parameters() if p.requires_grad),
            "lora_adapter_one_source": lora_one_source,
        }
