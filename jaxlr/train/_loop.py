"""The training loop: :func:`fit` a :class:`jaxlr.models.Potential` to a dataset with optax.

What :func:`fit` does, in order (everything that can fail on the data or the settings
fails first, on the host, before anything is compiled):

1. validates the settings, the loss weights against ``potential.predicts`` and the
   targets of the data, and the species of every structure;
2. fixes the periodic meshes for the cells of train + valid
   (:meth:`~jaxlr.models.Potential.adapted_to`);
3. fits per-species energy offsets on the training set (least squares) and an energy
   scale (RMS of the per-atom residual, see :func:`energy_statistics`) and initialises the
   variables from a representative batch of up to ``init_structures`` training structures;
4. trains with one jitted step (``value_and_grad`` over ``variables["params"]`` only, the
   feature statistics ``variables["stats"]`` stay fixed) that compiles once per batch shape
   — :class:`~jaxlr.data.BatchLoader` bounds the shapes — and evaluates the
   validation set every epoch with a jitted prediction (MAE/RMSE per target);
5. keeps the best variables (lowest validation loss; with ``ema_decay`` the variables
   evaluated and kept are an exponential moving average of the parameters, see
   :func:`ema_weight`), stops early after ``patience`` epochs without improvement, and with ``run_dir`` writes ``history.json`` every epoch,
   the best checkpoint (``run_dir/checkpoint``) and, at the end, the plots.

The validation loss is the loss of :func:`jaxlr.train.loss_fn` over the whole
validation set (Σ_t w_t MSE_t, energies per atom), independent of how it is batched.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import numbers
import sys
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..data._batch import TARGETS
from ._checkpoint import write_json
from ._loss import Metrics, check_weights, loss_fn

__all__ = ["fit", "FitResult", "evaluate", "ema_weight", "make_optimizer", "make_train_step", "eval_step",
           "energy_statistics", "training_weights", "SCHEDULES", "OPTIMIZERS", "FIT_OPTIONS"]

SCHEDULES = ("cosine", "constant", "exponential")
OPTIMIZERS = ("adam", "adamw")
CHECKPOINT_DIR = "checkpoint"
HISTORY_FILE = "history.json"


@dataclasses.dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
      potential: the trained potential (meshes adapted to the training cells).
      variables: the best variables ``{"params", "stats"}`` (jax arrays).
      history: one dict per epoch: ``epoch``, ``train_loss``, ``train_mse`` (per target),
        ``valid_loss``, ``valid`` (``{metric: {"mae", "rmse", "count"}}``), ``lr``,
        ``time`` (s, the epoch), ``elapsed`` (s since the start), ``best`` (bool).
      best_epoch: epoch (1-based) of the returned variables.
      run_dir: the output folder, or None.
      compilations: ``{"train_step": n, "eval_step": n}`` compiled programs at the end.
      train_shapes: the distinct (B, N, M, F) shapes of the training batches.
      weights: the active loss weights.
      valid_metrics: metrics of the best variables on the validation set (None without one).
      parity: ``{metric: (pred, ref)}`` of the best variables on the validation set.
    """

    potential: object
    variables: dict
    history: list
    best_epoch: int
    run_dir: Path | None = None
    compilations: dict = dataclasses.field(default_factory=dict)
    train_shapes: set = dataclasses.field(default_factory=set)
    weights: dict = dataclasses.field(default_factory=dict)
    valid_metrics: dict | None = None
    parity: dict | None = None


# ------------------------------------------------------------------------------------
# pieces
# ------------------------------------------------------------------------------------
def resolve_dtype(dtype=None):
    """The floating dtype of a run: ``None`` → jax's default float; float64 needs x64 on."""
    if dtype is None:
        return jnp.zeros(()).dtype
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}.") from None
    if dt not in (np.float32, np.float64):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}.")
    if dt == np.float64 and not jax.config.jax_enable_x64:
        raise ValueError("dtype float64 needs jax_enable_x64: call jax.config.update('jax_enable_x64', True) "
                         "at the start of the program (or set JAX_ENABLE_X64=1), or train in float32.")
    return dt


