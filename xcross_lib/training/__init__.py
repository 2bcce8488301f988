"""Training and evaluation of scorers: multiple-choice training with resume, batched scoring."""

from .evaluate import evaluate_scorer, score_candidates
from .trainer import TrainConfig, TrainResult, train_scorer

__all__ = ["TrainConfig", "TrainResult", "evaluate_scorer", "score_candidates", "train_scorer"]
