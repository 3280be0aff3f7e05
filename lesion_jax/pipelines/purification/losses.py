"""The inpainter's loss (Liu et al. 2018, Eq. 7): L1 on the valid and the hole pixels, total
variation around the holes, perceptual and style terms on a fixed feature network; one value
per example and term (`loss_per_example`), weighted by `InpaintingLossWeights`."""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lesion_jax import config as config_lib


@dataclasses.dataclass(frozen=True)
class InpaintingLossWeights:
  """Weights of the inpainting loss terms (Liu et al. 2018, Eq. 7; see loss_per_example)."""
  valid: float = config_lib.field(1.0, "Weight of the L1 loss on the valid pixels.")
  hole: float = config_lib.field(6.0, "Weight of the L1 loss on the hole pixels.")
  tv: float = config_lib.field(0.1, "Weight of the total variation of the composite around the holes.")
  perceptual: float = config_lib.field(0.05, "Weight of the perceptual loss (needs a feature network).")
  style: float = config_lib.field(120.0, "Weight of each of the two style losses, output and composite "
                                  "(needs a feature network).")


def _gram(features: jax.Array) -> jax.Array:
  """K_p Ψ^T Ψ of (N, h, w, c) features: (N, c, c), K_p = 1 / (c·h·w)."""
  n, h, w, c = features.shape
  flat = features.reshape(n, h * w, c).astype(jnp.float32)
  return jnp.einsum("npc,npd->ncd", flat, flat, precision=jax.lax.Precision.HIGHEST) / (c * h * w)


def hole_region_dilated(mask: jax.Array) -> jax.Array:
  """P of the TV loss, (N, H, W, 1): the hole pixels (any channel of `mask` 0) dilated by one pixel
  with a 3x3 square (a pixel is in P when it or one of its 8 neighbours is a hole)."""
  hole = (jnp.min(mask, axis=-1, keepdims=True) < 0.5).astype(jnp.float32)
  _, h, w, _ = hole.shape
  padded = jnp.pad(hole, ((0, 0), (1, 1), (1, 1), (0, 0)))
  return functools.reduce(jnp.maximum, [padded[:, i:i + h, j:j + w] for i in range(3) for j in range(3)])


def loss_per_example(output: jax.Array, target: jax.Array, mask: jax.Array,
                     feature_fn: Callable[[jax.Array], Sequence[jax.Array]] | None = None,
                     weights: InpaintingLossWeights = InpaintingLossWeights()) -> dict[str, jax.Array]:
  """The loss of Liu et al. 2018 for (N, H, W, C) `output` against `target`; (N,) per term.

  `mask` is (N, H, W, 1) or (N, H, W, C), 1 = valid, 0 = hole. With I_comp = (1-M)⊙I_out + M⊙I_gt
  and N = C·H·W (the paper's N_{I_gt} = N_{I_comp}), the terms are:
    valid = ||M ⊙ (I_out - I_gt)||_1 / N, hole = ||(1-M) ⊙ (I_out - I_gt)||_1 / N;
    tv = Σ ||I_comp(i, j+1) - I_comp(i, j)||_1 over pairs with both pixels in P, plus the same for
      (i+1, j), divided by N (P: `hole_region_dilated`; the L1 sums over channels);
    perceptual = Σ_p ||Ψp(I_out) - Ψp(I_gt)||_1 / N_Ψp + ||Ψp(I_comp) - Ψp(I_gt)||_1 / N_Ψp, with
      N_Ψp = h_p·w_p·c_p the elements of one example's layer p;
    style_out = Σ_p ||K_p (Ψp(I_out)^T Ψp(I_out) - Ψp(I_gt)^T Ψp(I_gt))||_1 / c_p², with Ψp as a
      (h_p·w_p) x c_p matrix and K_p = 1 / (c_p·h_p·w_p): the mean absolute difference of the
      normalised c_p x c_p Gram matrices (the paper's 1 / (C_p C_p) factor); style_comp the same
      with I_comp;
    total = valid·w.valid + hole·w.hole + tv·w.tv + perceptual·w.perceptual
            + (style_out + style_comp)·w.style.
  `feature_fn(images) -> [(N, h_p, w_p, c_p), ...]` is a fixed network (Ψ), called once on the
  output, composite and target stacked along the batch (so it must treat examples independently,
  e.g. BatchNorm in inference mode). Without it, perceptual and style are 0.
  """
  mask = jnp.broadcast_to(mask.astype(jnp.float32), output.shape)
  output, target = output.astype(jnp.float32), target.astype(jnp.float32)
  n = output.shape[0]
  error = jnp.abs(output - target)
  terms = {"valid": jnp.mean(mask * error, axis=(1, 2, 3)),
           "hole": jnp.mean((1 - mask) * error, axis=(1, 2, 3))}

  comp = (1 - mask) * output + mask * target
  region = hole_region_dilated(mask)
  dx = jnp.abs(comp[:, :, 1:] - comp[:, :, :-1]) * (region[:, :, 1:] * region[:, :, :-1])
  dy = jnp.abs(comp[:, 1:] - comp[:, :-1]) * (region[:, 1:] * region[:, :-1])
  terms["tv"] = (dx.sum(axis=(1, 2, 3)) + dy.sum(axis=(1, 2, 3))) / np.prod(output.shape[1:])

  zeros = jnp.zeros(n, jnp.float32)
  terms.update(perceptual=zeros, style_out=zeros, style_comp=zeros)
  if feature_fn is not None:
    for features in feature_fn(jnp.concatenate([output, comp, jax.lax.stop_gradient(target)])):
      f_out, f_comp, f_gt = jnp.split(features.astype(jnp.float32), 3)
      terms["perceptual"] += (jnp.mean(jnp.abs(f_out - f_gt), axis=(1, 2, 3))
                              + jnp.mean(jnp.abs(f_comp - f_gt), axis=(1, 2, 3)))
      g_out, g_comp, g_gt = _gram(f_out), _gram(f_comp), _gram(f_gt)
      terms["style_out"] += jnp.mean(jnp.abs(g_out - g_gt), axis=(1, 2))
      terms["style_comp"] += jnp.mean(jnp.abs(g_comp - g_gt), axis=(1, 2))

  terms["total"] = (weights.valid * terms["valid"] + weights.hole * terms["hole"] + weights.tv * terms["tv"]
                    + weights.perceptual * terms["perceptual"]
                    + weights.style * (terms["style_out"] + terms["style_comp"]))
  return terms