def _number(name: str, value) -> float:
    """``float(value)`` for a real number (not a bool or a string); ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number, got {value!r} ({type(value).__name__}).")
    return float(value)


def ema_weight(decay: float, step: int) -> float:
    """Weight of the old average in the parameter EMA after optimizer step ``step`` (1, 2, …).

    ``min(decay, (1 + step) / (10 + step))``: the warm-up of TensorFlow's
    ``ExponentialMovingAverage(num_updates=...)`` (also used by MACE and NequIP), so that the
    average is not dominated by the random initial parameters in the first hundred steps.
    After step k the average is ``θ̄ ← w θ̄ + (1 − w) θ_k``, starting from ``θ̄ = θ_0``.

    Example:
      >>> ema_weight(0.99, 1), ema_weight(0.99, 10_000)
      (0.18181818181818182, 0.99)
      >>> ema_weight(0.0, 5)
      0.0
    """
    return min(float(decay), (1.0 + step) / (10.0 + step))


def _positive_int(name: str, value) -> int:
    """``int(value)`` for an integer ≥ 1 (not a bool or a float); ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)


def make_optimizer(learning_rate: float, *, steps: int, steps_per_epoch: int = 1, schedule: str = "cosine",
                   warmup_epochs: float = 0.0, decay_rate: float = 0.01, final_lr_fraction: float = 0.01,
                   optimizer: str = "adam", weight_decay: float = 1e-5, clip_norm: float | None = None):
    """An optax optimizer and its learning-rate schedule.

    Args:
      learning_rate: peak learning rate.
      steps: total number of optimizer steps (epochs × batches per epoch).
      steps_per_epoch: batches per epoch (the warmup is given in epochs).
      schedule: ``"cosine"`` (cosine decay to ``final_lr_fraction × learning_rate``),
        ``"constant"``, or ``"exponential"`` (decays smoothly to ``decay_rate ×
        learning_rate`` at the last step).
      warmup_epochs: linear warmup from 1 % of the peak over this many epochs (0 = none).
      optimizer: ``"adam"`` or ``"adamw"`` (decoupled ``weight_decay``).
      clip_norm: clip gradients to this global norm (None = no clipping).

    Returns:
      ``(optax.GradientTransformation, schedule)``; ``schedule(step)`` gives the rate.
    """
    import optax

    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; choose one of {SCHEDULES}.")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {OPTIMIZERS}.")
    lr = _number("learning_rate", learning_rate)
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"learning_rate must be a finite positive number (e.g. 1e-3), got {learning_rate!r}.")
    steps = max(int(steps), 1)
    warmup_epochs = _number("warmup_epochs", warmup_epochs)
    if not (math.isfinite(warmup_epochs) and warmup_epochs >= 0):
        raise ValueError(f"warmup_epochs must be a finite number ≥ 0, got {warmup_epochs!r}.")
    warmup = int(round(warmup_epochs * max(int(steps_per_epoch), 1)))
    warmup = min(warmup, steps - 1)
    main_steps = max(steps - warmup, 1)
    final_lr_fraction = _number("final_lr_fraction", final_lr_fraction)
    decay_rate = _number("decay_rate", decay_rate)
    weight_decay = _number("weight_decay", weight_decay)
    if not (math.isfinite(weight_decay) and weight_decay >= 0):
        raise ValueError(f"weight_decay must be a finite number ≥ 0, got {weight_decay!r}.")
    if schedule == "cosine":
        if not 0 <= float(final_lr_fraction) <= 1:
            raise ValueError(f"final_lr_fraction must lie in [0, 1], got {final_lr_fraction}.")
        main = optax.cosine_decay_schedule(lr, main_steps, alpha=float(final_lr_fraction))
    elif schedule == "exponential":
        if not 0 < float(decay_rate) <= 1:
            raise ValueError(f"decay_rate must lie in (0, 1], got {decay_rate}.")
        main = optax.exponential_decay(lr, transition_steps=main_steps, decay_rate=float(decay_rate))
    else:
        main = optax.constant_schedule(lr)
    if warmup > 0:
        sched = optax.join_schedules([optax.linear_schedule(0.01 * lr, lr, warmup), main], [warmup])
    else:
        sched = main
    if optimizer == "adam":
        tx = optax.adam(sched)
    else:
        tx = optax.adamw(sched, weight_decay=float(weight_decay))
    if clip_norm is not None:
        clip_norm = _number("clip_norm", clip_norm)
        if not (math.isfinite(clip_norm) and clip_norm > 0):
            raise ValueError(f"clip_norm must be a finite positive number (or None), got {clip_norm!r}.")
        tx = optax.chain(optax.clip_by_global_norm(float(clip_norm)), tx)
    return tx, sched


