"""RNN Zoo: the recurrent language models of Dive into Deep Learning (8.5-9.3), trained and compared."""
from zoo.models import ModelConfig, build_model, create_model, list_models

__all__ = ["ModelConfig", "build_model", "create_model", "list_models"]
