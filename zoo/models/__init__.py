"""The model zoo by name: eight recurrent language models (scratch and concise RNN, GRU, LSTM, deep LSTM)
and a Kneser-Ney n-gram to compare them with."""
from dataclasses import fields

from zoo.models.base import ModelConfig, RecurrentLM
from zoo.models.concise import ConciseLM
from zoo.models.ngram import NGramConfig, NGramLM, fit_ngram
from zoo.models.registry import create_model, describe, list_models, register_model
from zoo.models.scratch import ScratchLM


def build_model(config: ModelConfig) -> RecurrentLM:
    """The model a config describes, freshly initialised."""
    return (ScratchLM if config.impl == "scratch" else ConciseLM)(config)


# The models that are not a RecurrentLM, by their config's "arch": how config.json rebuilds them.
FROM_CONFIG = {"ngram": lambda config: NGramLM(NGramConfig.from_dict(config))}


def model_from_config(config: dict):
    """The (untrained) model a config.json "model" entry describes."""
    build = FROM_CONFIG.get(config.get("arch"), lambda config: build_model(ModelConfig.from_dict(config)))
    return build(config)


def _build(arch: str, impl: str, overrides: dict, **defaults) -> RecurrentLM:
    return build_model(ModelConfig(arch, impl, **{**defaults, **overrides}))


@register_model
def rnn_scratch(**overrides):
    """D2L 8.5: a tanh RNN from scratch."""
    return _build("rnn", "scratch", overrides)


@register_model
def rnn(**overrides):
    """D2L 8.6: nn.RNN."""
    return _build("rnn", "concise", overrides)


@register_model
def gru_scratch(**overrides):
    """D2L 9.1: a GRU from scratch (the book's reset-before form by default)."""
    return _build("gru", "scratch", overrides)


@register_model
def gru(**overrides):
    """D2L 9.1: nn.GRU."""
    return _build("gru", "concise", overrides)


@register_model
def lstm_scratch(**overrides):
    """D2L 9.2: an LSTM from scratch."""
    return _build("lstm", "scratch", overrides)


@register_model
def lstm(**overrides):
    """D2L 9.2: nn.LSTM."""
    return _build("lstm", "concise", overrides)


@register_model
def deep_lstm_scratch(**overrides):
    """D2L 9.3: two stacked scratch LSTM cells (the book's exercise 9.3.1)."""
    return _build("lstm", "scratch", overrides, num_layers=2)


@register_model
def deep_lstm(**overrides):
    """D2L 9.3: nn.LSTM with num_layers=2."""
    return _build("lstm", "concise", overrides, num_layers=2)


@register_model
def ngram(**overrides):
    """A Kneser-Ney character n-gram: the non-neural line to beat.

    Empty (uniform) until counted: use `fit_ngram`. The sizes only neural models have (num_hiddens,
    dropout, ...) are ignored, so code looping over the registry may pass them.
    """
    neural_only = {f.name for f in fields(ModelConfig)} - {f.name for f in fields(NGramConfig)}
    return NGramLM(NGramConfig(**{k: v for k, v in overrides.items() if k not in neural_only}))


__all__ = ["ModelConfig", "RecurrentLM", "ScratchLM", "ConciseLM", "NGramConfig", "NGramLM", "build_model",
           "model_from_config", "fit_ngram", "create_model", "describe", "list_models", "register_model"]
