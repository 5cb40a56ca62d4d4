"""jaxlr models (flax.linen) and the :class:`Potential` that lifts them to padded batches.

Five models share one input (:class:`AtomsBatch`) and one output (:class:`ModelOutput`):
``"local"``, ``"lode"`` (multi-scale LODE; linear variant by :func:`fit_ridge`),
``"latent"`` (latent charges + Coulomb), ``"qeq"`` (charge equilibration inside the
model) and ``"density"`` (multipolar density coefficients).  :func:`polarizability` gives the static
polarisability ∂μ/∂F of the Qeq and density models (:func:`polarizability_volume` in Å³ or
bohr³).  Every model takes ``repulsion=True`` for a fixed ZBL core-repulsion prior
(:func:`zbl_pair_energy`, :func:`repulsion_energies`).
"""

from ._descriptors import LocalSpec, LodeSpec, local_invariants, multiscale_invariants
from ._electrostatics import CoulombSpec
from ._energy_models import MODELS, DensityModel, LatentChargeModel, LocalModel, LodeModel, QeqModel
from ._nets import SpeciesMLP
from ._output import ModelOutput
from ._potential import Potential, build_potential
from ._repulsion import repulsion_energies, repulsion_radii, zbl_pair_energy
from ._response import polarizability, polarizability_volume

__all__ = [
    "CoulombSpec",
    "DensityModel",
    "LatentChargeModel",
    "LocalModel",
    "LocalSpec",
    "LodeModel",
    "LodeSpec",
    "MODELS",
    "ModelOutput",
    "Potential",
    "QeqModel",
    "SpeciesMLP",
    "build_potential",
    "local_invariants",
    "multiscale_invariants",
    "polarizability",
    "polarizability_volume",
    "repulsion_energies",
    "repulsion_radii",
    "zbl_pair_energy",
]
