"""Training: data (extended XYZ, padded batches), losses, the optax loop, checkpoints,
plots and the TOML configs of ``jaxlr fit``."""

from . import data  # the data layer's public module (re-exports the three below)
from .batching import BatchLoader, make_batches
from .checkpoint import load, save
from .config import load_config, run_eval, run_fit
from .dataset import Dataset, check_targets, fit_offsets
from .loop import FitResult, evaluate, fit
from .loss import Metrics, loss_fn
from .structures import Structure, read_structures

__all__ = [
    "BatchLoader",
    "Dataset",
    "FitResult",
    "Metrics",
    "Structure",
    "check_targets",
    "data",
    "evaluate",
    "fit",
    "fit_offsets",
    "load",
    "load_config",
    "loss_fn",
    "make_batches",
    "read_structures",
    "run_eval",
    "run_fit",
    "save",
]
