"""RNN Zoo: the recurrent language models of Dive into Deep Learning (8.5-9.3), trained and compared."""
from zoo.models import ModelConfig, ScratchLM, create_model, list_models, register_model

__all__ = ["ModelConfig", "ScratchLM", "create_model", "list_models", "register_model"]
