"""Models: backbones by name, the LoRA scorer of DESIGN.md section 3."""

from .backbones import Backbone, load_backbone
from .scorer import Scorer, ScorerConfig, ScoringHead, multiple_choice_loss

__all__ = ["Backbone", "Scorer", "ScorerConfig", "ScoringHead", "load_backbone", "multiple_choice_loss"]
