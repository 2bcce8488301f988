"""X-Cross workbench library: data protocol, metrics, models and training.

Thin by design: notebooks call these functions and show the results.
"""

__version__ = "0.1.0"