def make_train_step(potential, weights: dict, tx, *, mesh=None):
    """One jitted optimisation step ``(params, opt_state, stats, batch, targets) → (params,
    opt_state, loss, parts)``.

    Gradients are taken with respect to ``params`` only; forces (and stress) are predicted
    only when their weight is positive.  The function is compiled once per batch shape
    (``step._cache_size()`` counts the programs).  Parameters and optimizer state are
    donated on accelerators.

    With a device ``mesh`` (:func:`jaxlr.parallel.device_mesh`) the step is data parallel:
    batch and targets are split along the structure axis over the mesh's first axis,
    parameters, optimiser state and statistics are replicated, and XLA reduces the
    gradients across devices (``jax.jit`` with in/out shardings; the loss is the same
    masked mean over the whole batch, so the step equals the one-device step up to the
    order of floating-point sums).
    """
    import optax

    active = check_weights(weights, predicts=potential.predicts)
    forces = "forces" in active
    stress = "stress" in active

    def step(params, opt_state, stats, batch, targets):
        def objective(p):
            out = potential.apply({"params": p, "stats": stats}, batch, forces=forces, stress=stress)
            return loss_fn(out, targets, batch, active)

        (loss, parts), grads = jax.value_and_grad(objective, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return params, opt_state, loss, parts

    donate = (0, 1) if jax.default_backend() != "cpu" else ()
    if mesh is None:
        return jax.jit(step, donate_argnums=donate)
    from ..parallel._devices import replicated, sharded_rows

    rep, rows = replicated(mesh), sharded_rows(mesh)
    return jax.jit(step, donate_argnums=donate, in_shardings=(rep, rep, rep, rows, rows),
                   out_shardings=(rep, rep, rep, rep))


@functools.lru_cache(maxsize=32)
def eval_step(potential, forces: bool, stress: bool, mesh=None):
    """The jitted prediction ``(variables, batch) → ModelOutput`` used for evaluation (cached
    per potential, flags and device mesh, so every evaluation of one potential shares its
    programs).  With a ``mesh`` the batch is split along its structure axis and the
    variables replicated (:func:`jaxlr.parallel.predict_sharded`)."""
    fn = functools.partial(potential.apply, forces=forces, stress=stress)
    if mesh is None:
        return jax.jit(fn)
    from ..parallel._devices import replicated, sharded_rows

    return jax.jit(fn, in_shardings=(replicated(mesh), sharded_rows(mesh)), out_shardings=sharded_rows(mesh))


def _to_host(tree):
    """Outputs as host numpy arrays (gathered from every process in a multi-host run)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        return multihost_utils.process_allgather(tree, tiled=True)
    return jax.device_get(tree)


def _on_mesh(mesh, tree, rows=True):
    if mesh is None:
        return tree
    from ..parallel._devices import to_global

    return to_global(tree, mesh, rows=rows)


def _device_mesh(devices, batch_size: int):
    """(mesh or None, batch size rounded up to a multiple of the devices): the mesh of
    ``devices`` (:func:`jaxlr.parallel.device_mesh`); evaluation batches may be padded."""
    if devices is None:
        return None, batch_size
    from ..parallel._devices import device_mesh, n_devices

    mesh = device_mesh(devices)
    p = n_devices(mesh)
    return mesh, -(-int(batch_size) // p) * p


def _cache_size(fn) -> int | None:
    size = getattr(fn, "_cache_size", None)
    return int(size()) if callable(size) else None


def energy_statistics(dataset, species, offsets=None):
    """Per-atom energy scale (eV) of a dataset after removing per-species offsets.

    scale = sqrt(mean_k (E_k − Σ_s n_ks e_s)² / n_k): the RMS residual per √atom, the
    right size for a sum of n independent atomic contributions.  Falls back to the RMS
    force component × 1 Å (forces only) or 1 eV when the residuals vanish.
    """
    from ..data._dataset import species_indices

    structures = list(dataset)
    if offsets is not None and all("energy" in s.targets for s in structures):
        res = []
        for k, s in enumerate(structures):
            idx = species_indices(s.numbers, species, structure=k)
            e0 = float(np.sum(np.asarray(offsets)[idx]))
            res.append((float(s.targets["energy"]) - e0) ** 2 / max(s.n_atoms, 1))
        scale = math.sqrt(float(np.mean(res))) if res else 0.0
        if scale > 1e-8:
            return scale
    if structures and all("forces" in s.targets for s in structures):
        f = np.concatenate([np.asarray(s.targets["forces"]).ravel() for s in structures])
        scale = float(np.sqrt(np.mean(f ** 2))) if f.size else 0.0
        if scale > 1e-8:
            return scale
    return 1.0


def metric_targets(potential, dataset, active) -> tuple:
    """Targets evaluated on a dataset: the weighted ones plus whatever the model predicts
    and every structure holds (stress only for periodic data)."""
    avail = dataset.available_targets() if hasattr(dataset, "available_targets") else ()
    names = set(active) | (set(avail) & set(potential.predicts))
    if not all(s.periodic for s in dataset):
        names.discard("stress")
    return tuple(t for t in TARGETS if t in names)


def _as_dataset(data, name):
    from ..data._dataset import Dataset

    if data is None:
        return None
    if not isinstance(data, Dataset):
        data = Dataset(list(data))
    if len(data) == 0:
        raise ValueError(f"the {name} set is empty.")
    return data


def evaluate(potential, variables, dataset, *, targets=None, batch_size: int = 16, max_shapes: int = 3,
             keep: bool = False, name: str = "data", devices=None):
    """MAE/RMSE of a potential on a dataset.

    Args:
      potential, variables: the model.
      dataset: :class:`jaxlr.data.Dataset` (or sequence of structures).
      targets: names to evaluate (default: every target that the model predicts and all
        structures hold; stress only for periodic data).  Missing ones raise ``ValueError``.
      batch_size, max_shapes: batching (see :class:`jaxlr.data.BatchLoader`).
      keep: keep predictions for parity plots.
      name: how to call the dataset in error messages.
      devices: None (one device), a device count or a :class:`jax.sharding.Mesh`: every
        batch is split over the devices along its structure axis (the batch size is
        rounded up to a multiple of the device count; the extra slots are padding
        structures, which metrics ignore).

    Returns:
      the :class:`jaxlr.train.Metrics` accumulator (``.result()`` for the dict,
      ``.parity()`` with ``keep=True``).
    """
    from ..data._batching import BatchLoader

    dataset = _as_dataset(dataset, name)
    if targets is None:
        targets = metric_targets(potential, dataset, ())
    targets = tuple(targets)
    missing = [t for t in targets if t not in potential.predicts]
    if missing:
        raise ValueError(f"the model cannot predict {missing} (it predicts {potential.predicts}).")
    leaves = [x for x in jax.tree_util.tree_leaves(variables) if jnp.issubdtype(x.dtype, jnp.floating)]
    dtype = leaves[0].dtype if leaves else None
    mesh, batch_size = _device_mesh(devices, batch_size)
    try:
        loader = BatchLoader(dataset, potential.species, cutoff=potential.cutoff, batch_size=batch_size,
                             targets=targets, dtype=dtype, max_shapes=max_shapes)
    except ValueError as err:
        raise ValueError(f"{name}: {err}") from None
    step = eval_step(potential, "forces" in targets, "stress" in targets, mesh)
    variables = _on_mesh(mesh, variables, rows=False)
    m = Metrics(targets, keep=keep)
    for atoms, refs in loader.epoch(None):
        m.update(_to_host(step(variables, _on_mesh(mesh, atoms))), refs, atoms)
    return m


# ------------------------------------------------------------------------------------
# progress
# ------------------------------------------------------------------------------------
_SHORT = {"energy": "E", "energy_per_atom": "E/atom", "forces": "F", "stress": "S", "charges": "q",
          "dipole": "mu", "coefficients": "c"}


def _fmt_metrics(valid: dict | None) -> str:
    if not valid:
        return ""
    parts = [f"{_SHORT.get(k, k)} {v['mae']:.3g}" for k, v in valid.items() if k != "energy"]
    return "MAE " + " ".join(parts)


class _Progress:
    """A one-line progress bar on stderr (``\\r`` updates when it is a terminal)."""

    def __init__(self, enabled: bool, epochs: int, n_batches: int, stream=None):
        self.enabled = bool(enabled)
        self.stream = stream or sys.stderr
        self.live = self.enabled and getattr(self.stream, "isatty", lambda: False)()
        self.epochs = epochs
        self.n_batches = n_batches
        self.last = 0.0
        self.tail = ""
        self.log_every = max(1, epochs // 50)
        self.width = 0

    def _write(self, text: str, end: str = ""):
        pad = max(self.width - len(text), 0) if self.live else 0
        self.stream.write(("\r" if self.live else "") + text + " " * pad + end)
        self.width = 0 if end else len(text)
        self.stream.flush()

    def batch(self, epoch: int, k: int, loss_value):
        if not self.live:
            return
        now = time.perf_counter()
        if now - self.last < 0.2 and k < self.n_batches:
            return
        self.last = now
        filled = int(20 * k / max(self.n_batches, 1))
        bar = "#" * filled + "." * (20 - filled)
        loss = float(loss_value()) if loss_value is not None else float("nan")
        self._write(f"epoch {epoch}/{self.epochs} [{bar}] {k}/{self.n_batches} loss {loss:.4g}"
                    + (f" | valid {self.tail}" if self.tail else ""))

    def epoch(self, record: dict, final: bool = False):
        if not self.enabled:
            return
        valid = record.get("valid_loss")
        self.tail = " ".join(x for x in (f"{valid:.4g}" if valid is not None else "",
                                         _fmt_metrics(record.get("valid"))) if x)
        text = (f"epoch {record['epoch']}/{self.epochs} train {record['train_loss']:.4g}"
                + (f" | valid {self.tail}" if valid is not None else "")
                + f" | {record['time']:.1f}s" + (" *" if record.get("best") else ""))
        if final or record["epoch"] % self.log_every == 0 or record["epoch"] == 1:
            self._write(text, end="\n")
        elif self.live:
            self._write(text)

    def message(self, text: str):
        if self.enabled:
            if self.live and self.width:
                self._write("", end="")
                self.stream.write("\n")
                self.width = 0
            self.stream.write(text + "\n")
            self.stream.flush()


# ------------------------------------------------------------------------------------
# fit
# ------------------------------------------------------------------------------------
def default_weights(available, predicts):
    """``{"energy": 1, "forces": 1}`` restricted to ``available`` targets the model ``predicts``."""
    w = {t: 1.0 for t in ("energy", "forces") if t in available and t in predicts}
    if not w:
        raise ValueError(f"no loss weights given and the training data has neither energies nor forces "
                         f"(available: {tuple(available)}); pass weights={{target: weight}}.")
    return w


def training_weights(weights, dataset, predicts=None, *, indices=None, name: str = "training set") -> dict:
    """The active loss weights for training on ``dataset``, checked on the host.

    Every weighted target must be present in every structure: a target that some
    structures lack (e.g. an extended-XYZ frame without ``energy``) raises ``ValueError``
    naming how many and which structures, instead of silently training on a subset.
    Without ``weights`` the default (:func:`default_weights`) covers energies and forces
    found in *any* structure, so such a file is refused too rather than trained on forces
    alone.

    Args:
      weights: target → weight, or None for the default.
      dataset: :class:`jaxlr.data.Dataset` the weights are used on (train or validation).
      predicts: targets the model predicts (None: not checked).
      indices: numbers naming the structures in the message (e.g. frames of a file).
      name: how to call the dataset in the message.

    Returns:
      ``{target: weight}`` of the positive weights (see :func:`jaxlr.train._loss.check_weights`).

    Example:
      >>> import numpy as np
      >>> from jaxlr.data import Dataset, Structure
      >>> mk = lambda tg: Structure(positions=np.zeros((1, 3)), numbers=[1], targets=tg)
      >>> ds = Dataset([mk({"energy": 0.0, "forces": np.zeros((1, 3))}), mk({"forces": np.zeros((1, 3))})])
      >>> training_weights({"forces": 1.0}, ds)
      {'forces': 1.0}
      >>> try:
      ...     training_weights(None, ds)
      ... except ValueError as err:
      ...     print(str(err).split(" (")[0])
      training set: target 'energy' is missing in 1 of 2 structures
    """
    from ..data._dataset import check_targets

    present = dataset.available_targets(every=False)
    defaulted = weights is None
    if defaulted:
        weights = default_weights(present, present if predicts is None else predicts)
    active = check_weights(weights, predicts=predicts)
    try:
        check_weights(active, available=present)
        check_targets(dataset, tuple(active), indices=indices, use="train")
    except ValueError as err:
        hint = (f" (No weights were given: the default weights {active} use the energies and forces that "
                "any structure holds; pass weights explicitly to train on fewer targets.)") if defaulted else ""
        raise ValueError(f"{name}: {err}{hint}") from None
    return active


def fit(potential, train, valid=None, *, weights: dict | None = None, epochs: int = 100, batch_size: int = 8,
        learning_rate: float = 1e-3, schedule: str = "cosine", warmup_epochs: float = 0.0,
        decay_rate: float = 0.01, final_lr_fraction: float = 0.01, optimizer: str = "adam",
        weight_decay: float = 1e-5, clip_norm: float | None = None, ema_decay: float | None = None,
        patience: int | None = None, seed: int = 0,
        run_dir=None, progress: bool = True, dtype=None, max_shapes: int = 3, init_structures: int = 256,
        valid_batch_size: int | None = None, plots: bool = True, devices=None) -> FitResult:
    """Train a potential (see the module docstring for the procedure).

    Args:
      potential: :class:`jaxlr.models.Potential` (e.g. from :func:`jaxlr.models.build_potential`).
      train: training :class:`jaxlr.data.Dataset`.
      valid: validation dataset (early stopping and best-variable selection), or None (the
        training loss is monitored instead).
      weights: loss weight per target (see :func:`jaxlr.train.loss_fn`); default
        ``{"energy": 1, "forces": 1}`` restricted to the targets some training structure
        holds.  Every weighted target must be present in every training and validation
        structure (see :func:`training_weights`): none is dropped silently.
      epochs: maximum number of epochs.  batch_size: structures per training batch.
      learning_rate, schedule ("cosine" | "constant" | "exponential"), warmup_epochs,
        decay_rate, final_lr_fraction, optimizer ("adam" | "adamw"), weight_decay,
        clip_norm: see :func:`make_optimizer`.
      ema_decay: None (off) or d in [0, 1): validate, keep and return an exponential moving
        average of the parameters, updated after every optimizer step with the weight
        :func:`ema_weight` ``(d, step)`` (typical d: 0.99–0.999; the training itself is not
        changed).  An average over the last ~1/(1 − d) steps smooths the noise of small
        batches and usually lowers the validation error.
      patience: stop after this many epochs without a lower validation loss (None = never).
      seed: seed of the initial parameters and the batch shuffling.
      run_dir: output folder (``history.json``, ``checkpoint/``, plots), or None.
      progress: print a progress bar to stderr.
      dtype: "float32" or "float64" (default: jax's default float; float64 needs
        ``jax_enable_x64``).
      max_shapes: at most this many distinct padded atom counts per dataset (compilations).
      init_structures: training structures in the batch that sets the feature statistics.
      valid_batch_size: batch size of the evaluation (default ``max(batch_size, 16)``).
      plots: write the plots into ``run_dir`` at the end.
      devices: data-parallel training (:mod:`jaxlr.parallel`): None (one device), a
        device count P (the first P of ``jax.devices()``) or a
        :class:`jax.sharding.Mesh`.  Every batch is split into P equal parts along the
        structure axis, parameters and optimiser state are replicated and XLA sums the
        gradients across devices; the result equals one-device training up to the order
        of floating-point sums.  ``batch_size`` must be a multiple of P; the validation
        batch size is rounded up to one (padding structures, ignored by the metrics).
        Multi-process: call :func:`jaxlr.parallel.initialize_distributed` (or
        ``jax.distributed.initialize()``) first in every process and run the same
        ``fit`` call in each; every process feeds only its own rows of every batch, all
        return the same result, and process 0 alone writes ``run_dir`` and the progress.

    Returns:
      :class:`FitResult` with the best variables.

    Raises:
      ValueError: bad settings (naming the argument, e.g. ``learning_rate``), weighted
        targets that the model cannot predict or that some structures lack (naming them),
        species outside the potential's species — all before any compilation.

    Example:
      >>> # from jaxlr.models import build_potential
      >>> # from jaxlr.data import Dataset
      >>> # train, valid = Dataset.from_file("water.xyz").split((0.9, 0.1))
      >>> # pot = build_potential("local", species=train.species)
      >>> # result = fit(pot, train, valid, weights={"energy": 1.0, "forces": 10.0}, epochs=200,
      >>> #              run_dir="runs/water")
    """
    from ..data._batching import BatchLoader
    from ..data._dataset import fit_offsets
    from ._checkpoint import save

    t_start = time.perf_counter()
    # ---- 1. settings and data checks (host, nothing compiled) -----------------------------
    train = _as_dataset(train, "training")
    valid = _as_dataset(valid, "validation")
    epochs = _positive_int("epochs", epochs)
    batch_size = _positive_int("batch_size", batch_size)
    if patience is not None:
        patience = _positive_int("patience", patience)
    if ema_decay is not None:
        ema_decay = _number("ema_decay", ema_decay)
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"ema_decay must lie in [0, 1) (or be None for no average), got {ema_decay!r}.")
    init_structures = _positive_int("init_structures", init_structures)
    max_shapes = _positive_int("max_shapes", max_shapes)
    if valid_batch_size is not None:
        valid_batch_size = _positive_int("valid_batch_size", valid_batch_size)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be an integer ≥ 0, got {seed!r}.")
    dt = resolve_dtype(dtype)
    mesh = None
    if devices is not None:
        from ..parallel._devices import check_divisible, device_mesh

        mesh = device_mesh(devices)
        check_divisible(batch_size, mesh, what="structures per training batch", name="batch_size")
    avail = train.available_targets()
    active = training_weights(weights, train, potential.predicts, name="training set")
    if valid is not None:
        training_weights(active, valid, name="validation set")
    # optimizer settings are checked here, before the (costly) neighbour lists
    make_optimizer(learning_rate, steps=1, schedule=schedule, warmup_epochs=warmup_epochs, decay_rate=decay_rate,
                   final_lr_fraction=final_lr_fraction, optimizer=optimizer, weight_decay=weight_decay,
                   clip_norm=clip_norm)
    periodic = {s.periodic for s in train} | ({s.periodic for s in valid} if valid is not None else set())
    if len(periodic) > 1:
        raise ValueError("training and validation data mix periodic and open-boundary structures; a potential "
                         "is trained on one kind (split the data or pass periodic= when reading).")

    # ---- 2. meshes for the data's cells ---------------------------------------------------
    cells = [s.cell for s in train] + ([s.cell for s in valid] if valid is not None else [])
    potential = potential.adapted_to(cells)
    species = potential.species

    def loader(data, name, targets, bs):
        try:
            return BatchLoader(data, species, cutoff=potential.cutoff, batch_size=bs, targets=targets, dtype=dt,
                               max_shapes=max_shapes)
        except ValueError as err:
            raise ValueError(f"{name} set: {err}") from None

    train_loader = loader(train, "training", tuple(active), int(batch_size))
    valid_targets = metric_targets(potential, valid, active) if valid is not None else ()
    vbs = int(valid_batch_size) if valid_batch_size is not None else max(int(batch_size), 16)
    _, vbs = _device_mesh(mesh, vbs)
    valid_loader = loader(valid, "validation", valid_targets, vbs) if valid is not None else None

    # ---- 3. offsets, scale, variables -----------------------------------------------------
    offsets = fit_offsets(train, species) if "energy" in avail else None
    scale = energy_statistics(train, species, offsets)
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.permutation(len(train))[:int(init_structures)])
    # one batch of the training loader's cached neighbour lists, padded to its largest size
    init_batch, _ = train_loader.assemble(pick, max(n for n, _ in train_loader.buckets))
    variables = potential.init(jax.random.PRNGKey(int(seed)), init_batch, offsets=offsets, energy_scale=scale)
    del init_batch
    params, stats = variables["params"], variables["stats"]

    n_batches = len(train_loader)
    tx, sched = make_optimizer(learning_rate, steps=epochs * n_batches, steps_per_epoch=n_batches,
                               schedule=schedule, warmup_epochs=warmup_epochs, decay_rate=decay_rate,
                               final_lr_fraction=final_lr_fraction, optimizer=optimizer,
                               weight_decay=weight_decay, clip_norm=clip_norm)
    opt_state = tx.init(params)
    step = make_train_step(potential, active, tx, mesh=mesh)
    evaluator = eval_step(potential, "forces" in valid_targets, "stress" in valid_targets, mesh)
    params, opt_state, stats = _on_mesh(mesh, (params, opt_state, stats), rows=False)
    # the parameter average (a separate copy; optax.incremental_update blends two trees)
    ema = None if ema_decay is None else jax.tree_util.tree_map(jnp.array, params)
    ema_update = jax.jit(lambda new, old, w: optax.incremental_update(new, old, 1.0 - w))

    run_dir = None if run_dir is None else Path(run_dir)
    # multi-process runs: process 0 alone writes the run folder and prints the progress
    writes = run_dir is not None and jax.process_index() == 0
    if writes:
        run_dir.mkdir(parents=True, exist_ok=True)

    def validate(variables, keep=False):
        m = Metrics(valid_targets, keep=keep)
        variables = _on_mesh(mesh, variables, rows=False)
        for atoms, refs in valid_loader.epoch(None):
            m.update(_to_host(evaluator(variables, _on_mesh(mesh, atoms))), refs, atoms)
        return m

    # ---- 4./5. epochs ----------------------------------------------------------------------
    bar = _Progress(progress and jax.process_index() == 0, epochs, n_batches)
    history = []
    best = (math.inf, 0, None)           # (monitored loss, epoch, host params)
    n_step = 0
    stale = 0
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        losses, counts, parts_sum = [], [], {}
        lr = float(sched(n_step))
        for k, (atoms, refs, idx) in enumerate(train_loader.epoch(seed=int(seed) * 100003 + epoch,
                                                                  with_indices=True), start=1):
            params, opt_state, loss, parts = step(params, opt_state, stats, *_on_mesh(mesh, (atoms, refs)))
            n_step += 1
            if ema is not None:
                ema = ema_update(params, ema, ema_weight(ema_decay, n_step))   # weak-typed: keeps the dtype
            c = int(np.sum(np.asarray(idx) >= 0))
            losses.append(loss)
            counts.append(c)
            for key, v in parts.items():
                parts_sum.setdefault(key, []).append(v)
            bar.batch(epoch, k, lambda: loss)
        w = np.asarray(counts, dtype=np.float64) / max(sum(counts), 1)
        train_loss = float(np.dot(np.asarray(jax.device_get(losses), dtype=np.float64), w))
        train_mse = {key: float(np.dot(np.asarray(jax.device_get(v), dtype=np.float64), w))
                     for key, v in parts_sum.items()}
        record = {"epoch": epoch, "train_loss": train_loss, "train_mse": train_mse, "lr": lr}
        evaluated = params if ema is None else ema
        current = {"params": evaluated, "stats": stats}
        if valid_loader is not None:
            m = validate(current)
            record["valid_loss"] = m.loss(active)
            record["valid"] = m.result()
            monitored = record["valid_loss"]
        else:
            monitored = train_loss
        record["time"] = time.perf_counter() - t0
        record["elapsed"] = time.perf_counter() - t_start
        finite = math.isfinite(train_loss) and math.isfinite(monitored)
        improved = finite and monitored < best[0]
        record["best"] = bool(improved)
        history.append(record)
        if improved:
            best = (monitored, epoch, jax.device_get(evaluated))
            stale = 0
            if writes:
                save(run_dir / CHECKPOINT_DIR, potential, {"params": best[2], "stats": stats},
                     extra={"epoch": epoch, "train_loss": train_loss, "valid_loss": record.get("valid_loss"),
                            "weights": active, "valid": record.get("valid")})
        else:
            stale += 1
        if writes:
            write_json(run_dir / HISTORY_FILE, history)
        stop_reason = None
        if not finite:
            stop_reason = f"non-finite loss at epoch {epoch}; keeping the best variables (epoch {best[1]})"
        elif patience is not None and stale >= int(patience):
            stop_reason = f"early stop: no improvement for {patience} epochs (best epoch {best[1]})"
        bar.epoch(record, final=stop_reason is not None or epoch == epochs)
        if stop_reason is not None:
            if not finite:
                warnings.warn(stop_reason, RuntimeWarning, stacklevel=2)
            bar.message(stop_reason)
            break

    if best[2] is None:
        raise FloatingPointError("training diverged in the first epoch (non-finite loss); lower the "
                                 "learning rate or check the data.")
    best_vars = {"params": jax.tree_util.tree_map(jnp.asarray, best[2]),
                 "stats": jax.tree_util.tree_map(jnp.asarray, jax.device_get(stats))}
    valid_metrics = parity = None
    if valid_loader is not None:
        m = validate(best_vars, keep=True)
        valid_metrics, parity = m.result(), m.parity()
    result = FitResult(potential=potential, variables=best_vars, history=history, best_epoch=best[1],
                       run_dir=run_dir, compilations={"train_step": _cache_size(step),
                                                      "eval_step": _cache_size(evaluator)},
                       train_shapes=set(train_loader.shapes), weights=dict(active),
                       valid_metrics=valid_metrics, parity=parity)
    if writes and plots:
        from ._plots import write_plots

        write_plots(run_dir, history, {f"valid/{k}": v for k, v in (parity or {}).items()})
    return result


#: keyword options of :func:`fit` (the keys of a configuration's ``[training]`` table)
FIT_OPTIONS = tuple(k for k, p in inspect.signature(fit).parameters.items()
                    if p.kind == inspect.Parameter.KEYWORD_ONLY)
