"""Host data layer (jaxlr.data) and bundled data sets (jaxlr.data)."""

from __future__ import annotations

import gzip

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference

import jaxlr
from jaxlr.data import (
    BatchLoader,
    Dataset,
    Structure,
    check_targets,
    detect_fragments,
    fit_offsets,
    make_batches,
    read_structures,
    species_indices,
)
from jaxlr.data._batch import AtomsBatch, Targets
from jaxlr.data._bundled import data_path, dimer_monomers, load_charged_dimers, load_point_charges
from jaxlr.data.generate.point_charges import min_image_distance

pytest.importorskip("ase")
import ase.io  # noqa: E402
from ase import Atoms  # noqa: E402
from ase.calculators.singlepoint import SinglePointCalculator  # noqa: E402


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------
def random_structure(rng, n, *, periodic, species=(1, 6, 8), fragments=False):
    """Random structure with all targets (atoms ≥ 1 Å apart)."""
    box = (n / 0.05) ** (1.0 / 3.0)
    pts = []
    while len(pts) < n:
        p = rng.uniform(0.0, box, 3)
        if all(np.linalg.norm(p - x) > 1.0 for x in pts):
            pts.append(p)
    pos = np.array(pts)
    cell = np.diag(rng.uniform(1.0, 1.2, 3)) * box if periodic else None
    numbers = rng.choice(species, n)
    q = rng.normal(size=n)
    targets = {"energy": rng.normal(), "forces": rng.normal(size=(n, 3)), "charges": q,
               "dipole": rng.normal(size=3), "coefficients": rng.normal(size=(n, 2))}
    if periodic:
        targets["stress"] = rng.normal(size=(3, 3))
    kw = {}
    if fragments:
        kw = dict(fragments=np.arange(n) % 2, fragment_charges=np.array([0.5, q.sum() - 0.5]))
    return Structure(positions=pos, numbers=numbers, cell=cell, total_charge=float(q.sum()), targets=targets,
                     info={"tag": n}, **kw)


def random_dataset(seed, sizes, *, periodic, **kw):
    rng = np.random.default_rng(seed)
    return Dataset([random_structure(rng, n, periodic=periodic, **kw) for n in sizes])


def pair_set(idx, mask, shifts, n):
    """{(i, j, shift)} of the real rows < n of one structure's dense list."""
    idx, mask = np.asarray(idx), np.asarray(mask)
    out = set()
    for i in range(n):
        for slot in np.nonzero(mask[i])[0]:
            s = (0, 0, 0) if shifts is None else tuple(int(v) for v in np.asarray(shifts)[i, slot])
            out.add((i, int(idx[i, slot]), s))
    return out


# --------------------------------------------------------------------------------------
# Structure, reading
# --------------------------------------------------------------------------------------
def test_structure_validation_and_copies():
    pos = np.zeros((2, 3))
    pos[1, 2] = 1.0
    forces = np.ones((2, 3))
    s = Structure(positions=pos, numbers=[1, 1], targets={"energy": -1.0, "forces": forces})
    pos[0, 0] = 5.0
    forces[:] = 7.0
    assert s.positions[0, 0] == 0.0 and np.all(s.targets["forces"] == 1.0)   # inputs were copied
    assert s.n_atoms == 2 and not s.periodic and s.n_fragments == 1
    with pytest.raises(ValueError, match="positions"):
        Structure(positions=np.full((2, 3), np.nan), numbers=[1, 1])
    with pytest.raises(ValueError, match="forces"):
        Structure(positions=np.zeros((2, 3)), numbers=[1, 1], targets={"forces": np.zeros((3, 3))})
    with pytest.raises(ValueError, match="unknown target"):
        Structure(positions=np.zeros((1, 3)), numbers=[1], targets={"energie": 1.0})
    with pytest.raises(ValueError, match="singular"):
        Structure(positions=np.zeros((1, 3)), numbers=[1], cell=np.zeros((3, 3)))
    with pytest.raises(ValueError, match="sum to"):
        Structure(positions=np.zeros((2, 3)), numbers=[1, 1], total_charge=1.0, fragments=[0, 1],
                  fragment_charges=[1.0, 1.0])
    with pytest.raises(ValueError, match="stress"):
        Structure(positions=np.zeros((1, 3)), numbers=[1], targets={"stress": np.zeros((3, 3))})
    # Voigt stress is converted to 3x3
    s = Structure(positions=np.zeros((1, 3)), numbers=[1], cell=np.eye(3) * 3,
                  targets={"stress": np.arange(6.0)})
    assert np.allclose(s.targets["stress"], [[0, 5, 4], [5, 1, 3], [4, 3, 2]])


