"""Fine-tuning the EIB's top text-tower layers with its head (``config.eib.finetune_layers``).

With K = ``finetune_layers`` > 0 and a BERT tower of N layers (MiniLM: N = 6):

1. the hidden states entering layer N - K are computed once for every FED prompt (the
   bottom N - K layers stay frozen, so this costs less than today's full-tower cache) and
   kept in length buckets (``LowerCache``: each bucket holds the prompts whose token count
   rounds up to the same multiple of 8, float16, at that length, not at max_length);
2. the top K layers and the intensity head train together with optax AdamW: warmup +
   cosine decay, the head at ``eib.lr`` and tower layer i at ``eib.tower_lr *
   eib.layer_decay ** (N - 1 - i)`` (layer-wise decay: the lower, the gentler); each step
   draws one bucket (with probability its share of the prompts) and a batch from it, so a
   step runs at that bucket's real length;
3. prediction runs the same top layers on the cached states (``predict_tower``), so the
   figures eib-train reports are those of ``load_eib(DIR)``, which runs the exported
   tower (``text_encoder.export_text_encoder``) in full.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from emotalker_jax.models.eib import TOKEN_POOL, eib_loss, pool_features
from emotalker_jax.models.text_encoder import bert_lower_states, bert_upper_states

BUCKET = 8  # token counts are rounded up to a multiple of this


def tower_start(encoder, k: int) -> int:
  """The first fine-tuned layer, N - k, for ``config.eib.finetune_layers=k``; ValueError
  for a CLIP tower or k outside [0, N]."""
  if encoder.family != "bert":
    raise ValueError(
      f"config.eib.finetune_layers={k} needs a BERT/MiniLM text tower, not {encoder.kind!r}; "
      "set config.eib.finetune_layers=0 for a CLIP tower"
    )
  n = encoder.config.num_hidden_layers
  if not 0 <= k <= n:
    raise ValueError(f"config.eib.finetune_layers={k} must be in [0, {n}] (the tower's layers)")
  return n - k


@dataclasses.dataclass
class LowerCache:
  """Hidden states entering layer ``start`` for N prompts, in length buckets.

  buckets: [(rows (n_b,) int positions in the prompt list, states (n_b, L_b, D) float16
  or bfloat16 (ml_dtypes), mask (n_b, L_b) int32)], L_b a multiple of BUCKET.
  """

  buckets: list
  size: int
  start: int

  def nbytes(self) -> int:
    return sum(s.nbytes for _, s, _ in self.buckets)


def encode_lower(encoder, prompts, start: int, batch_size: int = 256, progress=None, dtype=None):
  """LowerCache of ``prompts``: the frozen bottom ``start`` layers run once per prompt, in
  batches of ``batch_size`` padded rows at the bucket's length. dtype: storage dtype
  (default float16; bfloat16 keeps float32's range at 3 significant digits)."""
  dtype = np.float16 if dtype is None else dtype
  cfg = encoder.config

  @jax.jit
  def fn(params, ids, mask):
    return bert_lower_states(cfg, params, ids, mask, start).astype(dtype)

  tok = encoder.tokenize(list(prompts))
  lens = tok["attention_mask"].sum(axis=1)
  keys = np.minimum(encoder.max_length, -(-np.maximum(lens, 1) // BUCKET) * BUCKET)
  buckets = []
  for length in sorted(set(keys.tolist())):
    rows = np.flatnonzero(keys == length)
    states = np.zeros((len(rows), length, encoder.hidden_size), dtype)
    mask = np.ascontiguousarray(tok["attention_mask"][rows, :length])
    for a in range(0, len(rows), batch_size):
      r = rows[a : a + batch_size]
      ids = np.full((batch_size, length), encoder.pad_id, np.int32)
      m = np.zeros((batch_size, length), np.int32)
      ids[: len(r)] = tok["input_ids"][r, :length]
      m[: len(r)] = tok["attention_mask"][r, :length]
      m[len(r) :, 0] = 1  # filler rows
      states[a : a + len(r)] = np.asarray(fn(encoder.params, ids, m))[: len(r)]
      if progress is not None:
        progress(len(r))
    buckets.append((rows, states, mask))
  return LowerCache(buckets, len(prompts), start)


def tower_params(encoder, start: int) -> dict:
  """The fine-tuned part of the encoder's params: {'layer_i': ...} for i >= start."""
  n = encoder.config.num_hidden_layers
  return {f"layer_{i}": encoder.params[f"layer_{i}"] for i in range(start, n)}


def merged_params(encoder, tower: dict) -> dict:
  """The encoder's full params with the fine-tuned layers of ``tower`` swapped in."""
  return {**encoder.params, **jax.tree.map(jnp.asarray, tower)}


def _logits(head, pool: str, cfg, start: int, params, x, mask, deterministic=True, rngs=None):
  h = bert_upper_states(cfg, params["tower"], x.astype(jnp.float32), mask, start)
  feats = (h, mask) if pool == TOKEN_POOL else (pool_features(h, mask, pool),)
  return head.apply({"params": params["head"]}, *feats, deterministic=deterministic, rngs=rngs)


def _lr_factors(params: dict, n_layers: int, lr: float, tower_lr: float, decay: float):
  """Per-leaf multipliers of the schedule: head 1, tower layer i
  tower_lr / lr * decay ** (N - 1 - i)."""
  tower = {}
  for k, v in params["tower"].items():
    f = tower_lr / lr * decay ** (n_layers - 1 - int(k.split("_")[1]))
    tower[k] = jax.tree.map(lambda _, f=f: f, v)
  return {"tower": tower, "head": jax.tree.map(lambda _: 1.0, params["head"])}


def _scale_leaves(factors) -> optax.GradientTransformation:
  def update(updates, state, params=None):
    return jax.tree.map(lambda u, f: u * f, updates, factors), state

  return optax.GradientTransformation(lambda _: optax.EmptyState(), update)


def train_tower_head(
  cache: LowerCache,
  targets,
  encoder,
  head,
  *,
  pool: str,
  steps: int,
  batch_size: int,
  lr: float,
  tower_lr: float,
  layer_decay: float,
  weight_decay: float,
  warmup: int,
  ce_weight: float,
  seed: int = 0,
  progress=None,
):
  """Trains the top layers (from ``cache.start``) + ``head`` on (cache, targets (N, 8)).

  Returns (tower params {'layer_i': ...}, head params, losses [(step, loss)]).
  """
  if steps < 1:
    raise ValueError(f"--steps must be >= 1, got {steps}")
  cfg, start = encoder.config, cache.start
  rng = np.random.default_rng(seed)
  key = jax.random.key(seed)
  key, init_key = jax.random.split(key)
  rows0, s0, m0 = cache.buckets[0]
  x0 = jnp.asarray(s0[:1], jnp.float32)
  mk0 = jnp.asarray(m0[:1])
  feats0 = (x0, mk0) if pool == TOKEN_POOL else (pool_features(x0, mk0, pool),)
  head_params = dict(nn.unbox(head.init(init_key, *feats0)["params"]))
  params = {"tower": tower_params(encoder, start), "head": head_params}
  sched = optax.warmup_cosine_decay_schedule(
    0.0, lr, min(warmup, max(steps - 1, 1)), max(steps, 2), lr * 0.02
  )
  decay_mask = jax.tree.map(lambda p: p.ndim >= 2, params)
  opt = optax.chain(
    optax.scale_by_adam(),
    optax.add_decayed_weights(weight_decay, decay_mask),
    optax.scale_by_learning_rate(sched),
    _scale_leaves(_lr_factors(params, cfg.num_hidden_layers, lr, tower_lr, layer_decay)),
  )
  opt_state = opt.init(params)
  y_all = np.asarray(targets, np.float32)

  @jax.jit
  def step(params, opt_state, x, mask, y, key):
    def loss_fn(p):
      logits = _logits(head, pool, cfg, start, p, x, mask, False, {"dropout": key})
      return eib_loss(logits, y, ce_weight)

    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss, aux["mae"]

  share = np.array([len(r) for r, _, _ in cache.buckets], np.float64)
  share /= share.sum()
  losses = []
  for i in range(steps):
    b = rng.choice(len(share), p=share)
    rows, states, mask = cache.buckets[b]
    pick = rng.integers(0, len(rows), batch_size)
    key, sub = jax.random.split(key)
    params, opt_state, loss, mae = step(
      params, opt_state, states[pick], mask[pick], y_all[rows[pick]], sub
    )
    if progress is not None and (i % 25 == 0 or i == steps - 1):
      loss_f = float(loss)
      losses.append((i, loss_f))
      progress(i, loss_f, float(mae))
  return params["tower"], params["head"], losses


def predict_tower(tower: dict, head_params, cache: LowerCache, encoder, head, pool: str, batch=512):
  """s_hat (N, 8) float32 of the fine-tuned top layers + head on a LowerCache, in the
  cache's prompt order."""
  cfg, start = encoder.config, cache.start
  fn = jax.jit(lambda p, x, m: jax.nn.sigmoid(_logits(head, pool, cfg, start, p, x, m)))
  params = {"tower": tower, "head": head_params}
  out = np.zeros((cache.size, 8), np.float32)
  for rows, states, mask in cache.buckets:
    for a in range(0, len(rows), batch):
      n = min(batch, len(rows) - a)
      b = min(batch, max(8, 1 << (n - 1).bit_length()))  # a few compiled shapes
      x = np.zeros((b,) + states.shape[1:], states.dtype)
      m = np.zeros((b, states.shape[1]), np.int32)
      x[:n], m[:n] = states[a : a + n], mask[a : a + n]
      m[n:, 0] = 1
      out[rows[a : a + n]] = np.asarray(fn(params, x, m))[:n]
  return out
