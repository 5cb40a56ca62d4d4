"""Per-species neural networks and per-species parameters (flax.linen).

A Behler–Parrinello-style network: every species has its own weights; an atom's output
comes from the network of its species.  Padding atoms (species −1) get exactly zero.
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["SpeciesMLP", "species_parameter", "Standardize", "ACTIVATIONS"]

ACTIVATIONS = {"silu": jax.nn.silu, "tanh": jnp.tanh, "softplus": jax.nn.softplus, "gelu": jax.nn.gelu}


class SpeciesMLP(nn.Module):
    """Multi-layer perceptron with separate weights per species.

    Attributes:
      n_species: S.  hidden: widths of the hidden layers (``()`` gives a linear model).
      n_out: outputs per atom.  activation: a key of :data:`ACTIVATIONS`.
      out_scale: initial scale of the last layer's weights (0 starts at the bias).

    Call ``(features (N, D), species (N,) int) → (N, n_out)``; rows with species −1 are 0.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> net = SpeciesMLP(n_species=2, hidden=(8,), n_out=1)
      >>> x, s = jnp.ones((3, 4)), jnp.array([0, 1, -1])
      >>> v = net.init(jax.random.PRNGKey(0), x, s)
      >>> net.apply(v, x, s).shape
      (3, 1)
    """

    n_species: int
    hidden: Sequence[int] = (64, 64)
    n_out: int = 1
    activation: str = "silu"
    out_scale: float = 1.0

    @nn.compact
    def __call__(self, features, species):
        act = ACTIVATIONS[self.activation]
        onehot = (species[:, None] == jnp.arange(self.n_species)).astype(features.dtype)   # (N, S)
        x = features
        widths = tuple(self.hidden) + (self.n_out,)
        for k, width in enumerate(widths):
            d_in = x.shape[-1]
            last = k == len(widths) - 1
            scale = (self.out_scale if last else 1.0) / math.sqrt(max(d_in, 1))

            def init_w(key, shape, dtype=jnp.float32, scale=scale):
                return scale * jax.random.normal(key, shape, dtype)

            w = self.param(f"w{k}", init_w, (self.n_species, d_in, width), features.dtype)
            b = self.param(f"b{k}", nn.initializers.zeros, (self.n_species, width), features.dtype)
            # every species' layer on every atom, then the atom's own: cheap for a few species
            # and free of gathers of weight matrices
            y = jnp.einsum("nd,sdh->nsh", x, w) + b[None]
            x = jnp.einsum("nsh,ns->nh", y, onehot)
            if not last:
                x = act(x)
        return x * jnp.any(onehot > 0, axis=1, keepdims=True).astype(x.dtype)


def species_parameter(module: nn.Module, name: str, n_species: int, value: float, dtype, *, positive=True):
    """A learnable per-species scalar (S,), softplus-parametrised when ``positive``.

    Initialised to ``value`` for every species; returns the constrained values.
    """
    if positive:
        raw0 = math.log(math.expm1(value))
        raw = module.param(name, lambda k, s: jnp.full(s, raw0, dtype), (n_species,))
        return jax.nn.softplus(raw)
    return module.param(name, lambda k, s: jnp.full(s, value, dtype), (n_species,))


class Standardize(nn.Module):
    """Feature standardisation with statistics held in the ``"stats"`` collection.

    The statistics start at mean 0, scale 1 and are set from data by
    :meth:`jaxlr.models.Potential.init` (they are not trained).

    Call ``(features (N, D)) → (features − mean) / scale``.
    """

    @nn.compact
    def __call__(self, x):
        mean = self.variable("stats", "mean", lambda: jnp.zeros(x.shape[-1], x.dtype))
        scale = self.variable("stats", "scale", lambda: jnp.ones(x.shape[-1], x.dtype))
        return (x - mean.value) / scale.value