@pytest.mark.parametrize("compressed", [False, True])
def test_extxyz_round_trip(tmp_path, compressed):
    rng = np.random.default_rng(0)
    frames = []
    # periodic with calculator results (energy, forces, Voigt stress, charges)
    a = Atoms("NaClNaCl", positions=rng.uniform(0, 5, (4, 3)), cell=np.diag([5.0, 5.5, 6.0]), pbc=True)
    stress3 = rng.normal(size=(3, 3))
    stress3 = stress3 + stress3.T
    voigt = stress3[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
    a.calc = SinglePointCalculator(a, energy=-3.5, forces=rng.normal(size=(4, 3)), stress=voigt,
                                   charges=np.array([0.9, -0.9, 0.8, -0.8]))
    frames.append(a)
    # open boundary with info/arrays, total charge and fragments
    b = Atoms("OH2H", positions=rng.uniform(0, 3, (4, 3)))
    b.info.update(energy=-1.25, dipole=np.array([0.1, 0.2, 0.3]), total_charge=-1.0,
                  fragment_charges=np.array([0.0, -1.0]), distance=3.5, label="x")
    b.arrays["forces"] = rng.normal(size=(4, 3))
    b.arrays["fragments"] = np.array([0, 0, 0, 1])
    b.arrays["coefficients"] = rng.normal(size=(4, 3))
    frames.append(b)
    path = tmp_path / ("frames.xyz.gz" if compressed else "frames.xyz")
    if compressed:
        with gzip.open(path, "wt") as f:
            ase.io.write(f, frames, format="extxyz")
    else:
        ase.io.write(path, frames, format="extxyz")

    s1, s2 = read_structures(path)
    assert s1.periodic and np.allclose(s1.cell, a.cell.array)
    assert np.allclose(s1.positions, a.positions) and s1.numbers.tolist() == [11, 17, 11, 17]
    assert np.isclose(s1.targets["energy"], -3.5)
    assert np.allclose(s1.targets["forces"], a.calc.results["forces"])
    assert np.allclose(s1.targets["stress"], stress3)
    assert np.allclose(s1.targets["charges"], [0.9, -0.9, 0.8, -0.8])
    assert s1.total_charge == pytest.approx(0.0, abs=1e-12)   # sum of the per-atom charges
    assert s1.fragments is None
    assert not s2.periodic and s2.cell is None
    assert s2.numbers.tolist() == [8, 1, 1, 1]
    assert np.isclose(s2.targets["energy"], -1.25) and np.allclose(s2.targets["dipole"], [0.1, 0.2, 0.3])
    assert np.allclose(s2.targets["forces"], b.arrays["forces"])
    assert np.allclose(s2.targets["coefficients"], b.arrays["coefficients"])
    assert s2.total_charge == -1.0
    assert s2.fragments.tolist() == [0, 0, 0, 1] and s2.fragment_charges.tolist() == [0.0, -1.0]
    assert s2.info["distance"] == 3.5 and s2.info["label"] == "x"
    assert set(s2.targets) == {"energy", "forces", "dipole", "coefficients"}

    ds = Dataset.from_file(path, periodic=False)   # container cells dropped
    assert ds.periodic is False and "stress" not in ds[0].targets
    assert ds.available_targets() == ("energy", "forces")


def test_partial_pbc_refused(tmp_path):
    a = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.7]], cell=np.eye(3) * 5, pbc=[True, True, False])
    ase.io.write(tmp_path / "slab.xyz", a, format="extxyz")
    with pytest.raises(ValueError, match="slabs"):
        read_structures(tmp_path / "slab.xyz")
    assert read_structures(tmp_path / "slab.xyz", periodic=False)[0].cell is None


