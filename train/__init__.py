"""Training entry points: ``python -m train.age`` and friends share ``train.engine``."""
