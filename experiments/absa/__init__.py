"""Multi-aspect sentiment on UIT-ViSFD: per-aspect focal loss with class weights plus a
multi-label supervised contrastive term, one model or a vmapped ensemble."""

from experiments.absa.recipe import build

__all__ = ["build"]