@pytest.mark.parametrize("compressed", [False, True])
def test_unknown_chemical_symbol_names_symbol_and_frame(tmp_path, compressed):
    frame = "2\nProperties=species:S:1:pos:R:3 energy=-1.0\nO 0 0 0\n{} 0 0 0.96\n"
    text = frame.format("H") + frame.format("H") + frame.format("Xx") + frame.format("H")
    path = tmp_path / ("bad.xyz.gz" if compressed else "bad.xyz")
    with (gzip.open(path, "wt") if compressed else open(path, "w")) as f:
        f.write(text)
    with pytest.raises(ValueError, match=r"bad\.xyz.*frame 2 \(0-based\): unknown chemical symbol 'Xx' "
                                         r"\(did you mean 'Xe'\?\).*remove the structure"):
        read_structures(path)
    with pytest.raises(ValueError, match="'Xx'"):
        Dataset.from_file(path)
    # Structure accepts chemical symbols; an unknown one is named with its atom
    s = Structure(positions=np.zeros((3, 3)) + np.arange(3)[:, None], numbers=["O", "H", "H"])
    assert s.numbers.tolist() == [8, 1, 1] and s.numbers.dtype == np.int64
    with pytest.raises(ValueError, match=r"numbers\[1\]: unknown chemical symbol 'Xx'"):
        Structure(positions=np.zeros((2, 3)), numbers=["O", "Xx"])
    with pytest.raises(ValueError, match=r"'CL' \(did you mean 'Cl'"):
        Structure(positions=np.zeros((2, 3)), numbers=["Na", "CL"])
    with pytest.raises(ValueError, match="numbers must be atomic numbers in 1..118"):
        Structure(positions=np.zeros((1, 3)), numbers=[0])


# --------------------------------------------------------------------------------------
# Dataset bookkeeping, checks
# --------------------------------------------------------------------------------------
def test_dataset_indexing_split_subset():
    ds = random_dataset(1, [3, 4, 5, 6, 7, 8, 9, 10, 11, 12], periodic=False)
    assert isinstance(ds[2], Structure) and ds[np.int64(2)] is ds[2]
    assert len(ds[2:5]) == 3 and isinstance(ds[2:5], Dataset)
    assert [s.n_atoms for s in ds[[0, 9]]] == [3, 12]
    assert len(ds[np.arange(10) % 2 == 0]) == 5
    assert ds.species == (1, 6, 8) and ds.available_targets() == ("energy", "forces", "charges", "dipole",
                                                                    "coefficients")
    parts = ds.split((0.8, 0.1, 0.1), seed=3)
    assert [len(p) for p in parts] == [8, 1, 1]
    ids = [id(s) for p in parts for s in p]
    assert sorted(ids) == sorted(id(s) for s in ds)          # disjoint and complete
    again = ds.split((0.8, 0.1, 0.1), seed=3)
    assert all([id(s) for s in p] == [id(s) for s in q] for p, q in zip(parts, again))
    assert len(ds.subset(lambda s: s.n_atoms > 8)) == 4


def test_missing_target_and_unknown_species():
    ds = random_dataset(2, [3, 4, 5], periodic=False)
    s = ds[1]
    ds = Dataset([ds[0], s.replace(targets={"energy": 1.0}), ds[2]])
    assert ds.available_targets() == ("energy",)
    with pytest.raises(ValueError, match="'forces'.*structure indices 1"):
        check_targets(ds, ["energy", "forces"])
    with pytest.raises(ValueError, match="forces"):
        make_batches(ds, (1, 6, 8), cutoff=3.0, batch_size=2, targets=("forces",))
    with pytest.raises(ValueError, match="unknown target"):
        check_targets(ds, ["force"])
    # present in some structures only: named (with caller's indices, e.g. file frames) and
    # the advice fits the use (train: the loss weights; evaluate: the requested targets)
    assert ds.available_targets(every=False) == ("energy", "forces", "charges", "dipole", "coefficients")
    with pytest.raises(ValueError, match=r"'forces' is missing in 1 of 3 structures \(structure indices 11\)"
                                         r".*drop these structures.*remove 'forces' from the loss weights"):
        check_targets(ds, ["forces"], indices=[10, 11, 12], use="train")
    with pytest.raises(ValueError, match="do not request 'forces'"):
        check_targets(ds, ["forces"])
    with pytest.raises(ValueError, match="indices must name each of the 3 structures"):
        check_targets(ds, ["forces"], indices=[0])
    assert species_indices([6, 1, 8, 6], (1, 6, 8)).tolist() == [1, 0, 2, 1]
    with pytest.raises(ValueError, match=r"structure 3 contains atomic number 8 \(O\).*\(1, 6\)"):
        species_indices([1, 8, 6], (1, 6), structure=3)
    with pytest.raises(ValueError, match=r"atomic number 8 \(O\)"):
        make_batches(ds, (1, 6), cutoff=3.0, batch_size=2)


