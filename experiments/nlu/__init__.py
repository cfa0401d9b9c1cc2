"""Joint intent + BIO entity (+ command) NLU: soft label masks, λ schedules, focal
entities, BIO-constrained decoding, span F1."""

from experiments.nlu.recipe import build

__all__ = ["build"]
