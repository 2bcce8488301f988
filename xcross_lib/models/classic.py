"""The ID-based sequential recommenders of Table 2 (SASRec, BERT4Rec, FDSA, S3-Rec), from RecBole.

RecBole 1.2.1 (pinned) is the library the paper's authors ran these models with. Its model classes
are used here as they are; its `Config` and data pipeline are not, because they fail on numpy 2
(`np.float_` in `Config.compatibility_settings`, `np.bool8` through ray in `quick_start`). A model
reads only a few things from its config and dataset, and this module gives exactly those:

- `RecBoleConfig`: RecBole's defaults (its own `overall.yaml` and `<Model>.yaml`, read from the
  installed package) with the field names of our data; `config[key]` is None for a missing key and
  `hasattr(config, key)` tells whether it is set, as with RecBole's `Config`.
- `ItemCatalogue`: the dataset a model is built on: item ids shifted by one (RecBole's 0 is the
  padding), and one item attribute, the words of each title (`title_words`), as a token sequence.
  These data carry no category or brand, so FDSA's feature sequence and S3-Rec's attribute
  pre-training read title words.

Our item id i is RecBole id i + 1; `full_scores` returns columns in our ids.
"""

from __future__ import annotations

import html
import re
from collections import Counter
from importlib import resources
from typing import Mapping, Sequence

import numpy as np
import torch
import yaml

from ..errors import ParameterError

MODELS = ("SASRec", "BERT4Rec", "FDSA", "S3Rec")
ITEM_ID = "item_id"
ATTRIBUTE = "title_word"
FIELDS = {
    "USER_ID_FIELD": "user_id",
    "ITEM_ID_FIELD": ITEM_ID,
    "LIST_SUFFIX": "_list",
    "ITEM_LIST_LENGTH_FIELD": "item_length",
    "NEG_PREFIX": "neg_",
    "MAX_ITEM_LIST_LENGTH": 50,
}
ITEM_SEQ = ITEM_ID + FIELDS["LIST_SUFFIX"]
ITEM_SEQ_LEN = FIELDS["ITEM_LIST_LENGTH_FIELD"]


def _recbole():
    try:
        import recbole  # noqa: F401
    except ImportError as e:  # pragma: no cover - recbole is a pinned dependency
        raise ImportError("RecBole is not installed. Fix: pip install -e . (pyproject.toml pins recbole==1.2.1)") from e
    return recbole


def model_class(name: str):
    """RecBole's class for one of MODELS."""
    if name not in MODELS:
        raise ParameterError(f"unknown classic model {name!r}; known: {', '.join(MODELS)}")
    _recbole()
    anomaly = torch.is_anomaly_enabled()
    from recbole.model import sequential_recommender

    # importing the package imports recbole's sine.py, which turns autograd's anomaly detection on for
    # the whole process (every operation then records its stack: training 5-10 x slower)
    torch.autograd.set_detect_anomaly(anomaly)
    return getattr(sequential_recommender, name)


def recbole_defaults(name: str) -> dict:
    """RecBole's own defaults for a model: overall.yaml, then properties/model/<name>.yaml."""
    model_class(name)
    props = resources.files("recbole") / "properties"
    out: dict = {}
    for part in (props / "overall.yaml", props / "model" / f"{name}.yaml"):
        out.update(yaml.safe_load(part.read_text()) or {})
    return {k: _number(v) for k, v in out.items()}


