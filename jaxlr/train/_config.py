"""TOML configuration of a training run (``jaxlr fit CONFIG``) and checkpoint evaluation.

The format is :data:`CONFIG_FORMAT` (below; ``jaxlr fit --help`` prints it).
:func:`load_config` / :func:`normalize_config` validate a configuration before any data is
read: unknown tables or keys (with the closest valid key), wrong types and out-of-range
numbers raise ``ValueError`` naming the table and the key.

:func:`run_fit` trains, saves the best checkpoint (``run_dir/checkpoint``), writes
``history.json``, ``metrics.json`` (MAE/RMSE per target and split), the resolved
configuration ``fit_config.json`` and plots, and prints a summary table.
:func:`run_eval` evaluates a checkpoint on a data file.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import sys
import tomllib
from pathlib import Path

from ._checkpoint import write_json

__all__ = ["load_config", "normalize_config", "run_fit", "run_eval", "format_table", "structure_filter",
           "CONFIG_FORMAT"]

#: The configuration format: tables, keys and one example (``jaxlr fit --help`` prints it).
CONFIG_FORMAT = """\
A configuration is a TOML file with four tables; paths are relative to its folder.

[data]
  train             required: extended XYZ file (energy eV, forces eV/A, ...)
  valid, test       optional files; without `valid`, `split` carves it out of `train`
  split             fractions of `train`: [train, valid] or [train, valid, test]
                    (default [0.9, 0.1])
  split_seed        integer seed of the split (default 0)
  periodic          true/false: override the files' pbc (false drops container cells)
  total_charge_key  info key of the total charge (default "total_charge")
  test_filter       "KEY OP VALUE" (or a list, all required): test structures kept
