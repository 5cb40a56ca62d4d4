"""Checkpoints: a folder with ``config.json`` and ``variables.msgpack``.

``config.json`` holds the potential's :meth:`~jaxlr.models.Potential.config` (model name
and every static hyperparameter, periodic meshes included), its species, the floating
dtype of the variables and free-form ``extra`` information (epoch, losses, ...).
``variables.msgpack`` holds the variables ``{"params", "stats"}`` as numpy arrays,
serialised with :func:`flax.serialization.msgpack_serialize`.  Loading rebuilds the same
potential and the same arrays bit for bit, so predictions are identical.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["save", "load", "read_config", "CONFIG_FILE", "VARIABLES_FILE"]

CONFIG_FILE = "config.json"
VARIABLES_FILE = "variables.msgpack"
_FORMAT = "jaxlr-checkpoint"
_VERSION = 1


def _floating_dtype(variables) -> str:
    kinds = {np.dtype(x.dtype).name for x in jax.tree_util.tree_leaves(variables)
             if np.issubdtype(np.dtype(x.dtype), np.floating)}
    if len(kinds) > 1:
        return "mixed(" + ",".join(sorted(kinds)) + ")"
    return kinds.pop() if kinds else "float32"


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def _json_default(x):
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (set, tuple)):
        return list(x)
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"{type(x).__name__} is not JSON serialisable")


def write_json(path, data, *, indent: int = 1) -> None:
    """Write ``data`` as JSON (numpy numbers, arrays and paths converted), atomically."""
    text = json.dumps(data, indent=indent, default=_json_default, ensure_ascii=False)
    _atomic_write(Path(path), text.encode("utf-8"))


def save(path, potential, variables, extra: dict | None = None) -> Path:
    """Write a checkpoint folder (created if needed; existing files are replaced atomically).

    Args:
      path: folder name.
      potential: :class:`jaxlr.models.Potential`.
      variables: ``{"params", "stats"}`` from :meth:`~jaxlr.models.Potential.init` or training.
      extra: JSON-serialisable metadata stored under ``"extra"`` in ``config.json``.

    Returns:
      the folder as a :class:`pathlib.Path`.

    Example:
      >>> # save("runs/water/checkpoint", potential, variables, extra={"epoch": 12})
      >>> # potential, variables = load("runs/water/checkpoint")
    """
    from flax import serialization

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    host = jax.tree_util.tree_map(lambda x: np.asarray(x), jax.device_get(dict(variables)))
    host = _plain(host)
    config = {
        "format": _FORMAT,
        "version": _VERSION,
        "potential": potential.config(),
        "species": [int(z) for z in potential.species],
        "dtype": _floating_dtype(host),
        "extra": extra or {},
    }
    _atomic_write(path / VARIABLES_FILE, serialization.msgpack_serialize(host))
    write_json(path / CONFIG_FILE, config, indent=2)
    return path


def _plain(tree):
    """Nested mappings → plain dicts (FrozenDict and friends), leaves untouched."""
    if hasattr(tree, "items"):
        return {str(k): _plain(v) for k, v in tree.items()}
    return tree


def read_config(path) -> dict:
    """The parsed ``config.json`` of a checkpoint folder (ValueError when it is not one)."""
    path = Path(path)
    cfg_file = path / CONFIG_FILE
    if not path.is_dir() or not cfg_file.is_file() or not (path / VARIABLES_FILE).is_file():
        raise ValueError(f"{str(path)!r} is not a jaxlr checkpoint folder (it needs {CONFIG_FILE} and "
                         f"{VARIABLES_FILE}).")
    with open(cfg_file, encoding="utf-8") as fh:
        config = json.load(fh)
    if config.get("format") != _FORMAT:
        raise ValueError(f"{str(cfg_file)!r} is not a jaxlr checkpoint configuration.")
    if int(config.get("version", 0)) > _VERSION:
        raise ValueError(f"checkpoint version {config.get('version')} is newer than this jaxlr understands "
                         f"({_VERSION}); upgrade jaxlr.")
    return config


def load(path):
    """Read a checkpoint folder written by :func:`save`.

    Returns:
      ``(potential, variables)``: the rebuilt :class:`jaxlr.models.Potential` and the
      variables as jax arrays of the stored dtypes (bit-identical to what was saved).

    Raises:
      ValueError: not a checkpoint folder; float64 variables while ``jax_enable_x64`` is
        off (enable it first: ``jax.config.update("jax_enable_x64", True)``).
    """
    from flax import serialization

    from ..models._potential import Potential

    path = Path(path)
    config = read_config(path)
    with open(path / VARIABLES_FILE, "rb") as fh:
        host = serialization.msgpack_restore(fh.read())
    leaves = jax.tree_util.tree_leaves(host)
    if any(np.asarray(x).dtype == np.float64 for x in leaves) and not jax.config.jax_enable_x64:
        raise ValueError(f"checkpoint {str(path)!r} holds float64 variables but jax_enable_x64 is off; enable "
                         "it before loading (jax.config.update('jax_enable_x64', True) or JAX_ENABLE_X64=1).")
    potential = Potential.from_config(config["potential"])
    if tuple(potential.species) != tuple(config.get("species", potential.species)):
        raise ValueError(f"checkpoint {str(path)!r} is inconsistent: species {config.get('species')} vs "
                         f"{potential.species} in the model configuration.")
    variables = jax.tree_util.tree_map(lambda x: jnp.asarray(np.asarray(x)), host)
    return potential, variables
