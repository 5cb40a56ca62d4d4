"""The experiments behind ``jaxlr demo`` and ``benchmarks/reproduce_models.py``.

1. Random point charges (Grisafi & Ceriotti 2019): learning curves of linear models
   (closed-form ridge) on local invariants (6 Å cutoff) and on ν = 1 LODE.  Error measure:
   relative RMSE = RMSE / standard deviation of the test energies.
2. Charged dimers (``charge-charge.xyz``): train below 6 Å, test from 6 Å; binding
   energies E(dimer) − E(A) − E(B) of local, multi-scale LODE and Qeq models.
3. Charge-state transfer and the Coulomb tail of the trained Qeq model.

Every function returns plain dicts of numbers and prints nothing unless ``log`` is given.
The scripts enable float64; the functions work in the default dtype too.
"""

from __future__ import annotations

import time

import jax
import numpy as np

from ..models import build_potential
from ..models._ridge import ridge_solve, structure_design

__all__ = ["point_charge_curves", "dimer_designs", "ridge_cv", "dimer_ridge", "train_dimer_model",
           "dimer_binding", "qeq_checks", "POINT_CHARGE_MODELS", "DIMER_RIDGE_MODELS"]

#: linear models of the point-charge learning curve
POINT_CHARGE_MODELS = {
    "local (6 Å)": dict(model="local", local=dict(cutoff=6.0, max_radial=6, max_angular=4, sigma=0.5)),
    "LODE ν=1": dict(model="lode", use_local=False,
                     lode=dict(cutoff=2.0, max_radial=4, max_angular=0, sigma=0.6)),
}

#: linear models of the dimer comparison (binding energies fitted directly)
DIMER_RIDGE_MODELS = {
    "local (4 Å)": dict(model="local", local=dict(cutoff=4.0, max_radial=4, max_angular=3, sigma=0.5)),
    "multi-scale LODE": dict(model="lode", use_local=False,
                             lode=dict(cutoff=3.0, max_radial=4, max_angular=0, sigma=1.0)),
}

LAMBDAS = tuple(10.0 ** k for k in range(-10, 0))


def _design_in_order(pot, dataset, batch_size=64):
    """Per-structure design rows of a linear potential, in dataset order."""
    from ..data._batching import BatchLoader
    from ..data._dataset import fit_offsets

    pot = pot.adapted_to([s.cell for s in dataset])
    loader = BatchLoader(dataset, pot.species, cutoff=pot.cutoff, batch_size=batch_size, targets=("energy",))
    first = next(iter(loader.epoch(None)))
    variables = pot.init(jax.random.PRNGKey(0), first[0], offsets=fit_offsets(dataset, pot.species))
    rows = None
    for atoms, refs, idx in loader.epoch(None, with_indices=True):
        a, _, _ = structure_design(pot, variables, [(atoms, refs)])
        if rows is None:
            rows = np.zeros((len(dataset), a.shape[1]))
        idx = np.asarray(idx)
        rows[idx[idx >= 0]] = a
    y = np.array([float(s.targets["energy"]) for s in dataset])
    counts = rows.reshape(len(dataset), len(pot.species), -1)[:, :, -1]
    offsets = np.asarray(variables["stats"]["energy_offsets"])
    return rows, y - counts @ offsets, counts.sum(axis=1)


def ridge_cv(a, y, w=None, *, folds: int = 5, lambdas=LAMBDAS, seed: int = 0):
    """Ridge weights with λ chosen by k-fold cross-validation on the training rows only."""
    n = len(y)
    w = np.ones(n) if w is None else w
    order = np.random.default_rng(seed).permutation(n)
    k = min(folds, n)
    best = None
    for lam in lambdas:
        err = 0.0
        for f in range(k):
            test = order[f::k]
            train = np.setdiff1d(order, test)
            th = ridge_solve(a[train], y[train], lam, w[train])
            err += np.sum(((a[test] @ th - y[test]) * w[test]) ** 2)
        if best is None or err < best[0]:
            best = (err, lam)
    return ridge_solve(a, y, best[1], w), best[1]