[model]
  name              required: local | lode | latent | qeq | density
  species           atomic numbers (default: the training set's)
  hidden, ...       any other hyperparameter of the model (activation, chi_hidden, ...)
  [model.local]     cutoff (A), max_radial, max_angular, sigma (A)
  [model.lode]      cutoff, max_radial, max_angular, sigma, density_sigma, order
  [model.coulomb]   accuracy, smearing, mesh, order
[training]          (keyword arguments of jaxlr.train.fit)
  epochs, batch_size, valid_batch_size, max_shapes, init_structures   integers >= 1
  patience          integer >= 1 (leave out: never stop early)
  seed              integer >= 0
  learning_rate     number > 0 (peak rate)
  schedule          cosine | constant | exponential
  warmup_epochs     number >= 0
  decay_rate        number in (0, 1] (exponential: final rate / peak)
  final_lr_fraction number in [0, 1] (cosine: final rate / peak)
  optimizer         adam | adamw;   weight_decay   number >= 0 (adamw)
  clip_norm         number > 0 (global gradient norm)
  ema_decay         number in [0, 1): validate and keep an average of the parameters
  weights           { target = weight }, targets: energy, forces, stress, charges,
                    dipole, coefficients (default: energy and forces found in the
                    data); every weighted target must be present in every structure
  dtype             float32 | float64;   progress   true | false
  devices           integer >= 1: data-parallel training over that many devices
                    (batch_size must be a multiple of it); multi-host runs set
                    JAXLR_COORDINATOR=host:port (or auto on SLURM / Cloud TPU),
                    JAXLR_NUM_PROCESSES and JAXLR_PROCESS_ID in every process, and
                    devices counts the devices of all processes
[output]
  run_dir           default: runs/<config file stem>
  evaluate          splits to evaluate (default ["train", "valid", "test"])
  plots             true | false (default true)

Example (water.toml):

  [data]
  train = "train.xyz"
  test = "test.xyz"
  split = [0.9, 0.1]

  [model]
  name = "local"
  hidden = [32, 32]
  [model.local]
  cutoff = 4.0

  [training]
  epochs = 200
  batch_size = 8
  learning_rate = 1e-3
  schedule = "cosine"
  weights = { energy = 1.0, forces = 10.0 }

  [output]
  run_dir = "runs/water"
"""

if __doc__:  # help(jaxlr.train._config) shows the format too
    __doc__ += "\n" + "\n".join(("    " + line).rstrip() for line in CONFIG_FORMAT.splitlines()) + "\n"

_DATA_KEYS = {"train", "valid", "test", "split", "split_seed", "periodic", "total_charge_key", "test_filter"}
_OUTPUT_KEYS = {"run_dir", "evaluate", "plots"}
_SECTIONS = ("data", "model", "training", "output")
_SPLITS = ("train", "valid", "test")
_FILTER = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(<=|>=|==|!=|<|>)\s*(.+?)\s*$")


def _training_keys() -> set:
    from ._loop import FIT_OPTIONS

    return set(FIT_OPTIONS) - {"run_dir", "plots"}


def _err(where: str, message: str) -> ValueError:
    return ValueError(f"configuration {where}: {message}")


def _unknown(where: str, unknown, valid, hint: str = "") -> ValueError:
    """Unknown keys of a table, each with its closest valid key, and the valid keys."""
    valid = sorted(valid)
    names = []
    for key in sorted(unknown):
        close = difflib.get_close_matches(key, valid, n=1)
        names.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return _err(where, f"unknown key(s) {', '.join(names)}{hint}; valid keys: {valid}.")


#: numeric [training] keys: (integer?, the allowed range as a test, how to say it)
_TRAINING_NUMBERS = {
    "epochs": (True, lambda v: v >= 1, "a positive integer (e.g. 200)"),
    "batch_size": (True, lambda v: v >= 1, "a positive integer (structures per batch, e.g. 8)"),
    "valid_batch_size": (True, lambda v: v >= 1, "a positive integer"),
    "max_shapes": (True, lambda v: v >= 1, "a positive integer (padded sizes per dataset)"),
    "init_structures": (True, lambda v: v >= 1, "a positive integer"),
    "patience": (True, lambda v: v >= 1, "a positive integer (leave it out to never stop early)"),
    "seed": (True, lambda v: v >= 0, "an integer >= 0"),
    "learning_rate": (False, lambda v: v > 0, "a finite number > 0 (e.g. 1e-3)"),
    "warmup_epochs": (False, lambda v: v >= 0, "a finite number >= 0 (epochs of linear warmup)"),
    "decay_rate": (False, lambda v: 0 < v <= 1, "a number in (0, 1] (final rate / peak rate)"),
    "final_lr_fraction": (False, lambda v: 0 <= v <= 1, "a number in [0, 1] (final rate / peak rate)"),
    "weight_decay": (False, lambda v: v >= 0, "a finite number >= 0"),
    "clip_norm": (False, lambda v: v > 0, "a finite number > 0 (gradient norm)"),
    "ema_decay": (False, lambda v: 0 <= v < 1, "a number in [0, 1) (e.g. 0.99; leave it out for no average)"),
    "devices": (True, lambda v: v >= 1, "a positive integer (devices each batch is split over, e.g. 4)"),
}


def _check_training_values(training: dict) -> None:
    """Types and ranges of the [training] values (names the key and what is allowed)."""
    from ._loop import OPTIMIZERS, SCHEDULES

    for key, (integer, ok, allowed) in _TRAINING_NUMBERS.items():
        if key not in training:
            continue
        v = training[key]
        where = f"[training] {key}"
        if isinstance(v, str):
            raise _err(where, f"must be {allowed}, got the string {v!r} (write numbers without quotes).")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and not isinstance(v, int)):
            raise _err(where, f"must be {allowed}, got {v!r}.")
        if not (math.isfinite(v) and ok(v)):
            raise _err(where, f"must be {allowed}, got {v!r}.")
    choices = {"schedule": SCHEDULES, "optimizer": OPTIMIZERS, "dtype": ("float32", "float64")}
    for key, options in choices.items():
        if key in training and training[key] not in options:
            raise _err(f"[training] {key}", f"must be one of {list(options)}, got {training[key]!r}.")
    if "progress" in training and not isinstance(training["progress"], bool):
        raise _err("[training] progress", f"must be true or false, got {training['progress']!r}.")


def _check_model_table(model: dict) -> None:
    """Keys of [model] and of its sub-tables ([model.local], ...) against the model's fields."""
    from ..models._energy_models import MODELS

    fields = [f for f in dataclasses.fields(MODELS[model["name"]]) if f.name not in ("parent", "name", "species")]
    tables = {f.name: type(f.default) for f in fields
              if dataclasses.is_dataclass(f.default) and not isinstance(f.default, type)}
    unknown = set(model) - {"name", "species"} - {f.name for f in fields}
    if unknown:
        sub = [k for k in unknown if isinstance(model[k], dict)]
        hint = (f" ([model.{sub[0]}] is no table of model {model['name']!r}; its tables: "
                f"{[f'model.{t}' for t in tables]})") if sub else ""
        raise _unknown(f"[model] (model {model['name']!r})", unknown, {"name", "species"} | {f.name for f in fields},
                       hint)
    for key, value in model.items():
        if key in tables:
            if not isinstance(value, dict):
                raise _err(f"[model] {key}", f"must be a table ([model.{key}] with keys "
                                             f"{[f.name for f in dataclasses.fields(tables[key])]}), got {value!r}.")
            valid = {f.name for f in dataclasses.fields(tables[key])}
            if set(value) - valid:
                raise _unknown(f"[model.{key}]", set(value) - valid, valid)
        elif isinstance(value, dict):
            raise _err(f"[model.{key}]", f"{key!r} is a value, not a table, of model {model['name']!r}; its "
                                         f"tables: {[f'model.{t}' for t in tables]}.")


def structure_filter(conditions):
    """A predicate ``Structure → bool`` from conditions like ``"distance > 6.0"``.

    Each condition is ``KEY OP VALUE`` with OP one of ``< <= > >= == !=``; KEY is a key of
    ``Structure.info`` or ``n_atoms`` / ``total_charge``; VALUE a number or a word.  A list
    of conditions must all hold.

    Example:
      >>> import numpy as np
      >>> from jaxlr.data import Structure
      >>> keep = structure_filter(["distance >= 6", "n_atoms < 10"])
      >>> keep(Structure(positions=np.zeros((1, 3)), numbers=[1], info={"distance": 7.5}))
      True
    """
    import operator

    ops = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq,
           "!=": operator.ne}
    if isinstance(conditions, str):
        conditions = [conditions]
    parsed = []
    for cond in conditions:
        m = _FILTER.match(str(cond))
        if not m:
            raise ValueError(f"cannot parse the filter {cond!r}; write 'KEY OP VALUE' with OP one of "
                             "<, <=, >, >=, ==, != (e.g. 'distance > 6.0').")
        key, op, raw = m.groups()
        raw = raw.strip().strip("'\"")
        try:
            value = float(raw)
        except ValueError:
            value = raw
        parsed.append((key, ops[op], value, cond))

    def keep(structure) -> bool:
        for key, op, value, cond in parsed:
            if key == "n_atoms":
                got = structure.n_atoms
            elif key == "total_charge":
                got = structure.total_charge
            elif key in structure.info:
                got = structure.info[key]
            else:
                raise ValueError(f"filter {cond!r}: a structure has no info key {key!r} (its keys: "
                                 f"{sorted(structure.info)}).")
            if isinstance(value, float):
                try:
                    got = float(got)
                except (TypeError, ValueError):
                    raise ValueError(f"filter {cond!r}: info {key!r} = {got!r} is not a number.") from None
            else:
                got = str(got)
            if not op(got, value):
                return False
        return True

    return keep


