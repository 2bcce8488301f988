"""Token ids of prompts, assembled from titles tokenized once.

Every item title is tokenized once (HTML unescaped); a prompt's ids are then put together as
`prefix + history + middle + candidate + suffix`, where the special tokens around the two segments
are read off the tokenizer itself ([CLS] a [SEP] b [SEP] for BERT and DeBERTa). The history is cut
from its oldest item to fit `max_length`, the candidate never (PromptBuilder does the same on text).
Batches are padded to their own longest prompt (dynamic padding).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch

from .prompts import HISTORY_SEPARATOR, clean_title


@dataclass
class Batch:
    input_ids: torch.Tensor  # (N, T) with N = examples x candidates, example-major
    attention_mask: torch.Tensor  # (N, T)
    token_type_ids: torch.Tensor  # (N, T)
    target_index: torch.Tensor  # (B,)
    n_candidates: int

    def model_inputs(self) -> dict[str, torch.Tensor]:
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask, "token_type_ids": self.token_type_ids}

    def to(self, device) -> "Batch":
        return Batch(self.input_ids.to(device), self.attention_mask.to(device), self.token_type_ids.to(device),
                     self.target_index.to(device), self.n_candidates)


class PromptEncoder:
    """Title token ids cached per item; prompt ids assembled per (history, candidate)."""

    def __init__(self, tokenizer, titles: Mapping[int, str], max_length: int):
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        ids = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
        items = list(titles)
        encoded = tokenizer([clean_title(titles[i]) for i in items], add_special_tokens=False)["input_ids"]
        self.item_ids = {i: list(e) for i, e in zip(items, encoded)}
        self.separator = ids(HISTORY_SEPARATOR.strip())
        # the special tokens around the two segments, read off a probe pair
        a, b = ids("a"), ids("b")
        probe = tokenizer("a", "b")
        pids = list(probe["input_ids"])
        i = pids.index(a[0])
        j = pids.index(b[0], i + 1)
        self.prefix, self.middle, self.suffix = pids[:i], pids[i + 1 : j], pids[j + 1 :]
        types = probe.get("token_type_ids") or [0] * len(pids)
        self.type_first, self.type_second = types[i], types[j]
        self.n_special = len(self.prefix) + len(self.middle) + len(self.suffix)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def history_ids(self, history: Sequence[int], budget: int) -> list[int]:
        """The newest history items that fit `budget` tokens, joined by the separator."""
        kept: list[int] = []
        for item in reversed(history):
            piece = self.item_ids[item] + (self.separator if kept else [])
            if len(kept) + len(piece) > budget:
                break
            kept = piece + kept
        if not kept and history:  # the newest item alone is too long: keep its last tokens
            kept = self.item_ids[history[-1]][-budget:]
        return kept

    def prompt(self, history: Sequence[int], candidate: int) -> tuple[list[int], list[int]]:
        """(input_ids, token_type_ids) of one prompt."""
        cand = self.item_ids[candidate]
        budget = self.max_length - self.n_special - len(cand)
        if budget < 1:
            raise ValueError(f"max_length={self.max_length} leaves no room beside candidate {candidate}; raise it")
        hist = self.history_ids(history, budget)
        first = self.prefix + hist + self.middle
        second = cand + self.suffix
        return first + second, [self.type_first] * len(first) + [self.type_second] * len(second)

    def batch(self, histories: Sequence[Sequence[int]], candidates: Sequence[Sequence[int]],
              target_index: Sequence[int]) -> Batch:
        """Prompts of B examples x C candidates, padded to the longest."""
        n_candidates = len(candidates[0])
        pairs = [self.prompt(h, c) for h, cands in zip(histories, candidates) for c in cands]
        longest = max(len(ids) for ids, _ in pairs)
        input_ids = np.full((len(pairs), longest), self.pad_id, dtype=np.int64)
        types = np.zeros((len(pairs), longest), dtype=np.int64)
        mask = np.zeros((len(pairs), longest), dtype=np.int64)
        for row, (ids, tt) in enumerate(pairs):
            input_ids[row, : len(ids)] = ids
            types[row, : len(tt)] = tt
            mask[row, : len(ids)] = 1
        return Batch(torch.from_numpy(input_ids), torch.from_numpy(mask), torch.from_numpy(types),
                     torch.as_tensor(np.asarray(target_index), dtype=torch.long), n_candidates)

    def prompt_length(self, history: Sequence[int], candidate: int) -> int:
        return len(self.prompt(history, candidate)[0])
