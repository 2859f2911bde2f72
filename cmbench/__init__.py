"""cmbench: an evaluation harness for consistency-family generative models."""

__version__ = "0.1.0"