# --------------------------------------------------------------------------------------
# batching
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("periodic", [True, False])
def test_make_batches_shapes_padding_neighbors(periodic):
    sizes = [5, 6, 7, 9, 12, 13, 17, 20, 21, 22, 30, 31, 6]
    ds = random_dataset(3, sizes, periodic=periodic, fragments=True)
    species = (1, 6, 8)
    cutoff = 3.5
    targets = ("energy", "forces", "charges", "dipole", "coefficients") + (("stress",) if periodic else ())
    loader = BatchLoader(ds, species, cutoff=cutoff, batch_size=4, targets=targets)
    batches = list(loader.epoch())
    assert len(batches) == len(loader)
    shapes = {(a.positions.shape[0], a.positions.shape[1]) for a, _ in batches}
    assert len(shapes) <= 3 and {b for b, _ in shapes} == {4}
    assert len(loader.shapes) == len(shapes)
    assert all(n % 4 == 0 for _, n in shapes)
    seen = []
    for (atoms, tg), (_, indices) in zip(batches, loader.batch_indices()):
        assert isinstance(atoms, AtomsBatch) and isinstance(tg, Targets)
        assert isinstance(atoms.positions, jax.Array) and isinstance(atoms.neighbors.idx, jax.Array)
        atoms, tg = jax.tree_util.tree_map(np.asarray, (atoms, tg))   # fast element access
        b, n = atoms.species.shape
        m = atoms.neighbors.idx.shape[-1]
        assert m % 8 == 0 and m == loader.capacity and atoms.fragment_charges.shape == (b, 2)
        assert atoms.species.dtype == np.int32 and atoms.fragments.dtype == np.int32
        assert atoms.atom_mask.dtype == np.bool_ and atoms.positions.dtype == np.float64
        assert atoms.neighbors.idx.dtype == np.int32 and tg.energy.dtype == np.float64
        assert atoms.neighbors.shifts is None or atoms.neighbors.shifts.dtype == np.int8
        assert (atoms.cell is not None) == periodic and atoms.field is None
        assert (atoms.neighbors.shifts is not None) == periodic
        for k in range(b):
            i = int(indices[k])
            if i < 0:                                   # padding structure
                assert not atoms.structure_mask[k] and not np.any(atoms.atom_mask[k])
                assert np.all(atoms.species[k] == -1) and np.all(atoms.fragments[k] == -1)
                assert not np.any(atoms.neighbors.mask[k]) and float(tg.energy[k]) == 0.0
                assert np.all(np.asarray(tg.forces[k]) == 0.0)
                continue
            seen.append(i)
            s = ds[i]
            na = s.n_atoms
            assert atoms.structure_mask[k]
            assert np.array_equal(atoms.atom_mask[k], np.arange(n) < na)
            assert np.array_equal(atoms.species[k, :na], species_indices(s.numbers, species))
            assert np.all(atoms.species[k, na:] == -1) and np.all(atoms.fragments[k, na:] == -1)
            assert np.array_equal(atoms.fragments[k, :na], s.fragments)
            assert np.allclose(atoms.fragment_charges[k], s.fragment_charges)
            assert float(atoms.total_charge[k]) == pytest.approx(s.total_charge)
            assert np.all(np.asarray(atoms.positions[k, na:]) == 0.0)
            assert np.allclose(atoms.positions[k, :na], s.positions)
            # targets: values, zero padding
            assert float(tg.energy[k]) == pytest.approx(float(s.targets["energy"]))
            assert np.allclose(tg.forces[k, :na], s.targets["forces"]) and np.all(tg.forces[k, na:] == 0)
            assert np.allclose(tg.charges[k, :na], s.targets["charges"]) and np.all(tg.charges[k, na:] == 0)
            assert np.all(tg.coefficients[k, na:] == 0) and tg.coefficients.shape == (b, n, 2)
            assert np.allclose(tg.dipole[k], s.targets["dipole"])
            if periodic:
                assert np.allclose(tg.stress[k], s.targets["stress"])
                assert np.allclose(atoms.cell[k], s.cell)
            else:
                assert tg.stress is None
            # neighbour list: same pairs as an independent list of the unpadded structure
            nl = jaxlr.neighbor_list(s.positions, cutoff, s.cell)
            nb = atoms.neighbors
            got = pair_set(nb.idx[k], nb.mask[k], None if nb.shifts is None else nb.shifts[k], na)
            want = pair_set(nl.idx, nl.mask, nl.shifts, na)
            assert got == want and len(want) > 0
            assert not np.any(nb.mask[k, na:])                            # padding atoms: no neighbours
            assert np.all(np.asarray(nb.idx[k])[np.asarray(nb.mask[k])] < na)   # nobody's neighbour
            assert np.array_equal(nb.idx[k, na:], np.broadcast_to(np.arange(na, n)[:, None], (n - na, m)))
    assert sorted(seen) == list(range(len(ds)))
    # last batch of the epoch is padded with masked structures to exactly batch_size
    assert any(not bool(np.all(a.structure_mask)) for a, _ in batches)


