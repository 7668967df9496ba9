"""leantrain: train transformer language models in less memory and with fewer hand-tuned knobs."""

__version__ = "0.1.0"
