"""loyalty-ladder: a rules-engine loyalty ladder for online shops."""

__version__ = "0.1.0"
