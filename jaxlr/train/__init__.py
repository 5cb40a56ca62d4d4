"""Training (the only package that imports optax; matplotlib only for plots).

Losses (:func:`loss_fn`, :class:`Metrics`), the optax loop (:func:`fit`, :func:`evaluate`),
checkpoints (:func:`save`, :func:`load`) and the TOML configs of ``jaxlr fit`` /
``jaxlr eval`` (:func:`load_config`, :func:`run_fit`, :func:`run_eval`).  Structures,
datasets and padded batches live in :mod:`jaxlr.data`.
"""

from ._checkpoint import load, save
from ._config import load_config, run_eval, run_fit
from ._density_eval import density_esp_errors, esp_rmse, esp_rmse_exact
from ._loop import FitResult, ema_weight, evaluate, fit
from ._loss import Metrics, loss_fn
from ._pretrained import load_pretrained, pretrained_models

__all__ = [
    "FitResult",
    "Metrics",
    "density_esp_errors",
    "esp_rmse",
    "esp_rmse_exact",
    "ema_weight",
    "evaluate",
    "fit",
    "load",
    "load_config",
    "load_pretrained",
    "loss_fn",
    "pretrained_models",
    "run_eval",
    "run_fit",
    "save",
]
