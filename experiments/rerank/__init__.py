"""Next-item candidate reranking: SASRec with a listwise softmax (or BPR) loss over
sampled candidate lists, evaluated by the SASRec protocol on Amazon Games."""

from experiments.rerank.recipe import build

__all__ = ["build"]