def _path(base: Path, value, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise _err(where, f"must be a path string, got {value!r}.")
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (base / p))


def normalize_config(raw: dict, base_dir=".", *, name: str = "fit") -> dict:
    """Validate a configuration dict and resolve its paths against ``base_dir``.

    Returns:
      a new dict with the four tables (``output`` and ``training`` may be empty in the
      input): data paths and ``run_dir`` absolute, defaults filled in.

    Raises:
      ValueError: unknown tables or keys (also in ``[model.local]`` and the other model
        sub-tables, with the closest valid key), missing ``[data] train`` or ``[model]
        name``, wrongly typed or out-of-range values (naming the table and the key, e.g.
        ``[training] learning_rate``), unparsable ``test_filter``.
    """
    base = Path(base_dir).resolve()
    if not isinstance(raw, dict):
        raise ValueError(f"a configuration must be a table (dict), got {type(raw).__name__}.")
    unknown = sorted(set(raw) - set(_SECTIONS))
    if unknown:
        raise ValueError(f"configuration: unknown table(s) {unknown}; the tables are {list(_SECTIONS)}.")
    for sec in ("data", "model"):
        if sec not in raw:
            raise ValueError(f"configuration: the [{sec}] table is missing (it is required).")
    for sec in _SECTIONS:
        if sec in raw and not isinstance(raw[sec], dict):
            raise ValueError(f"configuration: [{sec}] must be a table, got {type(raw[sec]).__name__}.")

    # [data]
    data = dict(raw["data"])
    unknown = set(data) - _DATA_KEYS
    if unknown:
        raise _unknown("[data]", unknown, _DATA_KEYS)
    if "train" not in data:
        raise _err("[data]", "'train' (the training data file) is required.")
    for key in ("train", "valid", "test"):
        if key in data:
            data[key] = _path(base, data[key], f"[data] {key}")
    if "split" in data:
        split = data["split"]
        if (not isinstance(split, list) or len(split) not in (2, 3)
                or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and x >= 0 for x in split)
                or sum(split) > 1 + 1e-9):
            raise _err("[data] split", f"must be 2 or 3 non-negative fractions summing to at most 1 "
                                       f"(train, valid[, test]), got {split!r}.")
        if "valid" in data:
            raise _err("[data]", "give either 'valid' (a file) or 'split' (fractions of 'train'), not both.")
        if len(split) == 3 and "test" in data:
            raise _err("[data]", "'split' has a test fraction but 'test' is also a file; use two fractions.")
        if split[1] <= 0:
            raise _err("[data] split", "the validation fraction must be positive.")
    elif "valid" not in data:
        data["split"] = [0.9, 0.1]
    data.setdefault("split_seed", 0)
    if not isinstance(data["split_seed"], int) or isinstance(data["split_seed"], bool):
        raise _err("[data] split_seed", f"must be an integer, got {data['split_seed']!r}.")
    if data.get("periodic") is not None and not isinstance(data["periodic"], bool):
        raise _err("[data] periodic", f"must be true or false, got {data['periodic']!r}.")
    data.setdefault("periodic", None)
    data.setdefault("total_charge_key", "total_charge")
    if not isinstance(data["total_charge_key"], str):
        raise _err("[data] total_charge_key", f"must be a string, got {data['total_charge_key']!r}.")
    if "test_filter" in data:
        tf = data["test_filter"]
        if isinstance(tf, str):
            tf = [tf]
        if not isinstance(tf, list) or not all(isinstance(x, str) for x in tf):
            raise _err("[data] test_filter", f"must be a string or a list of strings, got {data['test_filter']!r}.")
        try:
            structure_filter(tf)
        except ValueError as err:
            raise _err("[data] test_filter", str(err)) from None
        data["test_filter"] = tf

    # [model]
    model = dict(raw["model"])
    if "name" not in model:
        raise _err("[model]", "'name' is required (local, lode, latent, qeq or density).")
    from ..models._energy_models import MODELS

    if model["name"] not in MODELS:
        raise _err("[model] name", f"unknown model {model['name']!r}; choose one of {sorted(MODELS)}.")
    if "species" in model:
        sp = model["species"]
        if not isinstance(sp, list) or not sp or not all(isinstance(z, int) and not isinstance(z, bool)
                                                         for z in sp):
            raise _err("[model] species", f"must be a list of atomic numbers, got {sp!r}.")
    _check_model_table(model)

    # [training]
    training = dict(raw.get("training", {}))
    allowed = _training_keys()
    unknown = set(training) - allowed
    if unknown:
        hint = " (run_dir and plots belong in [output])" if unknown & {"run_dir", "plots"} else ""
        raise _unknown("[training]", unknown, allowed, hint)
    if "weights" in training:
        if not isinstance(training["weights"], dict):
            raise _err("[training] weights", f"must be a table target = weight, got {training['weights']!r}.")
        from ._loss import check_weights

        try:
            check_weights(training["weights"])
        except ValueError as err:
            raise _err("[training] weights", str(err)) from None
    _check_training_values(training)

    # [output]
    output = dict(raw.get("output", {}))
    unknown = set(output) - _OUTPUT_KEYS
    if unknown:
        raise _unknown("[output]", unknown, _OUTPUT_KEYS)
    output["run_dir"] = _path(base, output.get("run_dir", f"runs/{name}"), "[output] run_dir")
    ev = output.get("evaluate", list(_SPLITS))
    if not isinstance(ev, list) or not set(ev) <= set(_SPLITS):
        raise _err("[output] evaluate", f"must be a list from {list(_SPLITS)}, got {ev!r}.")
    output["evaluate"] = ev
    output.setdefault("plots", True)
    if not isinstance(output["plots"], bool):
        raise _err("[output] plots", f"must be true or false, got {output['plots']!r}.")
    return {"data": data, "model": model, "training": training, "output": output}


