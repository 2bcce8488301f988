"""The scorer of DESIGN.md section 3, trained as multiple choice.

encoding "pair" (the paper's cross-encoder):
    prompt tokens [CLS] history [SEP] candidate [SEP] (N, T) -> encoder with LoRA -> H (N, T, d)
      -> pool: first token ("cls", the paper's) or the masked mean ("mean", MiniLM's own pooling)
      -> dropout -> dense d->d -> GELU -> dropout -> linear d->1 = score (N,)
encoding "separate" (two towers, one shared encoder with LoRA; the README says why it exists):
    history (B, Th) and candidate titles (B*C, Tc), each [CLS] text [SEP], encoded apart
      -> masked mean -> x + dense(x) (dense started at zero) -> unit length
      -> score = scale * cosine(history, candidate), scale learnable (start: cosine_scale)
    At the start this is exactly the text-similarity reference row.
One example is one user's C candidates; the loss is the cross-entropy of the softmax over its C
scores against the target's position.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from peft.tuners.lora import LoraLayer
from torch import nn

from .backbones import Backbone
from .dropout import use_fast_dropout

POOLINGS = ("cls", "mean", "segment_cosine")
ENCODINGS = ("pair", "separate")


@dataclass
class ScorerConfig:
    encoding: str = "pair"
    pooling: str = "cls"
    dropout: float = 0.1
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.1
    lora_targets: list[str] | None = None  # None: the backbone's query and value projections
    cosine_scale: float = 2.0  # start of the learnable cosine scale (separate, segment_cosine)

    def __post_init__(self):
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.encoding not in ENCODINGS:
            raise ValueError(f"encoding must be one of {ENCODINGS}, got {self.encoding!r}")

    def to_dict(self) -> dict:
        return asdict(self)


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, how: str) -> torch.Tensor:
    """(N, T, d) hidden states -> (N, d): the first token, or the mean over real tokens."""
    if how == "cls":
        return hidden[:, 0]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (N, T, 1)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


def segment_cosine(hidden: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
    """(N,) cosine between the mean hidden state of the first segment (history) and of the second
    (candidate), both from the same joint pass; segments told apart by token type."""
    real = attention_mask.to(hidden.dtype)
    second = token_type_ids.to(hidden.dtype) * real  # (N, T)
    first = real - second
    mean = lambda w: (hidden * w.unsqueeze(-1)).sum(1) / w.sum(1, keepdim=True).clamp(min=1.0)  # noqa: E731
    return F.cosine_similarity(mean(first), mean(second), dim=-1)


class ScoringHead(nn.Module):
    """Pooler and linear scorer over an encoder's last hidden states.

    pooling "segment_cosine" adds `scale * cos(history, candidate)` (segment means of the joint
    pass, scale learnable) to the scorer, whose last layer then starts at zero: the model
    starts as a text-similarity ranker instead of a random one.
    """

    def __init__(self, hidden_size: int, pooling: str = "cls", dropout: float = 0.1, cosine_scale: float = 2.0):
        super().__init__()
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        self.dense = nn.Linear(hidden_size, hidden_size)  # the pooler's d -> d
        self.score = nn.Linear(hidden_size, 1)
        if pooling == "segment_cosine":
            self.cosine_scale = nn.Parameter(torch.tensor(float(cosine_scale)))
            nn.init.zeros_(self.score.weight)
            nn.init.zeros_(self.score.bias)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        x = pool(hidden, attention_mask, "mean" if self.pooling == "segment_cosine" else self.pooling)  # (N, d)
        x = F.gelu(self.dense(self.dropout(x)))  # (N, d)
        score = self.score(self.dropout(x)).squeeze(-1)  # (N,)
        if self.pooling == "segment_cosine":
            if token_type_ids is None:
                raise ValueError("segment_cosine pooling needs token_type_ids to tell the segments apart")
            score = score + self.cosine_scale * segment_cosine(hidden, attention_mask, token_type_ids)
        return score


class TwoTowerHead(nn.Module):
    """Scores candidates by the scaled cosine of mean-pooled history and candidate encodings."""

    def __init__(self, hidden_size: int, dropout: float = 0.1, scale: float = 2.0):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.dense = nn.Linear(hidden_size, hidden_size)  # residual projection, started at zero
        nn.init.zeros_(self.dense.weight)
        nn.init.zeros_(self.dense.bias)
        self.scale = nn.Parameter(torch.tensor(float(scale)))

    def embed(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x = pool(hidden, attention_mask, "mean")  # (N, d)
        return F.normalize(x + self.dense(self.dropout(x)), dim=-1)

    def forward(self, history: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """history (B, d), candidates (B*C, d), both unit length -> scores (B*C,)."""
        b = history.shape[0]
        per_example = candidates.view(b, -1, candidates.shape[-1])  # (B, C, d)
        return (self.scale * torch.einsum("bd,bcd->bc", history, per_example)).reshape(-1)


class TrainableState:
    """Checkpoints of what trains (the parameters with requires_grad), and a training mode in which
    frozen parts run as they were trained: a child module whose parameters are all frozen (a frozen
    backbone with its adapters, a frozen head) stays in evaluation mode, so its dropout is off and
    it gives the same output on every pass; the trainable parts train."""

    def train(self, mode: bool = True):
        super().train(mode)
        if mode:
            for child in self.children():
                params = list(child.parameters())
                if params and not any(p.requires_grad for p in params):
                    child.eval()
        return self

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.named_parameters() if v.requires_grad}

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        params = dict(self.named_parameters())
        missing = [k for k, v in params.items() if v.requires_grad and k not in state]
        if missing:
            raise KeyError(f"checkpoint lacks {len(missing)} trainable tensors, e.g. {missing[0]}")
        with torch.no_grad():
            for k, v in state.items():
                params[k].copy_(v)


def embed_by_length(embed, input_ids: torch.Tensor, attention_mask: torch.Tensor, slack: float = 0.8,
                    max_rows: int = 128) -> torch.Tensor:
    """embed(ids, mask) -> (N, d) over the rows in chunks of similar length, each cut to its own
    longest row, so that short titles are not padded to the longest in the batch (about half the
    tokens of a training batch of popularity-sampled titles were padding). Rows sorted by length
    (longest first) start a new chunk when shorter than `slack` x the chunk's first, or after
    max_rows. Same result as one call (up to rounding), in the rows' order.

    On a CPU padding is arithmetic that costs time. On a GPU a step is bound by the number of
    operations launched, and every chunk is one more pass through the encoder (the forward pass of
    one X-Cross training batch over two MiniLM streams, 6 chunks, was about 13,000 aten operations;
    docs/results.md, the H200 run), so there one call does the work."""
    if input_ids.device.type != "cpu":
        return embed(input_ids, attention_mask)
    lengths = attention_mask.sum(1)
    order = torch.argsort(lengths, descending=True, stable=True).tolist()
    lengths = lengths.tolist()
    chunks, current = [], []
    for row in order:
        if current and (lengths[row] < slack * lengths[current[0]] or len(current) >= max_rows):
            chunks.append(current)
            current = []
        current.append(row)
    chunks.append(current)
    if len(chunks) == 1 and lengths[order[0]] == input_ids.shape[1]:
        return embed(input_ids, attention_mask)
    parts = []
    for rows in chunks:
        idx = torch.as_tensor(rows, device=input_ids.device)
        width = lengths[rows[0]]
        parts.append(embed(input_ids[idx, :width], attention_mask[idx, :width]))
    out = torch.cat(parts)  # rows in chunk order
    inverse = torch.empty(len(order), dtype=torch.long, device=out.device)
    inverse[torch.as_tensor([r for rows in chunks for r in rows], device=out.device)] = torch.arange(len(order), device=out.device)
    return out[inverse]


def candidate_rows(embeddings: torch.Tensor, candidate_index: torch.Tensor | None) -> torch.Tensor:
    """(M, d) embeddings of distinct titles -> (B*C, d) rows of the candidate lists (None: as they are)."""
    return embeddings if candidate_index is None else embeddings[candidate_index]


def set_head_trainable(model: nn.Module, trainable: bool) -> nn.Module:
    """Train the model's pooler and scorer (`head`) or keep them as they are (a frozen head also
    runs in evaluation mode while the rest trains: TrainableState.train)."""
    for p in model.head.parameters():
        p.requires_grad_(trainable)
    return model


def scorer_config_of(model) -> ScorerConfig:
    """The scorer settings of a Scorer (`config`) or of a model over source streams (`scorer_config`)."""
    return getattr(model, "scorer_config", None) or model.config


class ScoresFromEncode:
    """Scoring for models over frozen source streams (X-Cross, the adapter mixtures): they define
    encode(input_ids, attention_mask, token_type_ids) -> (B, T, d), a head and scorer_config, and
    get the same inputs and (B*C,) scores as Scorer.forward."""

    def embed(self, input_ids, attention_mask) -> torch.Tensor:
        """Two towers: unit-length (N, d) embeddings of N single segments."""
        return self.head.embed(self.encode(input_ids, attention_mask), attention_mask)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, history_input_ids=None,
                history_attention_mask=None, candidate_index=None) -> torch.Tensor:
        if self.scorer_config.encoding == "separate":
            embed = self.embed if getattr(self, "record", False) else (  # recorded factors: one pass each
                lambda ids, mask: embed_by_length(self.embed, ids, mask))
            return self.head(embed(history_input_ids, history_attention_mask),
                             candidate_rows(embed(input_ids, attention_mask), candidate_index))
        hidden = self.encode(input_ids, attention_mask, token_type_ids)
        return self.head(hidden, attention_mask, token_type_ids)


class Scorer(TrainableState, nn.Module):
    """A frozen backbone with a LoRA adapter (trainable), and a scoring head (trainable)."""

    def __init__(self, backbone: Backbone, config: ScorerConfig | None = None, adapter_name: str = "default"):
        super().__init__()
        self.config = config or ScorerConfig()
        self.backbone_name = backbone.name
        self.tokenizer = backbone.tokenizer
        if any(isinstance(m, LoraLayer) for m in backbone.model.modules()):
            raise ValueError("this backbone already carries a LoRA adapter: load a fresh backbone for each Scorer")
        lora = LoraConfig(
            r=self.config.lora_rank,
            lora_alpha=self.config.lora_alpha,
            lora_dropout=self.config.lora_dropout,
            target_modules=self.config.lora_targets or backbone.lora_targets,
            bias="none",
        )
        with warnings.catch_warnings():  # peft 0.21 reads a property that transformers 5 deprecates, once per model
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            self.encoder = get_peft_model(backbone.model, lora, adapter_name=adapter_name)  # freezes the rest
        if self.config.encoding == "pair":
            self.head = ScoringHead(backbone.hidden_size, self.config.pooling, self.config.dropout, self.config.cosine_scale)
        else:
            self.head = TwoTowerHead(backbone.hidden_size, self.config.dropout, self.config.cosine_scale)
        use_fast_dropout(self)  # peft's LoRA dropout and the head's

    def embed(self, input_ids, attention_mask) -> torch.Tensor:
        """Two towers: unit-length (N, d) embeddings of N single segments (histories or titles)."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.head.embed(hidden, attention_mask)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, history_input_ids=None,
                history_attention_mask=None, candidate_index=None) -> torch.Tensor:
        """Pair: the prompts (N, T). Separate: the histories (B, Th) and the candidates as input_ids,
        (B*C, Tc), or the M distinct titles (M, Tc) with candidate_index (B*C,) their rows.
        Returns (N,) or (B*C,) scores, example-major."""
        if self.config.encoding == "separate":
            return self.head(embed_by_length(self.embed, history_input_ids, history_attention_mask),
                             candidate_rows(embed_by_length(self.embed, input_ids, attention_mask), candidate_index))
        kwargs = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state
        return self.head(hidden, attention_mask, token_type_ids)  # (N,)



def multiple_choice_loss(scores: torch.Tensor, n_candidates: int, target_index: torch.Tensor) -> torch.Tensor:
    """Mean over examples of the cross-entropy of softmax(scores of its candidates) at the target.
    scores: (B * C,) in example-major order; target_index: (B,)."""
    return F.cross_entropy(scores.view(-1, n_candidates).float(), target_index)
