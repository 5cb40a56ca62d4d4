"""The exact PBE electrostatic potential on the Merz–Kollman shells of water clusters of the
bundled set (by default its test split), for scoring density and charge models against it.

Run (resumable, deterministic; one process, single-threaded; PySCF needed)::

    OMP_NUM_THREADS=1 python -m jaxlr.data.generate.water_esp {label,assemble,all} \\
        --out runs/esp [--split {test,valid,pool} | --ids ID,ID,...] [--seed 0] [--dest FILE]

The structures are those of :func:`jaxlr.data.water_cluster_splits` (``seed``, split
``test`` by default: 50 clusters) or the ``--ids`` given (``structure_id`` of
:func:`jaxlr.data.load_water_clusters`), with the positions exactly as bundled (the
positions the reference labels were computed from).  The label stage writes one shard per
structure, ``OUT/labels/esp/STRUCTURE_ID.npz``, to a temporary name renamed when complete, so a
killed run resumes where it stopped when the same command is rerun; every structure logs a
line with its count, time and an estimate of the time left.  A structure whose SCF does not
converge (also with the level shift) gets a ``.dropped.json`` marker and is logged.

Label (the data set's level, through :mod:`jaxlr.data.generate.water_clusters`' own functions)
--------------------------------------------------------------------------------------------------
``build_mol`` and ``run_scf``: RKS PBE/def2-SVP, density fitted with def2-universal-jkfit,
grid level 3, ``conv_tol = 1e-9`` (retry with a 0.2 Ha level shift).  Then

* ``points`` (M, 3), Å: ``mk_points`` — shells at 1.4, 1.6, 1.8, 2.0 × the Merz–Kollman
  radius (H 1.2 Å, O 1.4 Å), ≈1 point/Å², points inside any atom's scaled sphere removed:
  the very points of the data set's ``esp_rmse``, stored unrounded (float64);
* ``esp`` (M,), Hartree/e (atomic units of potential; × 27.211386 for V):
  ``exact_potential`` — point nuclei plus the SCF electron density through PySCF's
  ``int1e_grids`` contracted with the density matrix;
* ``energy_hartree`` of this SCF and its ``dipole`` (e·Å, about the origin);
* the checks, recorded per structure: ``energy_diff_hartree`` (this SCF's energy minus the
  data set's ``energy_hartree``); ``esp_rmse_refit`` (mHa/e: the RMS of the potential of the
  density fitted anew to this SCF by ``fit_density`` minus ``esp``, the data set's own
  procedure) and ``esp_rmse_refit_diff`` (that minus the data set's ``esp_rmse``);
  ``esp_rmse_fit`` and ``esp_rmse_diff``: the same for the data set's stored
  ``coefficients``; ``coefficients_diff`` (the largest |new − stored| coefficient);
  ``dipole_diff`` (e·Å, the largest component of this dipole minus the stored one).

Measured on the 50 test clusters: the energies and dipoles reproduce exactly (difference 0),
the refitted ESP error reproduces the stored ``esp_rmse`` exactly (0), the stored
coefficients differ from the refit by ≤ 5e-9 — they are written with 8 decimals in the
extended-XYZ file — and that rounding moves their ESP error by ~1e-7 mHa/e.

Assemble
--------
Asserts every check — |ΔE| ≤ :data:`ENERGY_TOL` Ha, refit |Δ esp_rmse| ≤ :data:`ESP_RMSE_TOL`
mHa/e, |Δμ| ≤ :data:`DIPOLE_TOL` e·Å, and for the rounded stored coefficients
|Δc| ≤ :data:`COEFFICIENT_TOL` and |Δ esp_rmse| ≤ :data:`ESP_RMSE_STORED_TOL` mHa/e; a
RuntimeError lists the structures that fail — and writes one ``.npz`` (loaded by
:func:`jaxlr.data.load_water_esp`; ``numpy.load`` without pickles):

* ``structure_id`` (S,) str; ``offsets`` (S + 1,) int: structure k owns rows
  ``offsets[k]:offsets[k + 1]`` of
* ``points`` (P, 3) Å and ``esp`` (P,) Hartree/e;
* per structure (S,): ``energy_hartree``, ``dipole`` (S, 3) e·Å, ``esp_rmse_fit``,
  ``esp_rmse_refit`` mHa/e, and the checks ``energy_diff_hartree``, ``esp_rmse_diff``,
  ``esp_rmse_refit_diff``, ``coefficients_diff``, ``dipole_diff``;
* ``provenance``: a JSON string — level, basis, auxbasis, grid level, conv_tol, package
  versions, the split and its seed, the SHA-256 of the source data file, the units, the
  tolerances of the checks, the dropped structures.

Cost: one SCF and one density fit per structure (no gradient), ≈ 1–40 core-s for n = 1–7.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import io
import json
import sys
import time
from pathlib import Path

import numpy as np

from . import water_clusters as wc
from ._shards import atomic_write_bytes, label_and_store, label_dir, label_stage, labelled, log, timed

HARTREE_EV = wc.HARTREE_EV
BOHR = wc.BOHR

#: the source data set, its split function's splits
SOURCE = "water_clusters.extxyz.gz"
SPLITS = ("test", "valid", "pool")

#: assembly checks: the SCF energy (Ha), the ESP error (mHa/e) of the density fitted anew and
#: the dipole (e·Å) must reproduce the data set's stored values to these tolerances
ENERGY_TOL = 1e-7
ESP_RMSE_TOL = 1e-6
DIPOLE_TOL = 1e-6
#: the bundled coefficients are written with 8 decimals (extended XYZ), so the new fit differs
#: from them by ≤ 5e-9 and their ESP error from the stored one by ~1e-7 mHa/e (at most 4.0e-7
#: on the 50 test clusters; random perturbations of ±5e-9 moved it by up to 1.1e-6 on a
#: dimer): these two checks allow for that rounding
COEFFICIENT_TOL = 5.000001e-9
ESP_RMSE_STORED_TOL = 1e-5

SYMBOL_OF = {z: el for el, z in wc.Z_OF.items()}


# ======================================================================================
# which structures
# ======================================================================================
def select(split: str | None = "test", seed: int = 0, ids=None) -> list:
    """The bundled structures to label: a split of ``water_cluster_splits(seed=seed)`` or ``ids``.

    Args:
      split: ``"test"``, ``"valid"`` or ``"pool"`` (ignored when ``ids`` are given).
      seed: the split's seed.
      ids: ``structure_id`` values of :func:`jaxlr.data.load_water_clusters`, in the order wanted.

    Returns:
      list of :class:`jaxlr.data.Structure` (positions as bundled).

    Raises:
      ValueError: for an unknown split or id.

    Example:
      >>> [s.info["structure_id"] for s in select(ids=["water_clusters-n01-t0000-s00"])]
      ['water_clusters-n01-t0000-s00']
      >>> len(select("test"))
      50
    """
    from .. import load_water_clusters, water_cluster_splits

    if ids is not None:
        by_id = {s.info["structure_id"]: s for s in load_water_clusters()}
        unknown = [i for i in ids if i not in by_id]
        if unknown:
            raise ValueError(f"unknown structure_id(s) {unknown[:5]}; they look like 'water_clusters-n01-t0000-s00'.")
        return [by_id[i] for i in ids]
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose from {SPLITS} or pass ids.")
    pool, valid, test = water_cluster_splits(seed=seed)
    return list({"test": test, "valid": valid, "pool": pool}[split])


def symbols_of(structure) -> list[str]:
    """Element symbols of a water-cluster structure (H and O only).

    Example:
      >>> symbols_of(select(ids=["water_clusters-n01-t0000-s00"])[0])
      ['O', 'H', 'H']
    """
    return [SYMBOL_OF[int(z)] for z in structure.numbers]


# ======================================================================================
# label
# ======================================================================================
def label_structure(symbols, positions, coefficients=None) -> dict | None:
    """The exact potential on the MK points of one structure (units of the header); None if
    the SCF does not converge.

    ``coefficients`` (N, 10): the data set's reference density, whose potential error on the
    same points is returned as ``esp_rmse_fit`` (mHa/e; NaN without coefficients), and whose
    largest difference from the density fitted anew to this SCF as ``coefficients_diff``;
    ``esp_rmse_refit`` is the new fit's error (mHa/e).
    """
    symbols = list(symbols)
    positions = np.asarray(positions, dtype=float)
    mol = wc.build_mol(symbols, positions)
    timings = {}
    with timed(timings, "scf"):
        mf = wc.run_scf(mol)
    if mf is None:
        return None
    with timed(timings, "esp"):
        dm = mf.make_rdm1()
        pts = wc.mk_points(symbols, positions)
        esp = wc.exact_potential(mol, dm, pts)
        dipole_au = np.asarray(mf.dip_moment(mol, dm, unit="AU", origin=(0.0, 0.0, 0.0), verbose=0))
        refit, _ = wc.fit_density(mol, dm, dipole_au)

    def rmse(coef):
        v_fit = wc.fitted_potential(symbols, positions, np.asarray(coef, dtype=float), pts) * BOHR   # e/Å → Ha/e
        return 1000.0 * float(np.sqrt(np.mean((v_fit - esp) ** 2)))

    nan = float("nan")
    return {"points": pts, "esp": esp, "energy_hartree": float(mf.e_tot), "dipole": dipole_au * BOHR,
            "esp_rmse_fit": nan if coefficients is None else rmse(coefficients), "esp_rmse_refit": rmse(refit),
            "coefficients_diff": nan if coefficients is None else float(np.abs(refit - coefficients).max()),
            "scf_cycles": int(getattr(mf, "cycles", -1)), "level_shifted": bool(mf.level_shift),
            "timings": timings}


#: the label shards are OUT/labels/SHARDS/STRUCTURE_ID.npz
SHARDS = "esp"


def _labels_with_checks(structure) -> dict | None:
    res = label_structure(symbols_of(structure), structure.positions, structure.targets["coefficients"])
    if res is not None:
        res["structure_id"] = structure.info["structure_id"]
        res["energy_diff_hartree"] = res["energy_hartree"] - float(structure.info["energy_hartree"])
        res["esp_rmse_diff"] = res["esp_rmse_fit"] - float(structure.info["esp_rmse"])
        res["esp_rmse_refit_diff"] = res["esp_rmse_refit"] - float(structure.info["esp_rmse"])
        res["dipole_diff"] = float(np.abs(res["dipole"] - np.asarray(structure.targets["dipole"])).max())
    return res


def label_one(out: Path, structure) -> str:
    """Label one bundled structure, store its shard (or drop it) and return a progress note."""
    sid = structure.info["structure_id"]
    res, timings, wall = label_and_store(label_dir(out, SHARDS), sid, functools.partial(_labels_with_checks, structure),
                                         f"SCF not converged, also with level shift {wc.LEVEL_SHIFT} Ha",
                                         n_atoms=structure.n_atoms)
    if res is None:
        return f"{sid}: DROPPED (SCF not converged) after {wall:.1f} s"
    return (f"{sid}: {wall:.1f} s (scf {timings['scf']:.1f} s, {res['scf_cycles']} cycles), {len(res['esp'])} "
            f"points, dE {res['energy_diff_hartree']:.1e} Ha, fit esp_rmse {res['esp_rmse_fit']:.6f} mHa/e "
            f"(diff {res['esp_rmse_diff']:.1e}, refit {res['esp_rmse_refit_diff']:.1e}, coefficients "
            f"{res['coefficients_diff']:.1e}), dmu {res['dipole_diff']:.1e} e*A")


def run_label(out: Path, structures, seed: int = 0) -> None:
    """Label every structure without a shard or a dropped marker (resumable), a progress line each."""
    label_stage(structures, label_dir(out, SHARDS), "esp", functools.partial(label_one, Path(out)),
                order_seed=[seed, 5, 999], cost=lambda s: s.n_atoms ** 2)


# ======================================================================================
# assemble
# ======================================================================================
def provenance(split: str | None, seed: int, ids) -> dict:
    """What the assembled file records about how it was made (see the module docstring).

    Example:
      >>> p = provenance("test", 0, None)
      >>> p["level"], p["basis"], p["split"], p["split_seed"], len(p["source_sha256"])
      ('PBE', 'def2-svp', 'test', 0, 64)
    """
    from .. import data_path

    info = {"level": wc.LEVEL, "basis": wc.BASIS, "auxbasis": wc.AUXBASIS, "grid_level": wc.GRID_LEVEL,
            "conv_tol": wc.CONV_TOL, "scf": "RKS, density fitted; retry with level shift 0.2 Ha",
            "source": SOURCE, "source_sha256": hashlib.sha256(Path(data_path(SOURCE)).read_bytes()).hexdigest(),
            "selection": (f"jaxlr.data.water_cluster_splits(seed={seed}) {split} split" if ids is None
                          else "structure ids"), "split": split if ids is None else None, "split_seed": seed,
            "points": "Merz-Kollman shells 1.4, 1.6, 1.8, 2.0 x vdW radius (H 1.2, O 1.4 A), ~1 point/A^2",
            "units": {"points": "A", "esp": "Hartree/e", "energy_hartree": "Hartree", "dipole": "e*A",
                      "esp_rmse_fit": "mHa/e", "esp_rmse_refit": "mHa/e", "coefficients_diff": "e or e*A"},
            "checks": {"energy_diff_hartree": ENERGY_TOL, "esp_rmse_refit_diff_mHa_e": ESP_RMSE_TOL,
                       "esp_rmse_diff_mHa_e": ESP_RMSE_STORED_TOL, "coefficients_diff": COEFFICIENT_TOL,
                       "dipole_diff_eA": DIPOLE_TOL},
            "generator": "python -m jaxlr.data.generate.water_esp", "hartree_eV": HARTREE_EV, "bohr_A": BOHR}
    info.update({f"{k}_version": v for k, v in wc.package_versions().items()})
    return info


def assemble(out: Path, structures, prov: dict) -> dict:
    """The arrays of the assembled file; RuntimeError if a structure lacks its shard or fails a check."""
    pairs = labelled(structures, label_dir(out, SHARDS), "esp")
    shards = [z for _, z in pairs]
    have = {s.info["structure_id"] for s, _ in pairs}
    dropped = [s.info["structure_id"] for s in structures if s.info["structure_id"] not in have]
    if dropped:
        log(f"assemble: {len(dropped)} structures dropped (SCF not converged): {dropped}")
    checks = {"energy_diff_hartree": ENERGY_TOL, "esp_rmse_refit_diff": ESP_RMSE_TOL,
              "esp_rmse_diff": ESP_RMSE_STORED_TOL, "coefficients_diff": COEFFICIENT_TOL, "dipole_diff": DIPOLE_TOL}
    bad = [(str(z["structure_id"]), {k: float(z[k]) for k in checks}) for z in shards
           if not all(abs(float(z[k])) <= tol for k, tol in checks.items())]
    if bad:
        raise RuntimeError(f"{len(bad)} structures do not reproduce the data set (tolerances {checks}): {bad[:3]}")
    sizes = [len(z["esp"]) for z in shards]
    arrays = {
        "structure_id": np.array([str(z["structure_id"]) for z in shards]),
        "offsets": np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
        "points": np.concatenate([z["points"] for z in shards]).reshape(-1, 3),
        "esp": np.concatenate([z["esp"] for z in shards]),
        "provenance": np.array(json.dumps(prov | {"dropped": dropped}, sort_keys=True)),
    }
    for key in ("energy_hartree", "esp_rmse_fit", "esp_rmse_refit", *checks):
        arrays[key] = np.array([float(z[key]) for z in shards])
    arrays["dipole"] = np.array([z["dipole"] for z in shards]).reshape(-1, 3)
    return arrays


def run_assemble(out: Path, structures, prov: dict, dest: Path | None = None) -> Path:
    """Write the assembled ``.npz`` atomically and return its path."""
    arrays = assemble(out, structures, prov)
    dest = Path(dest) if dest is not None else Path(out) / "water_clusters_esp.npz"
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(dest, buf.getvalue())
    worst = {k: float(np.abs(arrays[k]).max()) for k in ("energy_diff_hartree", "esp_rmse_diff", "esp_rmse_refit_diff",
                                                          "coefficients_diff", "dipole_diff")}
    log(f"assemble: {len(arrays['structure_id'])} structures, {len(arrays['esp'])} points -> {dest} "
         f"({dest.stat().st_size / 1024:.0f} KiB); largest deviations {worst}")
    return dest


# ======================================================================================
# command line
# ======================================================================================
def main(argv=None) -> int:
    """Command line (see the module docstring); returns the exit status."""
    p = argparse.ArgumentParser(prog="python -m jaxlr.data.generate.water_esp",
                                description="Exact PBE potential on the MK shells of water clusters "
                                            "(see the module docstring).")
    p.add_argument("stage", choices=("label", "assemble", "all"))
    p.add_argument("--out", type=Path, default=Path("runs/esp"), help="directory of the resumable shards")
    p.add_argument("--split", choices=SPLITS, default="test")
    p.add_argument("--ids", default=None, help="comma-separated structure ids instead of a split")
    p.add_argument("--seed", type=int, default=0, help="seed of water_cluster_splits")
    p.add_argument("--dest", type=Path, default=None, help="assembled file (default OUT/water_clusters_esp.npz)")
    a = p.parse_args(argv)
    ids = [i.strip() for i in a.ids.split(",") if i.strip()] if a.ids else None
    structures = select(a.split, a.seed, ids)
    t0 = time.perf_counter()
    if a.stage in ("label", "all"):
        run_label(a.out, structures, a.seed)
    if a.stage in ("assemble", "all"):
        run_assemble(a.out, structures, provenance(a.split, a.seed, ids), a.dest)
    log(f"{a.stage}: done in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