def load_config(path) -> dict:
    """Read and validate a TOML configuration (see the module docstring).

    Paths are resolved relative to the folder of ``path``; the default ``run_dir`` is
    ``runs/<file stem>`` next to it.

    Raises:
      ValueError: unreadable TOML, unknown tables or keys, missing required entries.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"configuration file {str(path)!r} does not exist.")
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"configuration file {str(path)!r} is not valid TOML: {err}") from None
    return normalize_config(raw, path.parent, name=path.stem)


# ------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------
def _read(path, data_cfg, name):
    from ..data._dataset import Dataset

    if not Path(path).is_file():
        raise ValueError(f"{name} data file {str(path)!r} does not exist.")
    ds = Dataset.from_file(path, periodic=data_cfg["periodic"], total_charge_key=data_cfg["total_charge_key"])
    if len(ds) == 0:
        raise ValueError(f"{name} data file {str(path)!r} holds no structures.")
    return ds


def _check_split(name, ds, species, targets):
    """Species and targets of one split, before anything is compiled."""
    from ..data._dataset import check_targets, species_indices

    try:
        for k, s in enumerate(ds):
            species_indices(s.numbers, species, structure=k)
        check_targets(ds, targets)
    except ValueError as err:
        raise ValueError(f"{name} set: {err}") from None


def _in_file_order(full, parts):
    """The structures of ``parts`` (splits of the dataset ``full``) in file order, and their
    0-based frame indices in the file."""
    from ..data._dataset import Dataset

    frame = {id(s): k for k, s in enumerate(full)}
    frames = sorted(frame[id(s)] for part in parts for s in part)
    return Dataset([full[k] for k in frames]), frames


def format_table(metrics: dict) -> str:
    """A text table: rows = metrics, columns = splits, cells ``MAE / RMSE``.

    Args:
      metrics: ``{split: {metric: {"mae", "rmse", ...}}}``.
    """
    from ._loss import UNITS

    splits = [s for s in metrics if isinstance(metrics[s], dict) and metrics[s]]
    names = []
    for s in splits:
        for k in metrics[s]:
            if k not in names:
                names.append(k)
    rows = [["metric (MAE / RMSE)"] + splits]
    for k in names:
        row = [f"{k} [{UNITS.get(k, '')}]"]
        for s in splits:
            v = metrics[s].get(k)
            row.append("-" if v is None else f"{v['mae']:.4g} / {v['rmse']:.4g}")
        rows.append(row)
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _plain_metrics(m: dict) -> dict:
    return {k: {kk: (float(vv) if isinstance(vv, float) else vv) for kk, vv in v.items()} for k, v in m.items()}


# ------------------------------------------------------------------------------------
# run_fit / run_eval
# ------------------------------------------------------------------------------------
def run_fit(config_or_path, *, progress: bool | None = None, stream=None) -> Path:
    """Train from a configuration (a TOML path or a dict) and write the run folder.

    Steps: read the data (``[data]``), check species and weighted targets of every split
    (before anything is compiled), build the model (``[model]``), :func:`jaxlr.train.fit`
    with ``[training]``, evaluate the best variables on the splits of ``[output] evaluate``,
    write ``metrics.json``, ``fit_config.json``, the parity plots of the test set, and print
    a summary table.

    Args:
      config_or_path: path of a TOML file, or a dict (paths relative to the current folder).
      progress: override ``[training] progress``.
      stream: where the summary table goes (default stdout).

    Returns:
      the run folder (``run_dir``).
    """
    from ..models._potential import build_potential
    from ._loop import evaluate, fit, metric_targets, resolve_dtype, training_weights

    if isinstance(config_or_path, dict):
        cfg = normalize_config(config_or_path, ".")
    else:
        cfg = load_config(config_or_path)
    data, model_cfg, training, output = cfg["data"], dict(cfg["model"]), dict(cfg["training"]), cfg["output"]
    if "devices" in training:
        # multi-host: JAXLR_COORDINATOR / JAXLR_NUM_PROCESSES / JAXLR_PROCESS_ID (no-op when unset)
        from ..parallel._devices import initialize_distributed

        initialize_distributed()
    resolve_dtype(training.get("dtype"))
    stream = stream or sys.stdout

    # ---- data ----------------------------------------------------------------------------
    full = _read(data["train"], data, "training")
    sets = {}
    if "valid" in data:
        sets["train"] = full
        sets["valid"] = _read(data["valid"], data, "validation")
    else:
        parts = full.split(tuple(data["split"]), seed=data["split_seed"])
        sets["train"], sets["valid"] = parts[0], parts[1]
        if len(parts) == 3 and len(parts[2]):
            sets["test"] = parts[2]
        for k in ("train", "valid"):
            if len(sets[k]) == 0:
                raise ValueError(f"[data] split {data['split']} leaves the {k} set of {len(full)} structures empty.")
    if "test" in data:
        sets["test"] = _read(data["test"], data, "test")
    if "test" in sets and data.get("test_filter"):
        keep = structure_filter(data["test_filter"])
        before = len(sets["test"])
        sets["test"] = sets["test"].subset(keep)
        if len(sets["test"]) == 0:
            raise ValueError(f"[data] test_filter {data['test_filter']} keeps none of the {before} test structures.")

    # ---- model and up-front checks -------------------------------------------------------
    name = model_cfg.pop("name")
    species = model_cfg.pop("species", None)
    species = tuple(sorted(species)) if species is not None else sets["train"].species
    potential = build_potential(name, species=species, **model_cfg)
    # every weighted target in every structure trained or validated on; the message names
    # the frames of the file that lack one (a frame without energy is never dropped silently)
    weights = training.pop("weights", None)
    if "valid" in data:
        active = training_weights(weights, sets["train"], potential.predicts,
                                  name=f"training data {str(data['train'])!r}")
        training_weights(active, sets["valid"], name=f"validation data {str(data['valid'])!r}")
    else:
        used, frames = _in_file_order(full, (sets["train"], sets["valid"]))
        what = "" if len(used) == len(full) else " (train and valid splits)"
        active = training_weights(weights, used, potential.predicts, indices=frames,
                                  name=f"training data {str(data['train'])!r}{what}")
    for split, ds in sets.items():
        _check_split(split, ds, potential.species, ())

    # ---- train ---------------------------------------------------------------------------
    import jax

    lead = jax.process_index() == 0      # multi-process runs: process 0 alone writes and prints
    run_dir = Path(output["run_dir"])
    if lead:
        run_dir.mkdir(parents=True, exist_ok=True)
    if progress is not None:
        training["progress"] = progress
    resolved = {"data": data, "model": {"name": name, "species": list(species), **model_cfg},
                "training": {**training, "weights": active}, "output": output}
    if lead:
        write_json(run_dir / "fit_config.json", resolved)
    if lead and not isinstance(config_or_path, dict):
        (run_dir / "config.toml").write_bytes(Path(config_or_path).read_bytes())
    result = fit(potential, sets["train"], sets["valid"], weights=active, run_dir=run_dir,
                 plots=output["plots"], **training)

    # ---- evaluate ------------------------------------------------------------------------
    bs = max(int(training.get("batch_size", 8)), int(training.get("valid_batch_size") or 16))
    metrics = {}
    parity = {}
    for split in output["evaluate"]:
        if split not in sets:
            continue
        if split == "valid" and result.valid_metrics is not None:
            metrics[split] = result.valid_metrics
            continue
        targets = metric_targets(result.potential, sets[split], ())
        m = evaluate(result.potential, result.variables, sets[split], targets=targets, batch_size=bs,
                     keep=split == "test", max_shapes=int(training.get("max_shapes", 3)), name=f"{split} set",
                     devices=training.get("devices"))
        metrics[split] = m.result()
        if split == "test":
            parity.update({f"test/{k}": v for k, v in m.parity().items()})
    summary = {
        "metrics": {k: _plain_metrics(v) for k, v in metrics.items()},
        "n_structures": {k: len(v) for k, v in sets.items()},
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "weights": active,
        "test_filter": data.get("test_filter"),
        "compilations": result.compilations,
    }
    if not lead:
        return run_dir
    write_json(run_dir / "metrics.json", summary)
    if output["plots"] and parity:
        from ._plots import write_plots

        write_plots(run_dir, None, parity)
    print(f"jaxlr fit: {name} model, best epoch {result.best_epoch} of {len(result.history)}; run folder "
          f"{run_dir}", file=stream)
    print(format_table(metrics), file=stream)
    return run_dir


def run_eval(checkpoint_dir, data_path, *, periodic: bool | None = None, batch_size: int = 16, targets=None,
             total_charge_key: str = "total_charge", output=None, stream=None, devices=None) -> dict:
    """Evaluate a checkpoint on a data file: MAE/RMSE per target, printed as a table.

    Args:
      checkpoint_dir: a folder written by :func:`jaxlr.train.save` (e.g.
        ``run_dir/checkpoint``), a run folder containing ``checkpoint/``, or the name of a
        shipped model (:func:`jaxlr.train.pretrained_models`).
      data_path: extended XYZ file with references.
      periodic: override the file's pbc (see :func:`jaxlr.data.read_structures`).
      batch_size: structures per evaluation batch.
      targets: names to evaluate (default: every target the model predicts and every
        structure holds; missing requested ones raise ``ValueError``).
      output: optional JSON file for the metrics.
      stream: where the table goes (default stdout).
      devices: None or a device count: each batch is split over that many devices along
        its structure axis (``jaxlr eval --devices P``; the batch size is rounded up to a
        multiple of P, see :func:`jaxlr.train.evaluate`).

    Returns:
      ``{metric: {"mae", "rmse", "count"}}`` (``energy`` per structure and
      ``energy_per_atom``).

    Raises:
      ValueError: unknown species or missing targets in the data (before compilation),
        not a checkpoint folder.
    """
    from ..data._dataset import Dataset, check_targets
    from ._checkpoint import CONFIG_FILE, load
    from ._loop import evaluate, metric_targets
    from ._pretrained import resolve_checkpoint

    ckpt = Path(checkpoint_dir)
    if not (ckpt / CONFIG_FILE).is_file() and (ckpt / "checkpoint" / CONFIG_FILE).is_file():
        ckpt = ckpt / "checkpoint"
    if not ckpt.exists():             # the name of a shipped model (jaxlr.train.pretrained_models)
        ckpt = resolve_checkpoint(checkpoint_dir)
    potential, variables = load(ckpt)
    if not Path(data_path).is_file():
        raise ValueError(f"data file {str(data_path)!r} does not exist.")
    ds = Dataset.from_file(data_path, periodic=periodic, total_charge_key=total_charge_key)
    if len(ds) == 0:
        raise ValueError(f"data file {str(data_path)!r} holds no structures.")
    if targets is None:
        targets = metric_targets(potential, ds, ())
        if not targets:
            raise ValueError(f"{str(data_path)!r} holds no reference that the model predicts "
                             f"(model: {potential.predicts}; data: {ds.available_targets()}).")
    targets = (targets,) if isinstance(targets, str) else tuple(targets)
    missing = [t for t in targets if t not in potential.predicts]
    if missing:
        raise ValueError(f"the model cannot predict {missing} (it predicts {potential.predicts}).")
    _check_split("evaluation", ds, potential.species, targets)
    check_targets(ds, targets)
    if ds.periodic:
        potential = potential.adapted_to([s.cell for s in ds])
    m = evaluate(potential, variables, ds, targets=targets, batch_size=batch_size, name="evaluation set",
                 devices=devices)
    result = {k: _plain_metrics({k: v})[k] for k, v in m.result().items()}
    if output is not None:
        write_json(Path(output), result)
    print(format_table({Path(data_path).name: result}), file=stream or sys.stdout)
    return result
