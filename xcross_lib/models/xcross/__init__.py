"""X-Cross (DESIGN.md section 4): layer-wise integration of n frozen source streams."""

from .config import XCrossConfig
from .layer import Integrator, StackedLoRALinear
from .model import XCross

__all__ = ["Integrator", "StackedLoRALinear", "XCross", "XCrossConfig"]
