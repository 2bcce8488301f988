"""Settings of an X-Cross model; the paper's ablations are named presets of lambda1 and lambda2."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .layer import PARAMETRISATIONS

ABLATIONS = {
    None: None,  # full model
    "-layers": (0.0, 0.0),  # no refinement: the streams are only averaged at the end
    "-interactions": (None, 0.0),  # lambda2 = 0: scaling of other streams only
    "-experts": (0.0, None),  # lambda1 = 0: interaction (difference) terms only
}
INTEGRATION_POINTS = ("layer", "projection")


@dataclass
class XCrossConfig:
    top_k_layers: int | None = None  # integrate the top K layers; None: all (the paper: 9 of 12)
    lambda1: float = 1.0  # weight of the scaled other streams
    lambda2: float = 1.0  # weight of the interaction (difference) terms
    integration_point: str = "layer"  # "layer": each layer's output (the paper); "projection": each LoRA-adapted projection
    ablation: str | None = None  # None, "-layers", "-interactions", "-experts"
    parametrisation: str = "paper"  # how c enters z = c W: "paper", "fan_in" (/ sqrt(n d)), "normalised" (layer.py)

    def __post_init__(self):
        if self.ablation not in ABLATIONS:
            raise ValueError(f"ablation must be one of {list(ABLATIONS)}, got {self.ablation!r}")
        if self.integration_point not in INTEGRATION_POINTS:
            raise ValueError(f"integration_point must be one of {INTEGRATION_POINTS}, got {self.integration_point!r}")
        if self.parametrisation not in PARAMETRISATIONS:
            raise ValueError(f"parametrisation must be one of {PARAMETRISATIONS}, got {self.parametrisation!r}")
        preset = ABLATIONS[self.ablation]
        if preset is not None:
            l1, l2 = preset
            self.lambda1 = self.lambda1 if l1 is None else l1
            self.lambda2 = self.lambda2 if l2 is None else l2

    def to_dict(self) -> dict:
        return asdict(self)
