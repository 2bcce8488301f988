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
    input_ids: torch.Tensor  # (N, T), N = examples x candidates, example-major: pair prompts or candidate titles
    attention_mask: torch.Tensor  # (N, T)
    token_type_ids: torch.Tensor | None  # (N, T); None for separate encoding
    target_index: torch.Tensor  # (B,)
    n_candidates: int
    history_input_ids: torch.Tensor | None = None  # (B, Th), separate encoding only
    history_attention_mask: torch.Tensor | None = None
    candidate_index: torch.Tensor | None = None  # (B*C,) rows of input_ids when it holds distinct titles only

    def model_inputs(self) -> dict[str, torch.Tensor]:
        names = ("input_ids", "attention_mask", "token_type_ids", "history_input_ids", "history_attention_mask",
                 "candidate_index")
        return {k: getattr(self, k) for k in names if getattr(self, k) is not None}

    def to(self, device) -> "Batch":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return Batch(move(self.input_ids), move(self.attention_mask), move(self.token_type_ids),
                     move(self.target_index), self.n_candidates, move(self.history_input_ids),
                     move(self.history_attention_mask), move(self.candidate_index))


def pad(sequences: Sequence[Sequence[int]], pad_id: int, types: Sequence[Sequence[int]] | None = None):
    """Right-padded (N, T) ids, mask and token types, T = the longest sequence."""
    longest = max(len(s) for s in sequences)
    ids = np.full((len(sequences), longest), pad_id, dtype=np.int64)
    mask = np.zeros((len(sequences), longest), dtype=np.int64)
    tt = np.zeros((len(sequences), longest), dtype=np.int64)
    for row, s in enumerate(sequences):
        ids[row, : len(s)] = s
        mask[row, : len(s)] = 1
        if types is not None:
            tt[row, : len(s)] = types[row]
    return torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(tt)


class PromptEncoder:
    """Title token ids cached per item; prompt ids assembled per (history, candidate)."""

    def __init__(self, tokenizer, titles: Mapping[int, str], max_length: int, encoding: str = "pair"):
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        self.encoding = encoding
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
        single = list(tokenizer("a")["input_ids"])  # [CLS] a [SEP]: one segment alone
        k = single.index(a[0])
        self.single_prefix, self.single_suffix = single[:k], single[k + 1 :]
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

    def single(self, ids: Sequence[int]) -> list[int]:
        """One segment alone: [CLS] ids [SEP] (cut to max_length, keeping the end)."""
        room = self.max_length - len(self.single_prefix) - len(self.single_suffix)
        return self.single_prefix + list(ids[-room:]) + self.single_suffix

    def batch(self, histories: Sequence[Sequence[int]], candidates: Sequence[Sequence[int]],
              target_index: Sequence[int], distinct_candidates: bool = False) -> Batch:
        """B examples x C candidates, padded to the longest: pair prompts, or (separate encoding)
        the B histories and the B*C candidate titles; with distinct_candidates, each distinct title
        once (popularity-sampled lists share many) and candidate_index, the row of each candidate."""
        n_candidates = len(candidates[0])
        target = torch.as_tensor(np.asarray(target_index), dtype=torch.long)
        if self.encoding == "separate":
            budget = self.max_length - len(self.single_prefix) - len(self.single_suffix)
            hist_ids, hist_mask, _ = pad([self.single(self.history_ids(h, budget)) for h in histories], self.pad_id)
            flat = [c for cands in candidates for c in cands]
            index = None
            if distinct_candidates:
                row_of = {item: r for r, item in enumerate(dict.fromkeys(flat))}  # first-seen order
                index = torch.as_tensor([row_of[c] for c in flat], dtype=torch.long)
                flat = list(row_of)
            cand_ids, cand_mask, _ = pad([self.single(self.item_ids[c]) for c in flat], self.pad_id)
            return Batch(cand_ids, cand_mask, None, target, n_candidates, hist_ids, hist_mask, index)
        pairs = [self.prompt(h, c) for h, cands in zip(histories, candidates) for c in cands]
        ids, mask, types = pad([p[0] for p in pairs], self.pad_id, [p[1] for p in pairs])
        return Batch(ids, mask, types, target, n_candidates)

    def prompt_length(self, history: Sequence[int], candidate: int) -> int:
        return len(self.prompt(history, candidate)[0])