def point_charge_curves(n_structures: int = 2000, n_test: int = 500, train_sizes=(10, 30, 100, 300, 1000, 1500),
                        models=None, log=None) -> dict:
    """Learning curves on the bundled random point charges.

    Returns:
      ``{model: {"train_sizes": [...], "relative_rmse": [...], "lambda": [...], "seconds": t}}``
      with relative RMSE = RMSE / std(E_test) on the last ``n_test`` structures.
    """
    from ..data._bundled import load_point_charges

    data = load_point_charges(n_structures)
    sizes = [int(s) for s in train_sizes if s <= n_structures - n_test]
    out = {}
    for name, hyper in (models or POINT_CHARGE_MODELS).items():
        t0 = time.perf_counter()
        hyper = dict(hyper)
        pot = build_potential(hyper.pop("model"), species=data.species, hidden=(), **hyper)
        a, y, n = _design_in_order(pot, data)
        test = slice(len(y) - n_test, None)
        std = float(np.std(y[test]))
        errs, lams = [], []
        for m in sizes:
            th, lam = ridge_cv(a[:m], y[:m], 1.0 / n[:m])
            errs.append(float(np.sqrt(np.mean((a[test] @ th - y[test]) ** 2)) / std))
            lams.append(lam)
        out[name] = dict(train_sizes=sizes, relative_rmse=errs, lambdas=lams, seconds=time.perf_counter() - t0)
        if log:
            log(f"  {name:14s} " + "  ".join(f"{m}: {100 * e:.2g}%" for m, e in zip(sizes, errs)))
    return out


def _dimer_data(fragments: bool = True):
    """(dimers, monomers, both); ``fragments=False`` drops the dimers' fragment charges
    (one global constraint, total charge 0, instead of ±1 per monomer)."""
    from ..data._bundled import dimer_monomers, load_charged_dimers
    from ..data._dataset import Dataset

    dimers = load_charged_dimers()
    monomers = dimer_monomers(dimers)
    if not fragments:
        dimers = Dataset([s.replace(fragments=None, fragment_charges=None) for s in dimers])
    return dimers, monomers, Dataset(list(dimers) + list(monomers))


def dimer_designs(hyper: dict):
    """Binding-energy design rows: features(dimer) − features(A) − features(B), per dimer."""
    dimers, monomers, both = _dimer_data()
    hyper = dict(hyper)
    pot = build_potential(hyper.pop("model"), species=both.species, hidden=(), **hyper)
    rows, _, _ = _design_in_order(pot, both)
    nd = len(dimers)
    parent = np.array([s.info["parent"] for s in monomers])
    which = np.array([s.info["monomer"] for s in monomers])
    a_idx = nd + np.array([np.flatnonzero((parent == k) & (which == "A"))[0] for k in range(nd)])
    b_idx = nd + np.array([np.flatnonzero((parent == k) & (which == "B"))[0] for k in range(nd)])
    return rows[:nd] - rows[a_idx] - rows[b_idx]


def _split(dimers):
    dist = np.array([s.info["distance"] for s in dimers])
    return dist < 6.0, dist >= 6.0


def dimer_ridge(models=None, log=None) -> dict:
    """Linear models fitted to binding energies (< 6 Å); RMSE on near (train) and far (≥ 6 Å) dimers."""
    dimers, _, _ = _dimer_data()
    y = np.array([s.info["binding_energy"] for s in dimers])
    near, far = _split(dimers)
    out = {}
    for name, hyper in (models or DIMER_RIDGE_MODELS).items():
        t0 = time.perf_counter()
        d = dimer_designs(hyper)
        th, lam = ridge_cv(d[near], y[near])
        out[name] = dict(near_rmse=float(np.sqrt(np.mean((d[near] @ th - y[near]) ** 2))),
                         far_rmse=float(np.sqrt(np.mean((d[far] @ th - y[far]) ** 2))), lam=lam,
                         seconds=time.perf_counter() - t0)
        if log:
            log(f"  {name:18s} near RMSE {out[name]['near_rmse']:.3f} eV, far RMSE {out[name]['far_rmse']:.3f} eV")
    return out


def train_dimer_model(model: str = "qeq", *, epochs: int = 60, run_dir=None, progress=True, seed: int = 0,
                      fragments: bool = True, **hyper):
    """Train a network model on the energies of the near dimers (< 6 Å) and their monomers.

    The monomers carry their own total charges (±1), the dimers fragment charges (or, with
    ``fragments=False``, only their total charge 0), so a charge-aware model sees both
    charge states.  Returns the :class:`jaxlr.train.FitResult`.
    """
    from ..data._dataset import Dataset
    from ..train._loop import fit

    dimers, monomers, _ = _dimer_data(fragments)
    near, _ = _split(dimers)
    near_idx = set(np.flatnonzero(near).tolist())
    train = Dataset([dimers[int(k)] for k in sorted(near_idx)]
                    + [m for m in monomers if m.info["parent"] in near_idx])
    defaults = dict(local=dict(cutoff=4.0, max_radial=4, max_angular=3, sigma=0.5), hidden=(32, 32))
    defaults.update(hyper)
    pot = build_potential(model, species=train.species, **defaults)
    return fit(pot, train, None, weights={"energy": 1.0}, epochs=epochs, batch_size=16, learning_rate=3e-3,
               seed=seed, run_dir=run_dir, progress=progress)


