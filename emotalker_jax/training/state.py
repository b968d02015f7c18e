"""TrainState, the optimizer, and sharded initialisation.

The state holds only what training changes: the trainable params (UNet, audio encoder,
EIB head), their EMA, the optax state, the step and the rng. Frozen parts (autoencoder,
text encoder) live outside the state and are passed to the step as arguments.

Sharding: the params are created boxed with logical axis names; ``jax.eval_shape`` of the
initialiser gives the abstract boxed state, ``nn.get_partition_spec`` its logical specs and
the config's rules turn those into NamedShardings (``abstract_state_and_shardings``).
The real state is then created by ``jax.jit(init, out_shardings=...)`` directly in place.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flax import linen as nn
from flax import struct
import jax
import jax.numpy as jnp
import optax

from emotalker_jax import parallel


class TrainState(struct.PyTreeNode):
  """step () int32; params / ema_params: the trainable tree; opt_state: optax state;
  rng: the key every step splits from (so a resumed run draws the same noise)."""

  step: jax.Array
  params: Any
  ema_params: Any
  opt_state: Any
  rng: jax.Array
  tx: optax.GradientTransformation = struct.field(pytree_node=False)

  def apply_gradients(self, grads, ema_decay: float) -> TrainState:
    updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
    params = optax.apply_updates(self.params, updates)
    # EMA with warm-up (decay ramps from 0) so early samples are not the init.
    d = jnp.minimum(ema_decay, (1.0 + self.step) / (10.0 + self.step))
    ema = jax.tree.map(lambda e, p: d * e + (1.0 - d) * p, self.ema_params, params)
    return self.replace(step=self.step + 1, params=params, ema_params=ema, opt_state=opt_state)


def learning_rate_schedule(train_config) -> optax.Schedule:
  """Linear warm-up to ``lr`` then cosine decay to 1% of it over ``steps``."""
  steps = max(int(train_config.steps), int(train_config.warmup_steps) + 1)
  return optax.warmup_cosine_decay_schedule(
    0.0,
    float(train_config.lr),
    int(train_config.warmup_steps),
    steps,
    end_value=0.01 * float(train_config.lr),
  )


def make_optimizer(train_config) -> optax.GradientTransformation:
  """Global-norm clipping, then AdamW; no weight decay on biases, norms and embeddings
  of rank < 2."""

  def decay_mask(params):
    return jax.tree.map(lambda p: p.ndim >= 2, params)

  return optax.chain(
    optax.clip_by_global_norm(float(train_config.grad_clip)),
    optax.adamw(
      learning_rate_schedule(train_config),
      b1=0.9,
      b2=0.999,
      weight_decay=float(train_config.weight_decay),
      mask=decay_mask,
    ),
  )


def init_state_fn(
  init_params: Callable[[jax.Array], Any],
  tx: optax.GradientTransformation,
) -> Callable[[jax.Array], TrainState]:
  """rng -> boxed TrainState (params still carry their logical-axis boxes)."""

  def init(rng):
    rng_params, rng_state = jax.random.split(rng)
    params = init_params(rng_params)
    return TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      ema_params=jax.tree.map(lambda x: x, params),
      opt_state=tx.init(params),
      rng=rng_state,
      tx=tx,
    )

  return init


def abstract_state_and_shardings(init: Callable[[jax.Array], TrainState], mesh, rules):
  """(abstract unboxed state, its NamedShardings) without allocating anything."""
  boxed = jax.eval_shape(init, jax.random.key(0))
  shardings = parallel.logical_shardings(boxed, mesh, rules)
  abstract = nn.meta.unbox(boxed)
  return abstract, parallel.fit_shardings(abstract, shardings)


def create_sharded_state(init, rng, mesh, rules):
  """Initialises the state directly into its shardings. Returns (state, shardings)."""
  abstract, shardings = abstract_state_and_shardings(init, mesh, rules)
  # No logical-rule context here: out_shardings places every param, and flax's
  # DenseGeneral kernel-init reshape cannot carry multi-axis constraints.
  with jax.set_mesh(mesh):
    state = jax.jit(lambda r: nn.meta.unbox(init(r)), out_shardings=shardings)(rng)
  return state, shardings


def param_count(params) -> int:
  return sum(int(x.size) for x in jax.tree.leaves(params))


__all__ = [
  "TrainState",
  "make_optimizer",
  "learning_rate_schedule",
  "init_state_fn",
  "abstract_state_and_shardings",
  "create_sharded_state",
  "param_count",
]