def test_batches_shuffle_dtype_fragments_default():
    ds = random_dataset(4, [4, 5, 6, 4, 5, 8, 3], periodic=False)
    loader = BatchLoader(ds, (1, 6, 8), cutoff=3.0, batch_size=3, targets=("energy",), dtype=jnp.float32,
                         max_shapes=2)
    assert len({n for n, _ in loader.buckets}) <= 2
    e1 = [np.asarray(i) for _, i in loader.batch_indices(1)]
    e2 = [np.asarray(i) for _, i in loader.batch_indices(1)]
    e3 = [np.asarray(i) for _, i in loader.batch_indices(2)]
    assert all(np.array_equal(x, y) for x, y in zip(e1, e2))
    assert sorted(np.concatenate(e3)[np.concatenate(e3) >= 0].tolist()) == list(range(len(ds)))
    atoms, tg, idx = next(loader.epoch(5, with_indices=True))
    assert atoms.positions.dtype == jnp.float32 and tg.energy.dtype == jnp.float32
    assert tg.forces is None and tg.charges is None
    # no fragments: all real atoms in fragment 0, which carries the total charge
    k = int(np.nonzero(idx >= 0)[0][0])
    s = ds[int(idx[k])]
    assert atoms.fragment_charges.shape == (3, 1)
    assert float(atoms.fragment_charges[k, 0]) == pytest.approx(s.total_charge, rel=1e-6)
    assert np.all(atoms.fragments[k, :s.n_atoms] == 0)
    # mixing periodic and open structures is refused
    mixed = Dataset([ds[0], random_dataset(5, [4], periodic=True)[0]])
    with pytest.raises(ValueError, match="mixes periodic"):
        make_batches(mixed, (1, 6, 8), cutoff=3.0, batch_size=2)


# --------------------------------------------------------------------------------------
# offsets, fragments
# --------------------------------------------------------------------------------------
def test_fit_offsets_recovers_known_offsets():
    rng = np.random.default_rng(6)
    species = (1, 6, 8)
    true = np.array([-13.6, -1029.5, -2041.25])
    structures = []
    for _ in range(40):
        counts = rng.integers(1, 9, 3)
        numbers = np.repeat(species, counts)
        pos = np.arange(len(numbers))[:, None] * np.array([1.0, 0, 0])
        structures.append(Structure(positions=pos, numbers=numbers, targets={"energy": counts @ true}))
    fitted = fit_offsets(Dataset(structures), species)
    assert np.allclose(fitted, true, rtol=0, atol=1e-8)
    # collinear compositions (all the same stoichiometry): finite and reproducing the energies
    same = Dataset([Structure(positions=[[0, 0, 0], [1.0, 0, 0]], numbers=[11, 17],
                              targets={"energy": -5.0}) for _ in range(3)])
    e = fit_offsets(same, (11, 17))
    assert np.all(np.isfinite(e)) and e.sum() == pytest.approx(-5.0, abs=1e-8)
    with pytest.raises(ValueError, match="atomic number 17"):
        fit_offsets(same, (11,))


