"""Pretrained models shipped with jaxlr, loadable by name.

Each is a checkpoint folder (:func:`jaxlr.train.save`) under ``jaxlr/data/files/pretrained/``
whose ``config.json`` carries, under ``extra``, what a user needs to judge it: the level of
theory and data set it was trained on, the split, the training targets and the test
metrics.  ``jaxlr eval NAME DATA.xyz`` accepts these names wherever it accepts a
checkpoint folder.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from ._checkpoint import load, read_config

__all__ = ["pretrained_folder", "pretrained_models", "load_pretrained", "resolve_checkpoint"]


def pretrained_folder() -> Path:
    """The folder holding the shipped checkpoints (inside the installed package)."""
    return Path(str(resources.files("jaxlr.data") / "files" / "pretrained"))


def pretrained_models(folder=None) -> dict:
    """The shipped models: ``{name: metadata}`` (the ``extra`` of each ``config.json``).

    Args:
      folder: where to look (default :func:`pretrained_folder`).

    Example:
      >>> models = pretrained_models()
      >>> all(isinstance(meta, dict) for meta in models.values())
      True
    """
    folder = Path(folder) if folder is not None else pretrained_folder()
    out = {}
    if folder.is_dir():
        for path in sorted(p for p in folder.iterdir() if p.is_dir()):
            try:
                out[path.name] = dict(read_config(path).get("extra", {}))
            except ValueError:
                continue
    return out


def resolve_checkpoint(name_or_path, folder=None) -> Path:
    """A checkpoint folder from a path or the name of a shipped model.

    Raises:
      ValueError: neither an existing folder nor a known name (the message lists the names).
    """
    path = Path(name_or_path)
    if path.is_dir():
        return path
    folder = Path(folder) if folder is not None else pretrained_folder()
    candidate = folder / str(name_or_path)
    if str(name_or_path) and "/" not in str(name_or_path) and candidate.is_dir():
        return candidate
    names = sorted(pretrained_models(folder))
    raise ValueError(f"{str(name_or_path)!r} is neither a checkpoint folder nor a shipped model "
                     f"(shipped: {names or 'none'}).")


def load_pretrained(name: str, folder=None):
    """Load a shipped model by name.

    Args:
      name: one of :func:`pretrained_models`.
      folder: where to look (default :func:`pretrained_folder`).

    Returns:
      ``(potential, variables)`` as :func:`jaxlr.train.load` (float64 models need
      ``jax_enable_x64``).

    Raises:
      ValueError: an unknown name (the message lists the shipped ones).
    """
    return load(resolve_checkpoint(name, folder))
