"""cmbench: an evaluation harness for consistency-family generative models.

The public API is :mod:`cmbench.api`: ``evaluate`` (models in memory), ``score`` (images made
elsewhere), ``run`` (a suite file) and ``read_results`` (a run folder), each returning result rows as
a pandas DataFrame; ``Model`` and ``Run`` describe what to evaluate. cmbench prints nothing as a
library: its messages go to the ``cmbench`` logger of :mod:`logging` (silent until configured).
"""

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())  # a library: silent unless the caller configures logging

_API = ("Model", "Run", "evaluate", "score", "run", "read_results")
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    """The API is imported on first use, so ``import cmbench`` (and the command line's --help) stays light."""
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'cmbench' has no attribute {name!r}")
