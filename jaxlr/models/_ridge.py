"""Closed-form (ridge-regression) training of linear models.

A :class:`~jaxlr.models.LocalModel` or :class:`~jaxlr.models.LodeModel` built with
``hidden=()`` is linear in its standardised features x̃_i:

    E = Σ_i [ s_E (w_{Z_i} · x̃_i + b_{Z_i}) + e_{Z_i} ],

so the weights follow from one linear solve on per-structure, per-species feature sums
(the multi-scale LODE linear model of Grisafi & Ceriotti).  The loss is the per-atom
energy error, Σ_k ((E_k − E_k^ref)/n_k)², plus λ·tr(G)/dim·|w|² (λ relative to the
mean diagonal of the Gram matrix G, so it does not depend on feature units).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["structure_design", "fit_ridge", "ridge_solve"]


def _feature_names(module) -> list:
    names = []
    if getattr(module, "use_local", True):
        names.append("std_local")
    if hasattr(module, "lode"):
        names.append("std_lode")
    return names


def structure_design(potential, variables, batches):
    """Design matrix of a linear potential (host numpy).

    Args:
      potential: a linear :class:`jaxlr.models.Potential` ("local" or "lode", hidden=()).
      variables: from ``potential.init`` (the standardisation statistics are used).
      batches: iterable of ``(AtomsBatch, Targets)`` with energies.

    Returns:
      ``(A (K, S·(D+1)), residual (K,), n_atoms (K,))``: per structure k, per-species sums
      of x̃ and atom counts; the residual E − Σ e_Z offsets; real structures only.
    """
    module = potential.module
    if potential.name not in ("local", "lode") or tuple(module.hidden) != ():
        raise ValueError("fit_ridge needs a linear model: build_potential('lode' or 'local', hidden=()).")
    names = _feature_names(module)
    stats = variables["stats"]
    n_sp = len(module.species)
    offsets = np.asarray(stats["energy_offsets"])
    describe = jax.jit(jax.vmap(lambda s: module.apply(variables, s, method="descriptors")))
    rows, res, counts = [], [], []
    for batch, targets in batches:
        if targets.energy is None:
            raise ValueError("fit_ridge needs energy targets in the batches.")
        feats = describe(batch)
        x = jnp.concatenate([(feats[k] - stats[k]["mean"]) / stats[k]["scale"] for k in names], axis=-1)
        x = np.asarray(x)
        species = np.asarray(batch.species)
        keep = np.asarray(batch.structure_mask)
        onehot = (species[..., None] == np.arange(n_sp)).astype(x.dtype)          # (B, N, S)
        sums = np.einsum("bns,bnd->bsd", onehot, x)
        n_s = onehot.sum(axis=1)                                                   # (B, S)
        a = np.concatenate([sums, n_s[..., None]], axis=-1).reshape(len(keep), -1)
        e = np.asarray(targets.energy) - n_s @ offsets
        rows.append(a[keep])
        res.append(e[keep])
        counts.append(n_s.sum(axis=1)[keep])
    return np.concatenate(rows), np.concatenate(res), np.concatenate(counts)


def ridge_solve(a, y, lam: float, weights=None, penalized=None):
    """argmin_θ Σ_k w_k² (a_k·θ − y_k)² + λ·tr(G)/dim·Σ_{penalized} θ_j² (host numpy).

    Args:
      a: (K, P) design.  y: (K,) targets.  lam: relative regulariser λ (see module docstring).
      weights: (K,) row weights w_k (default 1).  penalized: (P,) bool, the regularised
        columns (default all); the others get 10⁻¹²·λ·tr(G)/dim so the system stays regular.

    Returns:
      (P,) θ.

    Example:
      >>> a = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]); y = a @ np.array([0.5, -1.0])
      >>> np.round(ridge_solve(a, y, 1e-12), 6)
      array([ 0.5, -1. ])
    """
    w = np.ones(len(y)) if weights is None else np.asarray(weights)
    aw = a * w[:, None]
    gram = aw.T @ aw
    shift = lam * np.trace(gram) / gram.shape[0]
    penalized = np.ones(gram.shape[0], bool) if penalized is None else np.asarray(penalized, bool)
    gram[np.diag_indices_from(gram)] += np.where(penalized, shift, 1e-12 * shift) + 1e-300
    return np.linalg.solve(gram, aw.T @ (y * w))


def fit_ridge(potential, variables, batches, *, regularizer: float = 1e-6, design=None):
    """Solve a linear model's weights in closed form; returns new variables.

    Args:
      potential, variables, batches: as :func:`structure_design` (or pass ``design``, its
        output, to scan regularisers without recomputing features).
      regularizer: λ (relative; see module docstring).  Biases are not regularised.

    Returns:
      variables with ``params["energy_net"]`` replaced (stats unchanged).

    Example:
      >>> # pot = build_potential("lode", species=(11, 17), hidden=()); v = pot.init(key, big_batch, offsets=...)
      >>> # v = fit_ridge(pot, v, make_batches(train, pot.species, cutoff=pot.cutoff, batch_size=64,
      >>> #                                    targets=("energy",)))
    """
    a, y, n = structure_design(potential, variables, batches) if design is None else design
    n_sp = len(potential.module.species)
    d1 = a.shape[1] // n_sp
    is_weight = np.ones((n_sp, d1), bool)
    is_weight[:, -1] = False                                                   # biases: not regularised
    scale = float(np.asarray(variables["stats"]["energy_scale"]))
    theta = ridge_solve(a, y, regularizer, 1.0 / n, is_weight.reshape(-1)) / scale
    theta = theta.reshape(n_sp, d1)
    params = dict(variables["params"])
    net = dict(params["energy_net"])
    dtype = net["w0"].dtype
    net["w0"] = jnp.asarray(theta[:, :-1, None], dtype)
    net["b0"] = jnp.asarray(theta[:, -1:], dtype)
    params["energy_net"] = net
    return {"params": params, "stats": variables["stats"]}
