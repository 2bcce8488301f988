"""Prompts: `[CLS] history [SEP] candidate [SEP]` for an encoder.

The history is the user's item titles, oldest first, HTML entities unescaped, joined by "; ".
When the pair exceeds the token budget, whole history items are dropped from the oldest end; the
candidate title is never cut. (Only if the newest history item alone is too long are its first
words dropped.)
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from functools import lru_cache
from typing import Mapping, Sequence

HISTORY_SEPARATOR = "; "


def clean_title(title: str) -> str:
    """HTML entities unescaped (twice-escaped ones too), whitespace collapsed."""
    text = str(title)
    for _ in range(2):
        unescaped = html.unescape(text)
        if unescaped == text:
            break
        text = unescaped
    return " ".join(text.split())


def history_text(titles: Sequence[str]) -> str:
    return HISTORY_SEPARATOR.join(clean_title(t) for t in titles)


@dataclass(frozen=True)
class Prompt:
    history: str  # first segment
    candidate: str  # second segment
    n_history_items: int  # how many of the history's items it kept (the newest ones)


class PromptBuilder:
    """Fits history/candidate pairs into `max_length` tokens of a Hugging Face tokenizer."""

    def __init__(self, tokenizer, max_length: int):
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        self.n_special = tokenizer.num_special_tokens_to_add(pair=True)
        self._n_tokens = lru_cache(maxsize=200_000)(self._count)
        # tokens that the separator adds between two items
        self.separator_tokens = self._count("a" + HISTORY_SEPARATOR + "b") - self._count("a") - self._count("b")

    def _count(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def length(self, prompt: Prompt) -> int:
        """Tokens of the encoded pair, special tokens included."""
        return len(self.tokenizer(prompt.history, prompt.candidate)["input_ids"])

    def __call__(self, history_titles: Sequence[str], candidate_title: str) -> Prompt:
        candidate = clean_title(candidate_title)
        items = [clean_title(t) for t in history_titles]
        budget = self.max_length - self.n_special - self._n_tokens(candidate)
        if budget < 1:
            raise ValueError(
                f"max_length={self.max_length} leaves no room for history beside the candidate "
                f"{candidate!r}; raise max_length."
            )
        # newest first: keep items while the estimate fits, then check with the real tokenizer
        kept, used = 0, 0
        for title in reversed(items):
            cost = self._n_tokens(title) + (self.separator_tokens if kept else 0)
            if used + cost > budget:
                break
            kept, used = kept + 1, used + cost
        kept = max(kept, 1) if items else 0
        while True:
            prompt = Prompt(HISTORY_SEPARATOR.join(items[len(items) - kept :]), candidate, kept)
            if self.length(prompt) <= self.max_length:
                return prompt
            if kept > 1:
                kept -= 1
                continue
            # the newest item alone is too long: drop its first words until it fits
            words = items[-1].split()
            while len(words) > 1:
                words = words[1:]
                prompt = Prompt(" ".join(words), candidate, 1)
                if self.length(prompt) <= self.max_length:
                    return prompt
            raise ValueError(f"cannot fit any history beside {candidate!r} in {self.max_length} tokens")

    def for_user(
        self, history: Sequence[int], candidates: Sequence[int], titles: Mapping[int, str]
    ) -> list[Prompt]:
        """One prompt per candidate item, for one user's history of item ids."""
        history_titles = [titles[i] for i in history]
        return [self(history_titles, titles[c]) for c in candidates]
