"""Data layer: the shared format, the raw pipeline, the split/candidate protocol, prompts."""

from .domain import Domain, load_domain
from .download import download
from .paths import DOMAINS, find_data_dir, resolve_domain, resolve_domains
from .prepare import ProtocolFiles, prepare_protocol
from .prompts import Prompt, PromptBuilder, clean_title
from .protocol import (
    PAPER_USER_FRACTION,
    SPLITS,
    item_popularity,
    make_candidates,
    read_candidates,
    split_users,
    subsample_users,
)

__all__ = [
    "DOMAINS",
    "PAPER_USER_FRACTION",
    "SPLITS",
    "Domain",
    "Prompt",
    "PromptBuilder",
    "ProtocolFiles",
    "clean_title",
    "download",
    "find_data_dir",
    "item_popularity",
    "load_domain",
    "make_candidates",
    "prepare_protocol",
    "read_candidates",
    "resolve_domain",
    "resolve_domains",
    "split_users",
    "subsample_users",
]
