"""The model zoo by name: eight recurrent language models (scratch and concise RNN, GRU, LSTM, deep LSTM)
and a Kneser-Ney n-gram to compare them with.

A scratch model is a stack of cells (zoo/models/cells.py); registering one of your own is three lines:

    @register_model
    def lstm_peephole(**config):
        return ScratchLM(ModelConfig(**config), PeepholeLSTMCell)
"""
from dataclasses import asdict, fields

from zoo.models.base import ModelConfig, RecurrentLM
from zoo.models.cells import Cell, GRUCell, LSTMCell, RNNCell, TorchGRUCell
from zoo.models.concise import ConciseLM
from zoo.models.ngram import NGramConfig, NGramLM, fit_ngram
from zoo.models.registry import create_model, describe, list_models, register_model
from zoo.models.scratch import ScratchLM


BOOK = ["rnn-scratch", "rnn", "gru-scratch", "gru", "lstm-scratch", "lstm", "deep-lstm-scratch", "deep-lstm", "ngram"]


def model_from_config(config: dict):
    """The (untrained) model a config.json "model" entry describes, built by the registered factory it names."""
    if config.get("arch") == "ngram":
        return NGramLM(NGramConfig.from_dict(config))
    checked = ModelConfig.from_dict(config)     # unknown keys and bad values: one ValueError
    return create_model(**asdict(checked))


def _deep(config: dict) -> ModelConfig:
    return ModelConfig(**{"num_layers": 2, **config})


@register_model
def rnn_scratch(**config):
    """D2L 8.5: a tanh RNN from scratch."""
    return ScratchLM(ModelConfig(**config), RNNCell)


@register_model
def rnn(**config):
    """D2L 8.6: nn.RNN."""
    return ConciseLM(ModelConfig(**config), "rnn")


@register_model
def gru_scratch(**config):
    """D2L 9.1: the book's GRU from scratch (the reset gate acts before the recurrent product)."""
    return ScratchLM(ModelConfig(**config), GRUCell)


@register_model
def gru(**config):
    """D2L 9.1: nn.GRU."""
    return ConciseLM(ModelConfig(**config), "gru")


@register_model
def gru_torch_scratch(**config):
    """PyTorch's GRU from scratch: the reset gate acts after the recurrent product, as in nn.GRU (and cuDNN)."""
    return ScratchLM(ModelConfig(**config), TorchGRUCell)


@register_model
def lstm_scratch(**config):
    """D2L 9.2: an LSTM from scratch."""
    return ScratchLM(ModelConfig(**config), LSTMCell)


@register_model
def lstm(**config):
    """D2L 9.2: nn.LSTM."""
    return ConciseLM(ModelConfig(**config), "lstm")


@register_model
def deep_lstm_scratch(**config):
    """D2L 9.3: two stacked scratch LSTM cells (the book's exercise 9.3.1)."""
    return ScratchLM(_deep(config), LSTMCell)


@register_model
def deep_lstm(**config):
    """D2L 9.3: nn.LSTM with num_layers=2."""
    return ConciseLM(_deep(config), "lstm")


@register_model
def ngram(name: str = "ngram", **overrides):
    """A Kneser-Ney character n-gram: the non-neural line to beat.

    Empty (uniform) until counted: use `fit_ngram`. The sizes only neural models have (num_hiddens,
    dropout, ...) are ignored, so code looping over the registry may pass them.
    """
    neural_only = {f.name for f in fields(ModelConfig)} - {f.name for f in fields(NGramConfig)}
    return NGramLM(NGramConfig(**{k: v for k, v in overrides.items() if k not in neural_only}))


from zoo.models import variants  # noqa: E402,F401  (registers the exercises' variants after the book's models)

__all__ = ["BOOK", "ModelConfig", "RecurrentLM", "ScratchLM", "ConciseLM", "Cell", "RNNCell", "GRUCell", "TorchGRUCell",
           "LSTMCell", "NGramConfig", "NGramLM", "model_from_config", "fit_ngram", "create_model", "describe",
           "list_models", "register_model"]