def dimer_binding(potential, variables, fragments: bool = True) -> dict:
    """Binding energies E(dimer) − E(A) − E(B) predicted for all dimers; RMSE near and far.

    ``fragments`` as in :func:`train_dimer_model` (how the dimers are constrained)."""
    from ..data._batching import BatchLoader

    dimers, monomers, both = _dimer_data(fragments)
    loader = BatchLoader(both, potential.species, cutoff=potential.cutoff, batch_size=32, targets=())
    energy = np.zeros(len(both))
    for atoms, _, idx in loader.epoch(None, with_indices=True):
        idx = np.asarray(idx)
        e = np.asarray(potential.predict(variables, atoms, forces=False).energy)
        energy[idx[idx >= 0]] = e[idx >= 0]
    nd = len(dimers)
    pred = energy[:nd].copy()
    for k, m in enumerate(monomers):
        pred[m.info["parent"]] -= energy[nd + k]
    y = np.array([s.info["binding_energy"] for s in dimers])
    near, far = _split(dimers)
    return dict(near_rmse=float(np.sqrt(np.mean((pred[near] - y[near]) ** 2))),
                far_rmse=float(np.sqrt(np.mean((pred[far] - y[far]) ** 2))), predicted=pred.tolist(),
                reference=y.tolist())


def qeq_checks(potential, variables) -> dict:
    """Charge-state transfer and Coulomb tail of a trained Qeq (or latent-charge) model.

    - the cation of the first dimer alone with total charge +1 and 0: charges differ;
    - one dimer pulled apart rigidly to 8…40 Å: E(dimer) − E(A) − E(B) against
      k_e q_A q_B / r (r = centre distance of the fragments' charges).
    """
    from ..data._batching import BatchLoader
    from ..data._dataset import Dataset
    from ..units import KE

    dimers, monomers, _ = _dimer_data()
    mono = [m for m in monomers if m.info["parent"] == 0]
    a = mono[0]
    states = Dataset([a, a.replace(total_charge=a.total_charge - 1.0,
                                   fragment_charges=None if a.fragment_charges is None else
                                   a.fragment_charges - 1.0)])
    loader = BatchLoader(states, potential.species, cutoff=potential.cutoff, batch_size=2, targets=())
    atoms, _ = next(iter(loader.epoch(None)))
    q = np.asarray(potential.predict(variables, atoms, forces=False).charges)
    n_a = a.n_atoms
    charge_states = dict(total_charges=[float(a.total_charge), float(a.total_charge - 1.0)],
                         max_charge_change=float(np.max(np.abs(q[0, :n_a] - q[1, :n_a]))),
                         sums=[float(q[0].sum()), float(q[1].sum())])

    d0 = dimers[0]
    frag = np.asarray(d0.fragments)
    direction = d0.positions[frag == 1].mean(0) - d0.positions[frag == 0].mean(0)
    direction /= np.linalg.norm(direction)
    structures = []
    seps = (8.0, 12.0, 20.0, 40.0)
    for extra in seps:
        pos = d0.positions.copy()
        pos[frag == 1] += extra * direction
        structures.append(d0.replace(positions=pos))
    far = Dataset(structures + [mono[0], mono[1]])
    loader = BatchLoader(far, potential.species, cutoff=potential.cutoff, batch_size=len(far), targets=())
    atoms, _, idx = next(iter(loader.epoch(None, with_indices=True)))
    out = potential.predict(variables, atoms, forces=False)
    energy = np.zeros(len(far))
    charges = {}
    idx = np.asarray(idx)
    for slot, k in enumerate(idx):
        if k >= 0:
            energy[k] = float(out.energy[slot])
            charges[int(k)] = np.asarray(out.charges[slot])
    tail = []
    qa, qb = float(d0.fragment_charges[0]), float(d0.fragment_charges[1])
    for k, extra in enumerate(seps):
        s = structures[k]
        qk = charges[k][:s.n_atoms]
        ca = (qk[frag == 0] @ s.positions[frag == 0]) / qa
        cb = (qk[frag == 1] @ s.positions[frag == 1]) / qb
        r = float(np.linalg.norm(cb - ca))
        binding = energy[k] - energy[len(seps)] - energy[len(seps) + 1]
        tail.append(dict(r=r, binding=float(binding), coulomb=KE * qa * qb / r))
    return dict(charge_states=charge_states, tail=tail)
