"""evalsuite: evaluate base and fine-tuned language models, and close the loop with training."""

__version__ = "0.1.0"
