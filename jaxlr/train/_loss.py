"""Training losses and evaluation metrics over padded batches.

* :func:`check_weights` — host-side validation of loss weights against what a model can
  predict and what a dataset holds (call it before anything is compiled).
* :func:`loss_fn` — the weighted multi-target mean squared error (jittable).
* :class:`Metrics` / :func:`metrics` — MAE and RMSE per target accumulated over many
  batches on the host (numpy, float64).

Units follow the rest of jaxlr: energies eV, forces eV/Å, stress eV/Å³, charges e,
dipoles e·Å, density coefficients in the model's basis.  Every per-target term is a mean
over the entries that exist — real structures (``structure_mask``) and, for per-atom
targets, real atoms (``atom_mask``) — so padding never counts:

=============== ======================================= ==========================
target          squared error averaged over             unit of the term
=============== ======================================= ==========================
energy          real structures, of (E − E_ref)/n_atoms (eV/atom)²
forces          real atoms × 3 components               (eV/Å)²
stress          real structures × 9 components          (eV/Å³)²
charges         real atoms                              e²
dipole          real structures × 3 components          (e·Å)²
coefficients    real atoms × K coefficients             (coefficient units)²
  (Coulomb)     real atoms, of ½ (Δρ|Δρ) per structure  eV/atom
=============== ======================================= ==========================

Density coefficients are compared in the Coulomb metric whenever both bases are known —
the model's (``ModelOutput.basis_widths``, the density model) and the reference's
(``Targets.coefficient_widths``, from ``info["basis_widths"]``, e.g. the water clusters):
the term is the electrostatic energy of the density error, ``½ (ρ − ρ_ref | ρ − ρ_ref)``
(:func:`jaxlr.electrostatics.coulomb_metric`), summed over structures and divided by the
number of real atoms.  It is a quadratic form in the coefficient error that ignores
directions without electrostatic consequence and works across different bases, as the
reference coefficients themselves were fitted.  Otherwise it is the raw mean square.

The total loss is Σ_t w_t · MSE_t over the targets with weight w_t > 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from ..data._batch import TARGETS, AtomsBatch, Targets
from ..electrostatics import coulomb_metric
from ..models._output import ModelOutput

__all__ = ["check_weights", "loss_fn", "per_target_mse", "Metrics", "metrics", "UNITS", "metric_names"]

#: unit of each target (and of the per-atom energy)
UNITS = {"energy": "eV", "energy_per_atom": "eV/atom", "forces": "eV/Å", "stress": "eV/Å³", "charges": "e",
         "dipole": "e·Å", "coefficients": "a.u.", "density_coulomb": "eV/atom"}


def check_weights(weights: Mapping[str, float], *, predicts: Iterable[str] | None = None,
                  available: Iterable[str] | None = None) -> dict[str, float]:
    """Validate loss weights on the host and return the active ones (weight > 0).

    Args:
      weights: target name → weight (a non-negative number; 0 switches a target off).
      predicts: targets the model can predict (:attr:`jaxlr.models.Potential.predicts`),
        or None to skip that check.
      available: targets the data holds (e.g. ``Dataset.available_targets()``), or None
        to skip that check.

    Returns:
      ``{name: float(weight)}`` for the weights > 0, in the order of :data:`TARGETS`.

    Raises:
      ValueError: unknown target names, negative or non-finite weights, no positive
        weight, a weighted target that the model cannot predict or the data lacks.

    Example:
      >>> check_weights({"energy": 1.0, "forces": 0.0}, predicts=("energy", "forces"))
      {'energy': 1.0}
    """
    if not isinstance(weights, Mapping):
        raise ValueError(f"weights must be a mapping target name → weight, got {type(weights).__name__}.")
    unknown = sorted(set(weights) - set(TARGETS))
    if unknown:
        raise ValueError(f"unknown target(s) {unknown} in the loss weights; targets are {TARGETS}.")
    active = {}
    for name in TARGETS:
        if name not in weights:
            continue
        try:
            w = float(weights[name])
        except (TypeError, ValueError):
            raise ValueError(f"the weight of {name!r} must be a number, got {weights[name]!r}.") from None
        if not np.isfinite(w) or w < 0:
            raise ValueError(f"the weight of {name!r} must be a finite non-negative number, got {w}.")
        if w > 0:
            active[name] = w
    if not active:
        raise ValueError(f"no target has a positive loss weight (weights = {dict(weights)}).")
    if predicts is not None:
        predicts = tuple(predicts)
        missing = [t for t in active if t not in predicts]
        if missing:
            raise ValueError(f"the model cannot predict {missing} (it predicts {predicts}); set their loss "
                             "weight to 0 or choose a model that predicts them.")
    if available is not None:
        available = tuple(available)
        missing = [t for t in active if t not in available]
        if missing:
            raise ValueError(f"the data lacks the weighted target(s) {missing} (available: {available}); set "
                             "their loss weight to 0 or use data with these references.")
    return active


def _masks(batch: AtomsBatch):
    smask = batch.structure_mask
    amask = batch.atom_mask & smask[:, None]
    return smask, amask


def coulomb_metric_available(output: ModelOutput, targets: Targets) -> bool:
    """Whether both coefficient bases are known (then coefficients are compared in the Coulomb metric)."""
    return (output.coefficients is not None and output.basis_widths is not None
            and targets.coefficients is not None and targets.coefficient_widths is not None)


def _s_count(n_shells: int, n_basis: int) -> int:
    """s functions of a basis with ``n_shells`` shells and ``n_basis = n_s + 3 n_p`` functions."""
    n_s, rest = divmod(3 * n_shells - n_basis, 2)
    if rest or n_s < 0 or n_s > n_shells:
        raise ValueError(f"{n_shells} basis widths do not fit {n_basis} coefficients per atom "
                         "(n_basis = n_s + 3 n_p, n_shells = n_s + n_p).")
    return n_s


def coefficient_metric(output: ModelOutput, targets: Targets, batch: AtomsBatch):
    """``½ (ρ − ρ_ref | ρ − ρ_ref)`` per structure (B,) in eV (jittable; open boundary).

    Args:
      output: with ``coefficients`` (B, N, K) and ``basis_widths`` (B, N, n_s + n_p).
      targets: with ``coefficients`` (B, N, K_ref) and ``coefficient_widths``.
      batch: the predicted :class:`jaxlr.data.AtomsBatch` (positions and masks).

    Returns:
      (B,) eV; padding atoms carry no density, padding structures give finite values.
    """
    c, w = output.coefficients, output.basis_widths
    c_ref = targets.coefficients.astype(c.dtype)
    w_ref = targets.coefficient_widths.astype(c.dtype)
    ns = _s_count(w.shape[-1], c.shape[-1])
    ns_ref = _s_count(w_ref.shape[-1], c_ref.shape[-1])
    _, amask = _masks(batch)

    def one(pos, c1, w1, c2, w2, mask):
        return coulomb_metric(pos, c1, w1[:, :ns], w1[:, ns:], c2, w2[:, :ns_ref], w2[:, ns_ref:], active=mask)

    return jax.vmap(one)(batch.positions.astype(c.dtype), c, w, c_ref, w_ref, amask)


def per_target_mse(output: ModelOutput, targets: Targets, batch: AtomsBatch, names: Iterable[str]) -> dict:
    """Mean squared errors over the real entries of a batch (jittable; see the module table).

    ``names`` must be targets that both ``output`` and ``targets`` hold (None entries raise
    ``ValueError`` at trace time, i.e. before compilation).
    """
    smask, amask = _masks(batch)
    dtype = output.energy.dtype
    n_struct = jnp.maximum(jnp.sum(smask), 1).astype(dtype)
    n_atoms_b = jnp.sum(amask, axis=1).astype(dtype)                       # (B,)
    n_atoms = jnp.maximum(jnp.sum(n_atoms_b), 1.0)
    out = {}
    for name in names:
        pred, ref = getattr(output, name), getattr(targets, name)
        if pred is None:
            raise ValueError(f"the model output has no {name!r} (model cannot predict it, or, for stress, "
                             "the batch is not periodic).")
        if ref is None:
            raise ValueError(f"the batch has no reference {name!r}; build the batches with this target.")
        err = pred - ref.astype(pred.dtype)
        if name == "energy":
            per_atom = err / jnp.maximum(n_atoms_b, 1.0)
            out[name] = jnp.sum(jnp.where(smask, per_atom ** 2, 0.0)) / n_struct
        elif name == "coefficients" and coulomb_metric_available(output, targets):
            per_structure = coefficient_metric(output, targets, batch)
            out[name] = jnp.sum(jnp.where(smask, per_structure, 0.0)) / n_atoms
        elif name in ("forces", "coefficients"):
            m = amask.reshape(amask.shape + (1,) * (err.ndim - 2))
            per = err.shape[-1]
            out[name] = jnp.sum(jnp.where(m, err ** 2, 0.0)) / (per * n_atoms)
        elif name == "charges":
            out[name] = jnp.sum(jnp.where(amask, err ** 2, 0.0)) / n_atoms
        elif name in ("stress", "dipole"):
            m = smask.reshape(smask.shape + (1,) * (err.ndim - 1))
            per = int(np.prod(err.shape[1:]))
            out[name] = jnp.sum(jnp.where(m, err ** 2, 0.0)) / (per * n_struct)
        else:
            raise ValueError(f"unknown target {name!r}; targets are {TARGETS}.")
    return out


def loss_fn(output: ModelOutput, targets: Targets, batch: AtomsBatch, weights: Mapping[str, float]):
    """Weighted multi-target MSE of one padded batch (jittable; weights are Python numbers).

    Args:
      output: model prediction (:class:`jaxlr.models.ModelOutput`).
      targets: references (:class:`jaxlr.models.Targets`), zero-padded.
      batch: the :class:`jaxlr.models.AtomsBatch` that was predicted (its masks select the
        real structures and atoms).
      weights: target name → weight; targets with weight 0 are ignored.

    Returns:
      ``(loss, parts)``: the scalar Σ_t w_t MSE_t and ``{target: MSE_t}`` (unweighted).
      Energies enter per atom, (E − E_ref)/n_atoms; see the module docstring.

    Raises:
      ValueError (at trace time, before compilation): unknown names, negative weights, a
      weighted target that the output or the batch's targets do not hold.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxlr.testing import toy_batch
      >>> b = toy_batch((1, 8), cutoff=3.0)
      >>> out = ModelOutput(energy=jnp.array([1.0, 0.0]))
      >>> loss, parts = loss_fn(out, Targets(energy=jnp.array([0.0, 0.0])), b, {"energy": 1.0})
      >>> round(float(loss), 6)        # ((1 − 0)/6 atoms)² averaged over 2 structures
      0.013889
    """
    active = check_weights(weights)
    parts = per_target_mse(output, targets, batch, active)
    total = sum(active[name] * parts[name] for name in active)
    return total, parts


def metric_names(targets: Iterable[str]) -> list[str]:
    """Names of the metrics for some targets (``energy`` adds ``energy_per_atom``)."""
    out = []
    for t in targets:
        out.append(t)
        if t == "energy":
            out.append("energy_per_atom")
    return out


class Metrics:
    """MAE and RMSE per target accumulated over batches (host numpy, float64).

    Args:
      targets: names to evaluate (each must be in both the outputs and the references
        passed to :meth:`update`).
      keep: also keep the real predicted and reference entries (for parity plots).

    Energies are evaluated per structure (eV) and per atom (``"energy_per_atom"``, eV/atom);
    forces, stress, dipoles per Cartesian component; charges per atom; coefficients per
    entry.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxlr.testing import toy_batch
      >>> b = toy_batch((1, 8), cutoff=3.0)
      >>> m = Metrics(["energy"])
      >>> m.update(ModelOutput(energy=jnp.array([1.0, -1.0])), Targets(energy=jnp.zeros(2)), b)
      >>> m.result()["energy"]
      {'mae': 1.0, 'rmse': 1.0, 'count': 2}
    """

    def __init__(self, targets: Iterable[str], *, keep: bool = False):
        self.targets = tuple(targets)
        unknown = sorted(set(self.targets) - set(TARGETS))
        if unknown:
            raise ValueError(f"unknown target(s) {unknown}; targets are {TARGETS}.")
        self.names = metric_names(self.targets) + (["density_coulomb"] if "coefficients" in self.targets else [])
        self.keep = keep
        self._abs = {k: 0.0 for k in self.names}
        self._sq = {k: 0.0 for k in self.names}
        self._count = {k: 0 for k in self.names}
        self._pred = {k: [] for k in self.names}
        self._ref = {k: [] for k in self.names}

    def _add(self, name, pred, ref):
        err = pred - ref
        self._abs[name] += float(np.sum(np.abs(err)))
        self._sq[name] += float(np.sum(err ** 2))
        self._count[name] += int(err.size)
        if self.keep:
            self._pred[name].append(pred)
            self._ref[name].append(ref)

    def update(self, output: ModelOutput, targets: Targets, batch: AtomsBatch) -> None:
        """Add one batch (arrays are copied to the host)."""
        smask = np.asarray(batch.structure_mask, dtype=bool)
        amask = np.asarray(batch.atom_mask, dtype=bool) & smask[:, None]
        for name in self.targets:
            pred, ref = getattr(output, name), getattr(targets, name)
            if pred is None or ref is None:
                what = "model output" if pred is None else "reference targets"
                raise ValueError(f"cannot evaluate {name!r}: the {what} do not hold it.")
            pred = np.asarray(pred, dtype=np.float64)
            ref = np.asarray(ref, dtype=np.float64)
            if name == "energy":
                n = amask.sum(axis=1)[smask]
                self._add("energy", pred[smask], ref[smask])
                self._add("energy_per_atom", pred[smask] / np.maximum(n, 1), ref[smask] / np.maximum(n, 1))
            elif name in ("forces", "charges", "coefficients"):
                self._add(name, pred[amask].ravel(), ref[amask].ravel())
                if name == "coefficients" and coulomb_metric_available(output, targets):
                    per = np.asarray(coefficient_metric(output, targets, batch), dtype=np.float64)
                    self._abs["density_coulomb"] += float(np.sum(per[smask]))
                    self._sq["density_coulomb"] += float(np.sum(per[smask]))
                    self._count["density_coulomb"] += int(amask.sum())
            else:
                self._add(name, pred[smask].ravel(), ref[smask].ravel())

    def result(self) -> dict:
        """``{name: {"mae", "rmse", "count"}}`` over everything added so far.

        ``density_coulomb`` (when coefficients are evaluated in the Coulomb metric) is the
        electrostatic energy of the density error per atom, Σ ½ (Δρ|Δρ) / Σ atoms (eV/atom),
        already a squared measure: its "mae" and "rmse" both hold that mean.
        """
        out = {}
        for k in self.names:
            c = self._count[k]
            if c == 0:
                continue
            if k == "density_coulomb":
                out[k] = {"mae": self._abs[k] / c, "rmse": self._abs[k] / c, "count": c}
                continue
            out[k] = {"mae": self._abs[k] / c, "rmse": float(np.sqrt(self._sq[k] / c)), "count": c}
        return out

    def mse(self) -> dict:
        """Mean squared error per target as the loss defines it (energy per atom)."""
        out = {}
        for t in self.targets:
            k = "energy_per_atom" if t == "energy" else t
            if t == "coefficients" and self._count.get("density_coulomb"):
                k = "density_coulomb"     # the loss's Coulomb-metric term, already squared
                out[t] = self._abs[k] / self._count[k]
                continue
            if self._count[k]:
                out[t] = self._sq[k] / self._count[k]
        return out

    def loss(self, weights: Mapping[str, float]) -> float:
        """Σ_t w_t MSE_t over everything added (the epoch-level counterpart of :func:`loss_fn`)."""
        mse = self.mse()
        active = check_weights(weights)
        missing = [t for t in active if t not in mse]
        if missing:
            raise ValueError(f"no data accumulated for the weighted target(s) {missing}.")
        return float(sum(w * mse[t] for t, w in active.items()))

    def parity(self) -> dict:
        """``{name: (pred, ref)}`` flat float64 arrays (only with ``keep=True``)."""
        if not self.keep:
            raise ValueError("parity data needs Metrics(..., keep=True).")
        return {k: (np.concatenate(self._pred[k]), np.concatenate(self._ref[k]))
                for k in self.names if self._pred[k]}


def metrics(results: Iterable, targets: Iterable[str]) -> dict:
    """MAE and RMSE per target over ``(output, targets, batch)`` triples (see :class:`Metrics`).

    Returns:
      ``{name: {"mae", "rmse", "count"}}`` with ``energy`` per structure (eV) and
      ``energy_per_atom`` (eV/atom) when energies are evaluated.
    """
    m = Metrics(targets)
    for output, refs, batch in results:
        m.update(output, refs, batch)
    return m.result()
