"""distilmt: distil a big Transformer translation model into a small, fast student."""

__version__ = "0.1.0"
