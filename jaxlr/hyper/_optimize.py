"""Hypergradient descent with optax on log-parameters, with early stopping, and a grid search to compare.

Positive hyperparameters (widths, hardness, the radial scale) are optimised as their
logarithms, so they stay positive by construction; ``log_lambda``,
``electronegativity`` and the density model's ``linear`` terms are optimised as they are
(:data:`UNCONSTRAINED`).  Each step evaluates the loss and its
gradient once (one forward and one reverse pass through the features and the implicit
solves); early stopping watches a validation loss (e.g. a held-out set) and keeps the
best hyperparameters.  optax is imported when :func:`optimize` runs (it is a training
dependency, not a core one).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import sys
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from ._loss import check_hyper

__all__ = ["HyperTrajectory", "UNCONSTRAINED", "grid_search", "optimize"]

#: hyperparameters optimised as they are (all others are positive and optimised as logs)
UNCONSTRAINED = ("log_lambda", "electronegativity", "linear")


@dataclasses.dataclass(frozen=True)
class HyperTrajectory:
    """The result of :func:`optimize` or :func:`grid_search` (host values).

    Attributes:
      hyper: list of the hyperparameters visited (dicts of floats or lists), in order.
      loss: list of their training losses.  valid: list of validation losses (or None).
      best: the hyperparameters with the lowest validation loss (the training loss when
        there is no validation loss).  best_loss, best_valid: their losses.
      evaluations: number of feature evaluations (loss or loss-and-gradient calls).
      seconds: wall time, compilation included.
      stopped: why the run ended — ``"steps"`` (the step budget was used up),
        ``"patience"`` (early stopping: no better validation loss for ``patience``
        steps), ``"domain"`` (a step left the hyperparameters' domain), ``"non-finite"``
        (the loss was not finite) or ``"grid"`` (a grid search visited every point).
    """

    hyper: list
    loss: list
    valid: list | None
    best: dict
    best_loss: float
    best_valid: float | None
    evaluations: int
    seconds: float
    stopped: str = "steps"

    def to_json(self) -> dict:
        """A JSON-serialisable dict of the trajectory."""
        return dataclasses.asdict(self)


def _to_host(h) -> dict:
    return {k: (float(v) if np.ndim(v) == 0 else np.asarray(v, np.float64).tolist()) for k, v in h.items()}


def _encode(hyper: dict) -> dict:
    return {k: (jnp.asarray(v, jnp.result_type(float)) if k in UNCONSTRAINED else jnp.log(jnp.asarray(v, jnp.result_type(float))))
            for k, v in hyper.items()}


def _decode(params: dict) -> dict:
    return {k: (v if k in UNCONSTRAINED else jnp.exp(v)) for k, v in params.items()}


class _Bar:
    def __init__(self, enabled: bool, total: int, stream=None):
        self.enabled, self.total = enabled, total
        self.stream = stream or sys.stderr
        self.live = enabled and getattr(self.stream, "isatty", lambda: False)()
        self.start = time.perf_counter()

    def update(self, k: int, loss: float, valid: float | None):
        if not self.enabled:
            return
        rate = k / max(time.perf_counter() - self.start, 1e-9)
        filled = int(20 * k / max(self.total, 1))
        text = (f"step {k}/{self.total} [{'#' * filled}{'.' * (20 - filled)}] loss {loss:.5g}"
                + ("" if valid is None else f" valid {valid:.5g}") + f" ({rate:.2f} steps/s)")
        if self.live:
            self.stream.write("\r" + text)
        elif k == self.total or k % max(1, self.total // 10) == 0:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self):
        if self.live:
            self.stream.write("\n")


def optimize(loss_fn, hyper: dict, data, *, steps: int = 100, learning_rate: float = 0.05, valid_fn=None,
             valid_data=None, patience: int = 20, fixed=(), optimizer=None, progress: bool = True,
             check=None) -> HyperTrajectory:
    """Minimise ``loss_fn(hyper, data)`` over the hyperparameters by gradient descent (host loop).

    Args:
      loss_fn: a pure, differentiable ``loss(hyper, data) -> scalar`` (e.g.
        :func:`ridge_cv_loss`, :func:`qeq_loss`).
      hyper: the starting hyperparameters (mapping name → value).
      data: the loss's data pytree.
      steps: the most optimisation steps.  learning_rate: Adam's step on the
        log-parameters (0.05 ≈ 5 % relative change per step).
      valid_fn, valid_data: a validation loss ``valid_fn(hyper, valid_data)`` for early
        stopping (default: ``loss_fn`` on ``data``).
      patience: stop when the validation loss has not improved for this many steps.
      fixed: names of hyperparameters held at their starting values.
      optimizer: an optax ``GradientTransformation`` (default ``optax.adam(learning_rate)``).
      progress: print a progress bar to stderr.
      check: a callable raising ValueError for hyperparameters outside their domain,
        called on the start values before anything is compiled (default
        :func:`check_hyper` with the cutoff and species count of ``data``).  The points
        the optimiser visits are checked too: a step that leaves the domain (e.g. a
        ``cutoff_width`` grown past the cutoff) ends the run, keeping the best point so far.

    Returns:
      :class:`HyperTrajectory`.

    Raises:
      ValueError: bad start values (before compilation), ``steps`` < 1, unknown ``fixed``.

    Example:
      >>> import jax.numpy as jnp
      >>> loss = lambda h, d: (jnp.log(h["local_sigma"]) - d) ** 2
      >>> t = optimize(loss, {"local_sigma": 1.0}, jnp.log(0.5), steps=200, learning_rate=0.1, progress=False)
      >>> round(t.best["local_sigma"], 2), t.stopped
      (0.5, 'patience')
    """
    import optax

    if isinstance(steps, bool) or int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}.")
    if not (np.isfinite(learning_rate) and learning_rate > 0):
        raise ValueError(f"learning_rate must be a positive number, got {learning_rate!r}.")
    unknown = [k for k in fixed if k not in hyper]
    if unknown:
        raise ValueError(f"fixed names {unknown} are not in hyper ({sorted(hyper)}).")
    check = check or functools.partial(check_hyper, data=data)
    check(hyper)
    t0 = time.perf_counter()
    params = _encode(hyper)
    frozen = {k: params.pop(k) for k in list(params) if k in fixed}
    tx = optimizer or optax.adam(learning_rate)
    state = tx.init(params)

    def objective(p, d):
        return loss_fn(_decode({**p, **frozen}), d)

    value_and_grad = jax.jit(jax.value_and_grad(objective))
    validate = None
    if valid_fn is not None:
        validate = jax.jit(lambda p, d: valid_fn(_decode({**p, **frozen}), d))
    vdata = data if valid_data is None else valid_data

    history, losses, valids = [], [], [] if validate is not None else None
    best, best_loss, best_valid, since = None, np.inf, np.inf, 0
    evaluations = 0
    bar = _Bar(progress, int(steps))
    stopped = "steps"
    for k in range(int(steps) + 1):
        current = _to_host(_decode({**params, **frozen}))
        if k:
            try:
                check({key: np.asarray(v) for key, v in current.items()})
            except ValueError as err:
                warnings.warn(f"optimize stopped at step {k}: {err}", stacklevel=2)
                stopped = "domain"
                break
        value, grad = value_and_grad(params, data)
        evaluations += 1
        value = float(value)
        score = value
        if validate is not None:
            score = float(validate(params, vdata))
            evaluations += 1
            valids.append(score)
        history.append(current)
        losses.append(value)
        if score < best_valid:
            best, best_loss, best_valid, since = current, value, score, 0
        else:
            since += 1
        bar.update(k, value, None if validate is None else score)
        if not np.isfinite(value):
            stopped = "non-finite"
        elif since >= patience and k < steps:
            stopped = "patience"
        if k == steps or stopped != "steps":
            break
        updates, state = tx.update(grad, state, params)
        params = optax.apply_updates(params, updates)
    bar.close()
    return HyperTrajectory(hyper=history, loss=losses, valid=valids, best=best, best_loss=float(best_loss),
                           best_valid=None if validate is None else float(best_valid), evaluations=evaluations,
                           seconds=time.perf_counter() - t0, stopped=stopped)


def grid_search(loss_fn, grid: dict, data, *, fixed: dict | None = None, valid_fn=None, valid_data=None,
                progress: bool = True, check=None) -> HyperTrajectory:
    """Evaluate ``loss_fn`` on every point of a grid (host loop; the loss compiles once).

    Args:
      loss_fn: ``loss(hyper, data) -> scalar``.
      grid: mapping name → 1-D sequence of values; the grid is their Cartesian product.
      data: the loss's data.  fixed: hyperparameters held constant.
      valid_fn, valid_data: an optional validation loss that picks the best point.
      progress: print a progress bar.  check: domain check of every point (default
        :func:`check_hyper` with the cutoff and species count of ``data``), run on all
        points before anything is compiled.

    Returns:
      :class:`HyperTrajectory` over the grid points (``evaluations`` = number of points,
      twice that with a validation loss).

    Example:
      >>> import jax.numpy as jnp
      >>> loss = lambda h, d: (h["local_sigma"] - d) ** 2
      >>> t = grid_search(loss, {"local_sigma": [0.25, 0.5, 1.0]}, 0.45, progress=False)
      >>> t.best["local_sigma"], t.evaluations
      (0.5, 3)
    """
    names = list(grid)
    values = [list(np.atleast_1d(np.asarray(grid[k], np.float64))) for k in names]
    points = [dict(zip(names, combo), **(fixed or {})) for combo in itertools.product(*values)]
    check = check or functools.partial(check_hyper, data=data)
    for p in points:
        check(p)
    t0 = time.perf_counter()
    f = jax.jit(loss_fn)
    v = None if valid_fn is None else jax.jit(valid_fn)
    vdata = data if valid_data is None else valid_data
    losses, valids = [], [] if v is not None else None
    bar = _Bar(progress, len(points))
    for k, p in enumerate(points):
        hp = {key: jnp.asarray(val) for key, val in p.items()}
        losses.append(float(f(hp, data)))
        if v is not None:
            valids.append(float(v(hp, vdata)))
        bar.update(k + 1, losses[-1], None if v is None else valids[-1])
    bar.close()
    scores = np.asarray(valids if v is not None else losses)
    i = int(np.nanargmin(scores))
    return HyperTrajectory(hyper=[_to_host(p) for p in points], loss=losses, valid=valids,
                           best=_to_host(points[i]), best_loss=float(losses[i]),
                           best_valid=None if v is None else float(valids[i]),
                           evaluations=len(points) * (2 if v is not None else 1), seconds=time.perf_counter() - t0,
                           stopped="grid")
