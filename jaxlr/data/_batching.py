"""Padded batches for training: :class:`BatchLoader` and :func:`make_batches` (host, numpy).

Padding a dataset into :class:`jaxlr.data.AtomsBatch` and
:class:`~jaxlr.data.Targets` with a bounded number of distinct shapes, so a
jitted training step compiles only a few times.  Neighbour lists are built once per
structure and reused every epoch; jax arrays appear only in the batches handed to the
models.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from ._batch import TARGETS, AtomsBatch, Targets
from ._dataset import check_targets, species_indices
from ._padding import pad_atoms, pad_neighbors

__all__ = ["BatchLoader", "make_batches"]


def _round_up(x: int, m: int) -> int:
    return int(m * max(1, -(-int(x) // m)))


def _buckets(sizes: np.ndarray, max_shapes: int, batch_size: int) -> list[tuple[int, np.ndarray]]:
    """Group structure indices by size into ≤ ``max_shapes`` buckets of padded size N.

    Dynamic programming over the distinct padded sizes (multiples of 4) minimising the
    number of padded atom slots, counting whole batches (the last one padded).
    Returns ``[(N, indices sorted by dataset order), ...]`` from small to large N.
    """
    padded = np.array([_round_up(n, 4) for n in sizes], dtype=np.int64)
    values, counts = np.unique(padded, return_counts=True)
    d = len(values)
    cum = np.concatenate([[0], np.cumsum(counts)])
    k_max = max(1, min(max_shapes, d))
    inf = float("inf")
    # cost[k][j]: best cost for the first j distinct values in k buckets
    cost = [[inf] * (d + 1) for _ in range(k_max + 1)]
    back = [[0] * (d + 1) for _ in range(k_max + 1)]
    cost[0][0] = 0.0
    for k in range(1, k_max + 1):
        for j in range(1, d + 1):
            for i in range(j):
                if cost[k - 1][i] == inf:
                    continue
                m = cum[j] - cum[i]
                c = cost[k - 1][i] + math.ceil(m / batch_size) * batch_size * values[j - 1]
                if c < cost[k][j]:
                    cost[k][j], back[k][j] = c, i
    best_k = min(range(1, k_max + 1), key=lambda k: (cost[k][d], k))
    bounds = []
    j = d
    for k in range(best_k, 0, -1):
        i = back[k][j]
        bounds.append((i, j))
        j = i
    out = []
    for i, j in reversed(bounds):
        sel = np.nonzero((padded >= values[i]) & (padded <= values[j - 1]))[0]
        out.append((int(values[j - 1]), sel))
    return out


class BatchLoader:
    """Padded batches of a dataset with few distinct shapes; neighbour lists cached.

    Built once: validates the dataset (targets, species, periodicity), builds every
    structure's full neighbour list with :func:`jaxlr.neighbor_list` (on the unpadded
    structure, so padding atoms have no neighbours and are nobody's neighbour) and fixes
    the static sizes:

    - B = ``batch_size`` always (the last batch of each bucket is filled with padding
      structures, ``structure_mask = False``);
    - N from at most ``max_shapes`` size buckets (largest size of the bucket rounded up to
      a multiple of 4; batches never mix buckets);
    - M = one neighbour capacity for the dataset (largest count, rounded up to a multiple
      of 8, or ``capacity``);
    - F = one fragment count (largest over the dataset, at least 1, or ``n_fragments``).

    So a jitted step compiles at most ``len(loader.shapes)`` times.  Padding conventions
    are those of :class:`jaxlr.data.AtomsBatch`.

    Args:
      dataset: :class:`Dataset` or sequence of :class:`Structure` (all periodic or all open).
      species: the model's species (sorted atomic numbers); every atom must be one of them.
      cutoff: neighbour cutoff in Å.
      batch_size: structures per batch B.
      targets: names from :data:`TARGETS` to put in the :class:`Targets` (others None).
      n_fragments: fragment slots F (default: the largest over the dataset).
      dtype: floating dtype of the arrays (default: jax's default float).
      max_shapes: at most this many distinct padded atom counts N.
      capacity: neighbour slots M (default: the largest count rounded up to 8).

    Example:
      >>> # loader = BatchLoader(train, species=(1, 6, 7, 8), cutoff=5.0, batch_size=8,
      >>> #                      targets=("energy", "forces"))
      >>> # for epoch in range(100):
      >>> #     for atoms, targets in loader.epoch(seed=epoch):   # freshly shuffled
      >>> #         params, state = step(params, state, atoms, targets)
    """

    def __init__(self, dataset, species, *, cutoff: float, batch_size: int, targets=(),
                 n_fragments: int | None = None, dtype=None, max_shapes: int = 3,
                 capacity: int | None = None):
        from ..system._neighbors import neighbor_list

        structures = list(dataset)
        if not structures:
            raise ValueError("the dataset is empty.")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size}.")
        if int(max_shapes) < 1:
            raise ValueError(f"max_shapes must be a positive integer, got {max_shapes}.")
        if not (np.isfinite(cutoff) and cutoff > 0):
            raise ValueError(f"cutoff must be a positive number of Å, got {cutoff}.")
        targets = (targets,) if isinstance(targets, str) else tuple(targets)
        check_targets(structures, targets)
        periodic = {s.periodic for s in structures}
        if len(periodic) > 1:
            first_open = next(k for k, s in enumerate(structures) if not s.periodic)
            raise ValueError(f"the dataset mixes periodic and open-boundary structures (e.g. structure "
                             f"{first_open} has no cell); a batch is either all periodic or all open.")
        self.periodic = periodic.pop()
        self.species = tuple(int(z) for z in species)
        if list(self.species) != sorted(set(self.species)):
            raise ValueError(f"species must be sorted unique atomic numbers, got {self.species}.")
        self.channels = [species_indices(s.numbers, self.species, structure=k) for k, s in enumerate(structures)]
        if "coefficients" in targets:
            ks = {s.targets["coefficients"].shape[1] for s in structures}
            if len(ks) > 1:
                raise ValueError(f"coefficient targets have different basis sizes K {sorted(ks)}.")
            self.n_coefficients = ks.pop()
            widths = [s.info.get("basis_widths") for s in structures]
            self.coefficient_shells = None
            if all(w is not None for w in widths):
                shapes = {np.shape(w) for w in widths}
                n_shells = {sh[1] for sh in shapes if len(sh) == 2}
                if len(n_shells) != 1 or any(len(sh) != 2 or sh[0] != s.n_atoms
                                             for sh, s in zip((np.shape(w) for w in widths), structures)):
                    raise ValueError("info['basis_widths'] must be (n_atoms, n_shells) with one n_shells for "
                                     f"every structure, got shapes {sorted(shapes)}.")
                self.coefficient_shells = n_shells.pop()
        self.structures = structures
        self.targets = targets
        self.cutoff = float(cutoff)
        self.batch_size = int(batch_size)
        self.dtype = dtype

        needed_f = max(s.n_fragments for s in structures)
        if n_fragments is None:
            n_fragments = needed_f
        elif int(n_fragments) < needed_f:
            raise ValueError(f"n_fragments={n_fragments} is smaller than the largest fragment count "
                             f"{needed_f} in the dataset.")
        self.n_fragments = int(n_fragments)

        # neighbour lists once per structure, stored compactly (numpy)
        self._neighbors = []
        needed_m = 0
        for s in structures:
            nl = neighbor_list(s.positions, self.cutoff, s.cell)
            mask = np.asarray(nl.mask)
            count = int(mask.sum(axis=1).max(initial=0))
            needed_m = max(needed_m, count)
            idx = np.asarray(nl.idx)[:, :count]
            shifts = None if nl.shifts is None else np.asarray(nl.shifts)[:, :count]
            self._neighbors.append((idx, mask[:, :count], shifts))
        if capacity is None:
            capacity = _round_up(needed_m, 8)
        elif int(capacity) < needed_m:
            raise ValueError(f"capacity={capacity} is smaller than the largest neighbour count {needed_m}.")
        self.capacity = int(capacity)

        sizes = np.array([s.n_atoms for s in structures])
        self.buckets = _buckets(sizes, int(max_shapes), self.batch_size)

    # -- static sizes --------------------------------------------------------------------
    @property
    def shapes(self) -> set[tuple[int, int, int, int]]:
        """Distinct (B, N, M, F) of the batches (compilations of a jitted step)."""
        return {(self.batch_size, n, self.capacity, self.n_fragments) for n, _ in self.buckets}

    def __len__(self) -> int:
        """Batches per epoch."""
        return sum(-(-len(ix) // self.batch_size) for _, ix in self.buckets)

    # -- iteration -----------------------------------------------------------------------
    def batch_indices(self, seed: int | None = None) -> list[tuple[int, np.ndarray]]:
        """The plan of one epoch: ``[(N, (B,) dataset indices, −1 = padding structure), ...]``.

        ``seed=None``: buckets from small to large, dataset order inside each bucket.
        Otherwise structures are shuffled inside their bucket and the batches of all
        buckets are shuffled together (reproducible for a given seed).
        """
        rng = None if seed is None else np.random.default_rng(seed)
        plan = []
        for n, ix in self.buckets:
            ix = ix if rng is None else rng.permutation(ix)
            for start in range(0, len(ix), self.batch_size):
                chunk = ix[start:start + self.batch_size]
                full = np.full(self.batch_size, -1, dtype=np.int64)
                full[:len(chunk)] = chunk
                plan.append((n, full))
        if rng is not None:
            order = rng.permutation(len(plan))
            plan = [plan[k] for k in order]
        return plan

    def epoch(self, seed: int | None = None, *, with_indices: bool = False):
        """Yield ``(AtomsBatch, Targets)`` for one epoch (see :meth:`batch_indices`).

        With ``with_indices=True`` yields ``(AtomsBatch, Targets, indices)`` where
        ``indices`` (B,) are dataset indices (−1 for padding structures).
        """
        for n, indices in self.batch_indices(seed):
            atoms, targets = self.assemble(indices, n)
            yield (atoms, targets, indices) if with_indices else (atoms, targets)

    def __iter__(self):
        return self.epoch(None)

    def assemble(self, indices, n_atoms: int):
        """Build one padded batch from dataset ``indices`` (−1 = padding structure) with N = ``n_atoms``."""
        import jax.numpy as jnp

        n, f = int(n_atoms), self.n_fragments
        structs = [None if i < 0 else self.structures[int(i)] for i in indices]
        for i, s in zip(indices, structs):
            if s is not None and s.n_atoms > n:
                raise ValueError(f"structure {i} has {s.n_atoms} atoms, more than the batch's N = {n}.")
        real = [s is not None for s in structs]
        fq = np.zeros((len(structs), f))
        for k, s in enumerate(structs):
            if s is not None:
                if s.fragments is None:
                    fq[k, 0] = s.total_charge
                else:
                    fq[k, :s.fragment_charges.size] = s.fragment_charges
        # padding structures get a valid cell so that model outputs stay finite
        fallback = next((s.cell for s in structs if s is not None), np.eye(3)) if self.periodic else None
        per_atom = {"forces": (3,), "charges": (), "coefficients": (getattr(self, "n_coefficients", 0),)}
        per_structure = {"energy": (), "stress": (3, 3), "dipole": (3,)}
        tg = {t: None for t in TARGETS}
        for t in self.targets:
            values = [None if s is None else s.targets[t] for s in structs]
            if t in per_atom:
                tg[t] = pad_atoms(values, n, trailing=per_atom[t])
            else:
                tg[t] = np.stack([np.zeros(per_structure[t]) if v is None else np.asarray(v) for v in values])
        dt = self.dtype or jnp.zeros(()).dtype
        neighbors = pad_neighbors([None if i < 0 else self._neighbors[int(i)] for i in indices], n, self.capacity,
                                  periodic=self.periodic)
        atoms = AtomsBatch(
            positions=jnp.asarray(pad_atoms([None if s is None else s.positions for s in structs], n,
                                            trailing=(3,)), dt),
            species=jnp.asarray(pad_atoms([None if i < 0 else self.channels[int(i)] for i in indices], n,
                                          fill=-1, dtype=np.int32)),
            atom_mask=jnp.asarray(pad_atoms([None if s is None else np.ones(s.n_atoms, bool) for s in structs], n,
                                            fill=False, dtype=bool)),
            structure_mask=jnp.asarray(np.array(real)),
            total_charge=jnp.asarray(np.array([0.0 if s is None else s.total_charge for s in structs]), dt),
            fragments=jnp.asarray(pad_atoms([None if s is None else (np.zeros(s.n_atoms, np.int32) if s.fragments
                                                                      is None else s.fragments) for s in structs],
                                            n, fill=-1, dtype=np.int32)),
            fragment_charges=jnp.asarray(fq, dt), neighbors=neighbors,
            cell=None if not self.periodic else jnp.asarray(np.stack([fallback if s is None else s.cell
                                                                      for s in structs]), dt),
            field=None)
        targets = Targets(**{t: (None if v is None else jnp.asarray(v, dt)) for t, v in tg.items()})
        if "coefficients" in self.targets and self.coefficient_shells is not None:
            widths = pad_atoms([None if s is None else np.asarray(s.info["basis_widths"], np.float64)
                                for s in structs], n, trailing=(self.coefficient_shells,), fill=1.0)
            targets = dataclasses.replace(targets, coefficient_widths=jnp.asarray(widths, dt))
        return atoms, targets


def make_batches(dataset, species, *, cutoff: float, batch_size: int, targets=(), shuffle: bool = False,
                 seed: int = 0, n_fragments: int | None = None, dtype=None, max_shapes: int = 3,
                 capacity: int | None = None) -> list:
    """Pad a dataset into a list of ``(AtomsBatch, Targets)`` (one epoch of a :class:`BatchLoader`).

    Args:
      dataset, species, cutoff, batch_size, targets, n_fragments, dtype, max_shapes, capacity: as
        :class:`BatchLoader`.
      shuffle: shuffle structures inside size buckets and the order of the batches.
      seed: seed of the shuffle.

    Returns:
      list of ``(AtomsBatch, Targets)`` pairs; at most ``max_shapes`` distinct shapes, B =
      ``batch_size`` always.  For many epochs build a :class:`BatchLoader` once instead
      (the neighbour lists are then computed only once).

    Example:
      >>> import numpy as np
      >>> from jaxlr.data import Dataset, Structure
      >>> s = Structure(positions=np.array([[0.0, 0, 0], [0, 0, 1.0]]), numbers=[1, 1],
      ...               targets={"energy": -1.0})
      >>> [(atoms, tg)] = make_batches(Dataset([s, s, s]), (1,), cutoff=2.0, batch_size=4,
      ...                              targets=("energy",))
      >>> atoms.positions.shape, atoms.structure_mask.tolist()
      ((4, 4, 3), [True, True, True, False])
    """
    loader = BatchLoader(dataset, species, cutoff=cutoff, batch_size=batch_size, targets=targets,
                         n_fragments=n_fragments, dtype=dtype, max_shapes=max_shapes, capacity=capacity)
    return list(loader.epoch(seed if shuffle else None))
