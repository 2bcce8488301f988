"""Parameter values checked before a notebook's kernel starts.

`python -m xcross_lib.run` and the batch runner check every parameter's name against the notebook
and its value against the rule of that name here, so that `-p epochs abc`, `-p n_test_users -5`, an
unknown backbone or domain stops in a second with the parameter named, not after minutes of work.
A parameter without a rule is passed as given.
"""

from __future__ import annotations

import numbers
from pathlib import Path
from typing import Callable

from .errors import ParameterError


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def integer(minimum: int, none: str | None = None, words: tuple[str, ...] = ()) -> Callable:
    """An integer of at least `minimum`; None allowed when `none` says what it means; or one of `words`."""
    def check(value):
        if value is None and none:
            return None
        if isinstance(value, str) and value in words:
            return None
        if not _is_int(value) or value < minimum:
            extra = (f", or null ({none})" if none else "") + "".join(f", or {w!r}" for w in words)
            return f"an integer of at least {minimum}{extra}"
    return check


def number(low: float, high: float | None = None, low_open: bool = False, high_open: bool = False,
           none: str | None = None, words: tuple[str, ...] = ()) -> Callable:
    def check(value):
        if value is None and none:
            return None
        if isinstance(value, str) and value in words:
            return None
        ok = _is_number(value) and (value > low if low_open else value >= low)
        if ok and high is not None:
            ok = value < high if high_open else value <= high
        if not ok:
            span = f"{'>' if low_open else '>='} {low}" + (f" and {'<' if high_open else '<='} {high}" if high is not None else "")
            return f"a number {span}" + (f", or null ({none})" if none else "") + "".join(f", or {w!r}" for w in words)
    return check


def one_of(*choices) -> Callable:
    def check(value):
        if value not in choices:
            return "one of " + ", ".join(repr(c) for c in choices)
    return check


def boolean(value):
    if not isinstance(value, bool):
        return "true or false"


def subset_of(*choices, comma: bool = False, empty: bool = False) -> Callable:
    """Some of `choices`: a list (empty too where `empty`), one name, or (comma) a comma-separated string of names."""
    def check(value):
        items = ([v.strip() for v in value.split(",")] if comma else [value]) if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not (items or empty) or any(v not in choices for v in items):
            return "a list" + (" (may be empty)" if empty else "") + " of some of " + ", ".join(repr(c) for c in choices)
    return check


def list_of_integers(minimum: int, words: tuple[str, ...] = ()) -> Callable:
    def check(value):
        if not isinstance(value, (list, tuple)) or not value or any(
                not (_is_int(v) and v >= minimum) and v not in words for v in value):
            return f"a non-empty list of integers of at least {minimum}" + "".join(f" or {w!r}" for w in words)
    return check


def backbone(value):
    from .models.backbones import BACKBONE_NAMES, PAPER_BACKBONE

    if value in (*BACKBONE_NAMES, PAPER_BACKBONE) or (isinstance(value, str) and Path(value).expanduser().is_dir()):
        return None
    return f"one of {', '.join(BACKBONE_NAMES)}, or a local model directory"


def domain(data_dir=None) -> Callable:
    def check(value):
        from .data import resolve_domain

        try:
            resolve_domain(value, data_dir)
        except ParameterError as e:
            return f"a domain ({e})"
    return check


def domains(words: tuple[str, ...], data_dir=None) -> Callable:
    def check(value):
        from .data import resolve_domains

        if isinstance(value, str) and value.strip().lower() in words:
            return None
        try:
            resolve_domains(value, data_dir)
        except ParameterError as e:
            return "domains: a comma-separated string or a list" + "".join(f", or {w!r}" for w in words) + f" ({e})"
    return check


def _rules(data_dir=None) -> dict[str, Callable]:
    from .learning_curve import MODELS
    from .metrics import METRICS
    from .models.classic import MODELS as CLASSIC_MODELS
    from .models.scorer import POOLINGS
    from .models.xcross.layer import PARAMETRISATIONS
    from .training.trainer import SELECT_METRICS

    positive = integer(1)
    return {
        "seed": integer(0),
        "epochs": integer(1),  # notebook 11's "auto" is its default, which is always accepted
        **{k: positive for k in ("batch_size", "train_batch_size", "grad_accumulation", "train_candidates", "max_length", "n_candidates",
                                 "n_subsets", "max_epochs", "min_examples", "n_val_users", "checkpoint_every")},
        "n_train_users": integer(1, none="every training user"),
        "n_test_users": integer(1, none="every test user"),
        "top_k_layers": integer(1, none="every layer"),
        "validate_every": integer(1, none="only at the start and each epoch end"),
        "meteora_top_k": integer(1, none="every adapter"),
        "prefix_min_history": integer(1, none="one example per user"),
        "checkpoint_every_s": number(0, none="by steps only"),
        "learning_rate": number(0, low_open=True),
        "lora_learning_rate": number(0, low_open=True),
        "head_learning_rate": number(0, low_open=True, none="the learning rate"),
        "warmup_ratio": number(0, 1, high_open=True),
        "user_fraction": number(0, 1, low_open=True, words=("paper",)),  # "paper": the paper's samples per domain
        "lambda1": number(0),
        "lambda2": number(0),
        "cosine_scale": number(0, low_open=True),
        "bf16": one_of(True, False, "auto"),
        "select_metric": one_of(*SELECT_METRICS),
        "primary_metric": one_of(*SELECT_METRICS),
        "accuracy": one_of(*METRICS),
        "parametrisation": one_of(*PARAMETRISATIONS),
        "encoding": one_of("pair", "separate"),
        "lora_encoding": one_of("pair", "separate"),
        "pooling": one_of(*POOLINGS),
        "backbone": backbone,
        "domain": domain(data_dir),
        "target": domain(data_dir),
        "domains": domains(("all",), data_dir),
        "targets": domains(("all",), data_dir),
        "sources": domains(("all", "auto"), data_dir),
        "model": one_of(*MODELS),
        "09_convergence:model": lambda value: None if value is None or isinstance(value, str) else "a model name or null",
        "09_convergence:fixed_effects": subset_of("size", "study", "target", empty=True),
        "models": subset_of("X-Cross", "LoRA"),
        "12_classic:models": subset_of(*CLASSIC_MODELS, comma=True),
        "12_classic:source": domains(("auto", "none"), data_dir),
        "stopping_step": positive,
        "time_budget_s": number(0, low_open=True),
        "pretrain_budget_s": number(0),
        "baselines": subset_of("LoRA", "Pooler + Scorer", "XLoRA", "MeteoRA"),
        "sizes": list_of_integers(1),
        "k_values": list_of_integers(1, words=("all",)),
        "write_reference": boolean,
        "score_test": boolean,
        "train_head": boolean,
    }


def check_values(notebook: str, params: dict, defaults: dict | None = None) -> None:
    """Raise a ParameterError naming every parameter whose value breaks its rule (a value equal to
    the notebook's own default, e.g. None or "auto", is accepted)."""
    data_dir = params.get("data_dir", (defaults or {}).get("data_dir"))  # domains are the folders found there
    rules = _rules(data_dir if isinstance(data_dir, str) else None)
    stem = Path(notebook).stem
    problems = []
    for name, value in params.items():
        if defaults and name in defaults and value == defaults[name]:
            continue
        rule = rules.get(f"{stem}:{name}", rules.get(name))  # "<notebook>:<name>": a rule of one notebook
        why = rule(value) if rule else None
        if why:
            problems.append(f"{name} = {value!r}: must be {why}")
    if problems:
        raise ParameterError(f"{notebook}: " + "; ".join(problems))