def test_detect_fragments_simple_and_periodic():
    pos = np.array([[0, 0, 0], [0, 0, 0.96], [5, 0, 0], [0.9, 0.3, 0.0], [5, 0, 0.74]])
    assert detect_fragments(pos, [8, 1, 1, 1, 1]).tolist() == [0, 0, 1, 0, 1]
    # H2 across a periodic boundary is one molecule
    cell = np.eye(3) * 6.0
    pos = np.array([[0.1, 3, 3], [5.5, 3, 3], [3, 3, 3]])
    assert detect_fragments(pos, [1, 1, 8], cell=cell).tolist() == [0, 0, 1]
    assert detect_fragments(pos, [1, 1, 8]).tolist() == [0, 1, 2]


def test_charged_dimers_two_fragments_a_first():
    ds = load_charged_dimers()
    assert len(ds) == 130 and ds.periodic is False and ds.species == (1, 6, 7, 8)
    for s in ds:
        frag = detect_fragments(s.positions, s.numbers)
        n_a = int(np.sum(frag == 0))
        assert frag.max() == 1 and np.all(frag[:n_a] == 0) and np.all(frag[n_a:] == 1)
        assert np.array_equal(s.fragments, frag)
        assert s.fragment_charges.tolist() == [s.info["chargeA"], s.info["chargeB"]]
        assert s.total_charge == 0.0
        # closed-shell monomers: even electron count, so the charges sit on the right fragments
        assert (int(s.numbers[:n_a].sum()) - s.info["chargeA"]) % 2 == 0
        assert (int(s.numbers[n_a:].sum()) - s.info["chargeB"]) % 2 == 0
        assert s.info["binding_energy"] == pytest.approx(
            float(s.targets["energy"]) - s.info["energyA"] - s.info["energyB"])
        assert -7.0 < s.info["binding_energy"] < 0.0 and 3.5 < s.info["distance"] < 9.0
    mono = dimer_monomers(ds)
    assert len(mono) == 260
    for k in (0, 77, 129):
        a, b = mono[2 * k], mono[2 * k + 1]
        assert (a.info["parent"], a.info["monomer"], b.info["parent"], b.info["monomer"]) == (k, "A", k, "B")
        assert np.allclose(np.concatenate([a.positions, b.positions]), ds[k].positions)
        assert float(a.targets["energy"]) == ds[k].info["energyA"] and b.total_charge == ds[k].info["chargeB"]
    atoms, _ = make_batches(ds[:6], ds.species, cutoff=4.0, batch_size=4, targets=("energy", "forces"))[0]
    assert atoms.cell is None and atoms.fragment_charges.shape == (4, 2)


# --------------------------------------------------------------------------------------
# bundled point charges
# --------------------------------------------------------------------------------------
def test_point_charges_bundle():
    assert data_path("point_charges.xyz.gz").endswith("point_charges.xyz.gz")
    with pytest.raises(FileNotFoundError, match="available"):
        data_path("nope.xyz")
    ds = load_point_charges()
    assert len(ds) == 2000 and ds.species == (11, 17) and ds.periodic is True
    assert ds.available_targets() == ("energy", "forces", "stress", "charges")
    edges = np.array([s.cell[0, 0] for s in ds])
    assert np.all((edges >= 12.0) & (edges <= 20.0)) and edges.min() < 12.5 and edges.max() > 19.5
    for s in ds[::50]:
        assert s.n_atoms == 64 and s.total_charge == 0.0
        assert np.allclose(s.cell, np.eye(3) * s.cell[0, 0])
        q = s.targets["charges"]
        assert np.array_equal(q, np.where(s.numbers == 11, 1.0, -1.0)) and q.sum() == 0 and np.sum(q > 0) == 32
        assert min_image_distance(s.positions, s.cell[0, 0]) >= 2.5
        assert np.allclose(s.positions, np.round(s.positions, 6), rtol=0, atol=1e-12)
        assert np.abs(s.targets["forces"].sum(axis=0)).max() < 1e-4      # Newton's third law
    assert len(load_point_charges(5)) == 5


@pytest.mark.parametrize("index", [0, 1234])
def test_point_charges_energies_match_numpy_ewald(index):
    s = load_point_charges()[index]
    q = s.targets["charges"]
    energy, _, forces, stress = reference.ewald_energy(s.positions, q, s.cell)
    assert abs(float(s.targets["energy"]) - energy) <= 1e-6 * abs(energy)
    assert np.abs(s.targets["forces"] - forces).max() < 1e-5
    assert np.allclose(s.targets["stress"], stress, rtol=0, atol=1e-7)
