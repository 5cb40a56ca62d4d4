"""Training: data (extended XYZ, padded batches), losses, the optax loop, checkpoints,
plots and the TOML configs of ``jaxlr fit``."""

from .checkpoint import load, save
from .config import load_config, run_eval, run_fit
from .data import BatchLoader, Dataset, Structure, check_targets, fit_offsets, make_batches, read_structures
from .loop import FitResult, evaluate, fit
from .loss import Metrics, loss_fn

__all__ = [
    "BatchLoader",
    "Dataset",
    "FitResult",
    "Metrics",
    "Structure",
    "check_targets",
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