def _number(value):
    """PyYAML reads `1e-12` as a string (YAML 1.1); RecBole's own loader reads it as a float."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


class RecBoleConfig(dict):
    """What a RecBole model reads from `Config`: item access that gives None when unset, and
    attribute access for set keys (RecBole's MaskItemSequence asks `hasattr(config, "ft_ratio")`)."""

    def __getitem__(self, key):
        return self.get(key)

    def __getattr__(self, key):
        if key in self:
            return self.get(key)
        raise AttributeError(key)


def model_config(name: str, overrides: Mapping | None = None, device: str = "cpu") -> RecBoleConfig:
    config = RecBoleConfig(recbole_defaults(name))
    config.update(FIELDS)
    config.update({"device": torch.device(device), "numerical_features": [], "train_neg_sample_args": None})
    if name == "FDSA":
        config["selected_features"] = [ATTRIBUTE]
    if name == "S3Rec":
        config["item_attribute"] = ATTRIBUTE
    for key, value in (overrides or {}).items():
        config[key] = value
    return config


_WORD = re.compile(r"[a-z0-9]+")


ATTRIBUTE_SETTINGS = {"min_items": 2, "max_share": 0.05, "max_vocabulary": 500, "max_words": 8}


def title_words(titles: Mapping[int, str], n_items: int, min_items: int = 2, max_share: float = 0.05,
                max_vocabulary: int = 500, max_words: int = 8) -> tuple[np.ndarray, list[str]]:
    """Each item's title words as attribute ids: (n_items, max_words) int64, 0 = padding, and the
    vocabulary (id k -> vocabulary[k - 1]). A word is kept when at least `min_items` titles have it
    (a word of one title says nothing about another item) and at most `max_share` of them (words
    such as "for" and "with" say nothing either); then the `max_vocabulary` most frequent. The cap
    keeps S3-Rec's pre-training in memory: RecBole builds a multi-hot row of every attribute for
    every position of a batch (2,048 x 50 x vocabulary), which with Tools' 2,900 title words of two
    or more titles took 20 GB and was killed."""
    words = {i: list(dict.fromkeys(_WORD.findall(html.unescape(str(titles.get(i, ""))).lower()))) for i in range(n_items)}
    counts = Counter(w for ws in words.values() for w in ws)
    kept = [w for w, c in counts.items() if min_items <= c <= max_share * n_items and len(w) > 1]
    vocabulary = sorted(sorted(kept, key=lambda w: (-counts[w], w))[:max_vocabulary])
    index = {w: k + 1 for k, w in enumerate(vocabulary)}
    table = np.zeros((n_items, max_words), dtype=np.int64)
    for i, ws in words.items():
        ids = [index[w] for w in ws if w in index][:max_words]
        table[i, : len(ids)] = ids
    return table, vocabulary


class ItemCatalogue:
    """The dataset a RecBole sequential model is built on: the number of items (plus padding) and
    the item attribute table. Our item id i is row i + 1."""

    def __init__(self, n_items: int, attributes: np.ndarray, n_attributes: int, config: RecBoleConfig):
        from recbole.utils import FeatureType

        if attributes.shape[0] != n_items:
            raise ValueError(f"need one attribute row per item: {attributes.shape[0]} rows, {n_items} items")
        self.n_items, self.config = n_items, config
        self.field2type = {ITEM_ID: FeatureType.TOKEN, ATTRIBUTE: FeatureType.TOKEN_SEQ}
        self._num = {ITEM_ID: n_items + 1, ATTRIBUTE: n_attributes + 1, FIELDS["USER_ID_FIELD"]: 1}
        padded = np.zeros((n_items + 1, attributes.shape[1]), dtype=np.int64)
        padded[1:] = attributes
        self._attributes = torch.as_tensor(padded)

    def num(self, field: str) -> int:
        return self._num[field]

    @property
    def item_num(self) -> int:
        return self._num[ITEM_ID]

    def get_item_feature(self):
        from recbole.data.interaction import Interaction

        return Interaction({ITEM_ID: torch.arange(self.n_items + 1), ATTRIBUTE: self._attributes})


def build_model(name: str, catalogue: ItemCatalogue, seed: int = 0):
    """A freshly initialised RecBole model (seeded)."""
    torch.manual_seed(seed)
    return model_class(name)(catalogue.config, catalogue)


def batch_interaction(histories: Sequence[Sequence[int]], targets: Sequence[int] | None = None,
                      max_length: int = FIELDS["MAX_ITEM_LIST_LENGTH"], device="cpu", full_width: bool = False):
    """RecBole's input for histories in our item ids: each history's newest `max_length` items,
    shifted to RecBole ids, left-aligned and padded with 0 on the right (as RecBole stores them),
    to the longest history of the batch (the models mask padding, so the scores are the same) or,
    with full_width, to max_length (S3-Rec's pre-training needs that)."""
    from recbole.data.interaction import Interaction

    cut = [list(h)[-max_length:] for h in histories]
    if any(len(h) == 0 for h in cut):
        raise ValueError("every history needs at least one item")
    width = max_length if full_width else max(len(h) for h in cut)
    seq = torch.zeros((len(cut), width), dtype=torch.long)
    for r, h in enumerate(cut):
        seq[r, : len(h)] = torch.as_tensor(h, dtype=torch.long) + 1
    data = {ITEM_SEQ: seq, ITEM_SEQ_LEN: torch.as_tensor([len(h) for h in cut], dtype=torch.long)}
    if targets is not None:
        data[ITEM_ID] = torch.as_tensor(list(targets), dtype=torch.long) + 1
    return Interaction(data).to(device)


@torch.inference_mode()
def full_scores(model, histories: Sequence[Sequence[int]], batch_size: int = 512) -> np.ndarray:
    """(users, n_items) scores of every item in our ids, from the model's `full_sort_predict`."""
    model.eval()
    device = next(model.parameters()).device
    parts = []
    for start in range(0, len(histories), batch_size):
        out = model.full_sort_predict(batch_interaction(histories[start : start + batch_size], device=device))
        parts.append(out[:, 1:].float().cpu().numpy())  # column 0 is RecBole's padding item
    return np.concatenate(parts)


@torch.inference_mode()
def candidate_scores(model, histories: Sequence[Sequence[int]], candidates: Sequence[Sequence[int]],
                     batch_size: int = 512) -> np.ndarray:
    """(users, candidates) scores from the model's pairwise `predict`, one (history, item) pair at a
    time: a second path to the same numbers as `full_scores` restricted to the candidates."""
    model.eval()
    device = next(model.parameters()).device
    n_candidates = len(candidates[0])
    pairs_h = [h for h, cands in zip(histories, candidates) for _ in cands]
    pairs_i = [c for cands in candidates for c in cands]
    out = np.zeros(len(pairs_i), dtype=np.float32)
    for start in range(0, len(pairs_i), batch_size):
        inter = batch_interaction(pairs_h[start : start + batch_size], pairs_i[start : start + batch_size], device=device)
        out[start : start + batch_size] = model.predict(inter).float().cpu().numpy()
    return out.reshape(len(histories), n_candidates)
