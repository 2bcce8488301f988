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


class FrozenPrefixCache:
    """Hidden states of single segments below the first integrated layer, per stream, keyed by the
    segment's token ids: (n, length, d) each, computed once and reused while the byte budget lasts."""

    def __init__(self, max_mb: float):
        self.max_bytes = int(max_mb * 2**20)
        self.used_bytes = 0
        self.states_of: dict[tuple[int, ...], torch.Tensor] = {}
        self.computed = 0  # segments computed (misses), for tests and benchmarks

    @torch.no_grad()
    def _compute(self, segments: list[tuple[int, ...]], run, device, pad_id: int = 0) -> dict:
        longest = max(len(s) for s in segments)
        ids = torch.full((len(segments), longest), pad_id, dtype=torch.long, device=device)
        mask = torch.zeros_like(ids)
        for row, s in enumerate(segments):
            ids[row, : len(s)] = torch.as_tensor(s, device=device)
            mask[row, : len(s)] = 1
        out = run(ids, mask)  # (n*M, T, d)
        out = out.view(-1, len(segments), *out.shape[1:])  # (n, M, T, d)
        self.computed += len(segments)
        return {s: out[:, row, : len(s)].clone() for row, s in enumerate(segments)}

    def states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, run) -> torch.Tensor:
        """(n*B, T, d) hidden states of the B segments (padded rows zero) from the cache, the
        missing ones computed by run(ids, mask) -> (n*B', T', d)."""
        lengths = attention_mask.sum(1).tolist()
        rows = [tuple(ids[:k].tolist()) for ids, k in zip(input_ids, lengths)]
        missing = [s for s in dict.fromkeys(rows) if s not in self.states_of]
        fresh = self._compute(missing, run, input_ids.device) if missing else {}
        for s, t in fresh.items():
            size = t.numel() * t.element_size()
            if self.used_bytes + size <= self.max_bytes:
                self.states_of[s] = t
                self.used_bytes += size
        first = fresh[rows[0]] if rows[0] in fresh else self.states_of[rows[0]]
        n, _, d = first.shape
        out = torch.zeros(n, len(rows), input_ids.shape[1], d, dtype=first.dtype, device=first.device)
        for b, s in enumerate(rows):
            out[:, b, : len(s)] = fresh[s] if s in fresh else self.states_of[s]
        return out.view(n * len(rows), input_ids.shape[1], d)


class XCross(ScoresFromEncode, TrainableState, nn.Module):
    def __init__(self, backbone: Backbone, sources: list[Scorer], config: XCrossConfig | None = None,
                 head_from: int = 0, prefix_cache_mb: float = 1024):
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
            self.integrators[key] = Integrator(self.n, width, self.config.parametrisation)
            _get(self.encoder, name).register_forward_hook(self._hook(key))

        self.stream_weights = nn.Parameter(torch.full((self.n,), 1.0 / self.n))  # w
        self.head = copy.deepcopy(sources[head_from].head)
        for p in self.head.parameters():
            p.requires_grad_(True)
        # two towers: each segment's hidden states below the first integrated layer, per stream, kept
        # (they depend on frozen weights only); pair prompts differ per candidate, so nothing repeats
        self.prefix_cache = FrozenPrefixCache(prefix_cache_mb) if (
            prefix_cache_mb and self.scorer_config.encoding == "separate" and self.integrated_layers[0] > 0
            and len(self.integrators)) else None
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
        if self.prefix_cache is not None and token_type_ids is None:
            first = self.integrated_layers[0]
            below = self.prefix_cache.states(input_ids, attention_mask, lambda i, m: self._run_layers(i, m, 0, first))
            out = self._run_layers(input_ids, attention_mask, first, len(self.encoder.encoder.layer), below)
        else:
            out = self.encoder(input_ids=rep(input_ids), attention_mask=rep(attention_mask), **kwargs).last_hidden_state
        return out.view(self.n, -1, *out.shape[1:])

    def _run_layers(self, input_ids, attention_mask, start: int, stop: int, hidden: torch.Tensor | None = None):
        """(n*B, T, d): the n streams through layers start..stop-1 only, from `hidden` (n*B, T, d)
        instead of the embeddings when given. The encoder runs as usual (its own masks, its own
        relative positions) with its layer list cut for the call."""
        rep = lambda t: t.repeat(self.n, *([1] * (t.dim() - 1)))  # noqa: E731
        stack = self.encoder.encoder
        blocks = stack.layer
        handle = None
        if hidden is not None:
            def swap(module, args, kwargs):
                return ((hidden, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": hidden})
            handle = stack.register_forward_pre_hook(swap, with_kwargs=True)
        try:
            stack.layer = nn.ModuleList(list(blocks)[start:stop])
            return self.encoder(input_ids=rep(input_ids), attention_mask=rep(attention_mask)).last_hidden_state
        finally:
            stack.layer = blocks
            if handle is not None:
                handle.remove()

    def encode(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        """Stage 4: h = sum_i w_i h~_i^L, (B, T, d)."""
        h = self.stream_states(input_ids, attention_mask, token_type_ids)
        return torch.einsum("n,nbtd->btd", self.stream_weights.to(h.dtype), h)

    # -- sizes ----------------------------------------------------------------------------------
    def parameter_counts(self) -> dict[str, int]:
        integrators = sum(p.numel() for p in self.integrators.parameters())
        lora_one_source = sum(m.lora_A[0].numel() + m.lora_B[0].numel()
                              for m in self.encoder.modules() if isinstance(m, StackedLoRALinear))
        layers = len(self.integrated_layers) if len(self.integrators) else 0
        return {
            "integrators": integrators,
            "integrator_per_point": integrators // max(1, len(self.integrators)),
            "per_layer": integrators // max(1, layers),  # one integrated layer's integrators
            "without_head": integrators + self.stream_weights.numel(),
            "stream_weights": self.stream_weights.numel(),
            "head": sum(p.numel() for p in self.head.parameters()),
            "trainable": sum(p.numel() for p in self.parameters() if p.requires_grad),
            "lora_adapter_one_source": lora_one_source,
        }
