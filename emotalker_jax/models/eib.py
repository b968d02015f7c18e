"""The Emotion Intensity Block (EIB): prompt -> per-emotion intensities + emotion tokens.

METHOD.md, model item 3 and equation (3). Inputs are the token states of a text encoder
(frozen, or with its top ``config.eib.finetune_layers`` layers fine-tuned by
`emotalker eib-train` and saved in the EIB folder, see ``load_eib``):

    h: (B, L, D_text) float, mask: (B, L) {0, 1}
    pooled = pool(h, mask)                          (B, P)   masked mean (config.eib.pool)
    s_hat  = sigmoid(MLP(LayerNorm(pooled)))        (B, K)   K = 8 intensities in [0, 1]
      (config.eib.pool='tokens': s_hat = sigmoid(TokenIntensityHead(h, mask)), a head
       that attends over the token states with learned queries; see that class)
    e_k    = s_hat_k * B_k + b_k                    (B, K, C) one token per emotion
    t_j    = attention pooling of h with learned queries q_j      (B, T, C)
    tokens = [e_1 .. e_K ; t_1 .. t_T]              (B, K + T, C), C = config.context_dim

``b`` in METHOD.md is a per-token offset here (b_k), so a token at zero intensity still
says which emotion it stands for. ``from_intensities(s)`` builds the same tokens from an
explicit intensity vector (``--emotion happy=0.7``): the emotion tokens come from s and
the text tokens are a learned "no text" set (T, C), trained whenever the training
pipeline feeds intensities instead of prompts. ``null_tokens`` is the learned token set
(K + T, C) that replaces the whole EIB output for classifier-free guidance;
``apply_null(tokens, null, drop)`` swaps it in under a boolean mask (B,).

Loss (eq. 3): ``L_EIB = mean_b ||s_hat - s||^2 + ce_weight * CE(argmax s, softmax(logits))``;
the CE uses a softmax over the same 8 logits whose sigmoids are s_hat; when several
emotions tie for the maximum the target mass is split equally between them (so "equal
parts X and Y" does not favour the lower index), and rows with s = 0 are left out of CE.

Logical axis names: kernels ("embed", "mlp"), ("mlp", "embed"), ("embed", "heads", "kv"),
("heads", "kv", "embed"); token tables (None, "embed"); LayerNorm ("norm",). The
8-emotion axis is never sharded (None).
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses
import functools
import os
from typing import Any
import warnings

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from emotalker_jax import checkpoints, fed, fed_situations
from emotalker_jax.emotions import EMOTIONS, NUM_EMOTIONS
from emotalker_jax.models import layers
from emotalker_jax.models.text_encoder import load_text_encoder

Dtype = Any
POOLS = ("mean", "mean_max")  # pooled features -> IntensityHead
TOKEN_POOL = "tokens"  # token states -> TokenIntensityHead
ALL_POOLS = POOLS + (TOKEN_POOL,)


# ----------------------------------------------------------------------------------------
# Pooling (shared by the module and the feature cache of `emotalker eib-train`).
# ----------------------------------------------------------------------------------------


def pool_features(hidden: jax.Array, mask: jax.Array, kind: str = "mean") -> jax.Array:
  """Pools token states (B, L, D) over real tokens (mask (B, L) = 1) -> (B, P), float32.

  'mean': masked mean, P = D (the sentence-transformers embedding before L2 norm).
  'mean_max': [masked mean, masked max], P = 2D.
  """
  if kind not in POOLS:
    raise ValueError(
      f"config.eib.pool={kind!r} is not a pooled kind; use one of {POOLS} "
      f"(or {TOKEN_POOL!r}, which reads token states: logits_from_hidden)"
    )
  h = hidden.astype(jnp.float32)
  m = mask.astype(jnp.float32)[..., None]
  mean = jnp.sum(h * m, axis=-2) / jnp.maximum(jnp.sum(m, axis=-2), 1e-9)
  if kind == "mean":
    return mean
  mx = jnp.max(jnp.where(m > 0, h, -1e9), axis=-2)
  return jnp.concatenate([mean, mx], axis=-1)


def pooled_dim(hidden_size: int, kind: str) -> int:
  return hidden_size * (2 if kind == "mean_max" else 1)


# ----------------------------------------------------------------------------------------
# Modules
# ----------------------------------------------------------------------------------------

# eps 1e-5 and flax's one-pass variance: the LayerNorms the EIB heads were trained with.
_layer_norm = functools.partial(layers.layer_norm, 1e-5, fast_variance=True)


class IntensityHead(nn.Module):
  """pooled (B, P) -> intensity logits (B, K); s_hat = sigmoid(logits).

  LayerNorm -> Dense(hidden) -> GELU -> Dense(hidden) -> GELU -> Dense(K), with dropout
  after each GELU when ``dropout > 0`` and ``deterministic`` is False.
  """

  hidden: int = 256
  num_emotions: int = NUM_EMOTIONS
  dropout: float = 0.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, pooled: jax.Array, deterministic: bool = True) -> jax.Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = _layer_norm(name="norm", **kw)(pooled)
    x = nn.gelu(layers.dense(self.hidden, ("embed", "mlp"), name="fc1", **kw)(x))
    x = nn.Dropout(self.dropout)(x, deterministic=deterministic)
    x = nn.gelu(layers.dense(self.hidden, ("mlp", "embed"), name="fc2", **kw)(x))
    x = nn.Dropout(self.dropout)(x, deterministic=deterministic)
    logits = layers.dense(self.num_emotions, ("embed", None), name="out", **kw)(x)
    return logits.astype(jnp.float32)


class TextTokenPool(nn.Module):
  """Attention pooling of h with T learned queries: (B, L, D) + mask -> (B, T, C).

  h is projected to C, T learned queries (T, C) attend over the real tokens with
  ``num_heads`` heads, then an output projection and LayerNorm.
  """

  num_tokens: int
  context_dim: int
  num_heads: int = 4
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, hidden: jax.Array, mask: jax.Array) -> jax.Array:
    c, nh = self.context_dim, self.num_heads
    if c % nh:
      raise ValueError(f"context_dim {c} is not divisible by config.eib.attn_heads {nh}")
    hd = c // nh
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = layers.dense(c, ("embed", "mlp"), name="in_proj", **kw)(hidden)
    x = _layer_norm(name="in_norm", **kw)(x)
    x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
    queries = self.param(
      "queries",
      nn.with_logical_partitioning(nn.initializers.normal(0.02), (None, "embed")),
      (self.num_tokens, c),
      self.param_dtype,
    )
    q = jnp.broadcast_to(queries.astype(self.dtype)[None], (x.shape[0],) + queries.shape)
    y = layers.multi_head_attention(  # (B, T, C)
      q,
      x,
      heads=nh,
      head_dim=hd,
      out_features=c,
      qkv_bias=True,
      mask=mask,
      proj_names=layers.BERT_QKV,
      **kw,
    )
    y = _layer_norm(name="out_norm", **kw)(y)
    return nn.with_logical_constraint(y, ("batch", "length", "embed"))


class TokenIntensityHead(nn.Module):
  """Token-level intensity head: token states h (B, L, D) + mask (B, L) -> logits (B, K).

  The head looks at every token instead of a sentence average, so it can attend to the
  emotion words and ignore the sentence frame:

    x_l   = GELU(Dense_H(LayerNorm(h_l)))                         (B, L, H) per token
    a_l   = [max_j cos(h_l, A_kj)]_k                              (B, L, K) anchor sims
    u_l   = x_l + Dense_H(a_l)            (only when anchors are used, A: (K, N_a, D))
    w_ql  = softmax_l(q_q . Dense(u_l))   over real tokens        (B, Q, L)
    p_q   = sum_l w_ql Dense(u_l)                                 (B, Q, H)
    mean  = masked mean of u_l                                    (B, H)
    amax  = max_l a_l                                             (B, K)
    logits = MLP(LayerNorm([p_1 .. p_Q, mean, amax]))             (B, K)

  The anchors A (``num_anchors`` per emotion) are frozen text-encoder embeddings of the
  emotion names and a few train-split words, written by `emotalker eib-train`
  (``anchor_texts``); gradients never reach them (stop_gradient). ``token_dropout``
  (training only) hides each real token from the pooling with that probability.
  """

  hidden: int = 256
  num_emotions: int = NUM_EMOTIONS
  num_queries: int = 8
  num_anchors: int = 0
  dropout: float = 0.0
  token_dropout: float = 0.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def anchor_sims(self, hidden: jax.Array) -> jax.Array:
    """(B, L, D) -> (B, L, K): per emotion, the largest cosine to its anchors."""
    a = self.param(
      "anchors",
      nn.with_logical_partitioning(nn.initializers.zeros_init(), (None, None, "embed")),
      (self.num_emotions, self.num_anchors, hidden.shape[-1]),
      self.param_dtype,
    )
    a = jax.lax.stop_gradient(a.astype(jnp.float32))
    a = a / jnp.maximum(jnp.linalg.norm(a, axis=-1, keepdims=True), 1e-6)
    h = hidden.astype(jnp.float32)
    h = h / jnp.maximum(jnp.linalg.norm(h, axis=-1, keepdims=True), 1e-6)
    return jnp.max(jnp.einsum("bld,kad->blka", h, a), axis=-1)

  @nn.compact
  def __call__(self, hidden: jax.Array, mask: jax.Array, deterministic: bool = True) -> jax.Array:
    hd, dt, pdt = self.hidden, self.dtype, self.param_dtype
    kw = dict(dtype=dt, param_dtype=pdt)
    m = mask.astype(bool)
    if self.token_dropout > 0 and not deterministic:
      keep = jax.random.bernoulli(self.make_rng("dropout"), 1.0 - self.token_dropout, m.shape)
      keep = keep | (jnp.sum(m & keep, axis=-1, keepdims=True) == 0)  # never drop all
      m = m & keep
    x = _layer_norm(name="norm", **kw)(hidden)
    x = nn.gelu(layers.dense(hd, ("embed", "mlp"), name="token", **kw)(x))  # (B, L, H)
    feats = []
    if self.num_anchors > 0:
      sims = self.anchor_sims(hidden)  # (B, L, K)
      x = x + layers.dense(hd, (None, "mlp"), name="anchor_proj", **kw)(sims.astype(dt))
      feats.append(jnp.max(jnp.where(m[..., None], sims, -1.0), axis=1))  # (B, K)
    mf = m.astype(jnp.float32)[..., None]
    mean = jnp.sum(x.astype(jnp.float32) * mf, axis=1) / jnp.maximum(jnp.sum(mf, axis=1), 1.0)
    keys = layers.dense(hd, ("mlp", "embed"), name="key", **kw)(x)
    vals = layers.dense(hd, ("mlp", "embed"), name="value", **kw)(x)
    queries = self.param(
      "queries",
      nn.with_logical_partitioning(nn.initializers.normal(0.02), (None, "embed")),
      (self.num_queries, hd),
      pdt,
    )
    scores = jnp.einsum("qh,blh->bql", queries.astype(jnp.float32), keys.astype(jnp.float32))
    scores = jnp.where(m[:, None, :], scores / np.sqrt(hd), -1e9)
    w = jax.nn.softmax(scores, axis=-1)
    pooled = jnp.einsum("bql,blh->bqh", w, vals.astype(jnp.float32))  # (B, Q, H)
    z = jnp.concatenate([pooled.reshape(pooled.shape[0], -1), mean] + feats, axis=-1)
    z = _layer_norm(name="pool_norm", **kw)(z.astype(dt))
    z = nn.gelu(layers.dense(hd, ("embed", "mlp"), name="fc1", **kw)(z))
    z = nn.Dropout(self.dropout)(z, deterministic=deterministic)
    logits = layers.dense(self.num_emotions, ("mlp", None), name="out", **kw)(z)
    return logits.astype(jnp.float32)


@flax.struct.dataclass
class EIBOutput:
  tokens: jax.Array  # (B, K + T, C) cross-attention tokens
  intensities: jax.Array  # (B, K) s_hat in [0, 1]
  logits: jax.Array  # (B, K) pre-sigmoid scores (the CE uses their softmax)


class EmotionIntensityBlock(nn.Module):
  """The EIB on top of text-encoder token states. See the module docstring.

  Methods (all with ``module.apply(variables, ..., method=...)``):
    __call__(hidden (B, L, D), mask (B, L)) -> EIBOutput
    intensity_logits(pooled (B, P)) -> (B, K)          the head alone (cached features)
    emotion_tokens(s (B, K)) -> (B, K, C)
    from_intensities(s (B, K)) -> (B, K + T, C)         explicit intensities, no text
    null_tokens(batch: int) -> (B, K + T, C)           the learned CFG null set
  """

  context_dim: int = 64
  hidden: int = 256
  num_text_tokens: int = 4
  num_emotions: int = NUM_EMOTIONS
  attn_heads: int = 4
  pool: str = "mean"
  dropout: float = 0.0
  num_queries: int = 8
  num_anchors: int = 0
  token_dropout: float = 0.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def setup(self):
    k, c, t = self.num_emotions, self.context_dim, self.num_text_tokens
    emb = lambda std: nn.with_logical_partitioning(nn.initializers.normal(std), (None, "embed"))  # noqa: E731
    if self.pool not in ALL_POOLS:
      raise ValueError(f"config.eib.pool={self.pool!r} is unknown; use one of {ALL_POOLS}")
    if self.pool == TOKEN_POOL:
      self.head = TokenIntensityHead(
        self.hidden,
        k,
        self.num_queries,
        self.num_anchors,
        self.dropout,
        self.token_dropout,
        self.dtype,
        self.param_dtype,
      )
    else:
      self.head = IntensityHead(self.hidden, k, self.dropout, self.dtype, self.param_dtype)
    self.basis = self.param("basis", emb(1.0), (k, c), self.param_dtype)  # B_k
    self.offset = self.param("offset", emb(0.02), (k, c), self.param_dtype)  # b_k
    self.null = self.param("null", emb(0.02), (k + t, c), self.param_dtype)
    if t > 0:
      self.text_pool = TextTokenPool(t, c, self.attn_heads, self.dtype, self.param_dtype)
      self.no_text = self.param("no_text", emb(0.02), (t, c), self.param_dtype)

  def intensity_logits(self, pooled: jax.Array, deterministic: bool = True) -> jax.Array:
    """Pooled features (B, P) -> logits (B, K); only for the pooled kinds (POOLS)."""
    if self.pool == TOKEN_POOL:
      raise ValueError("config.eib.pool='tokens' reads token states; use logits_from_hidden")
    return self.head(pooled, deterministic)

  def logits_from_hidden(
    self, hidden: jax.Array, mask: jax.Array, deterministic: bool = True
  ) -> jax.Array:
    """Token states (B, L, D) + mask (B, L) -> intensity logits (B, K), any pool kind."""
    if self.pool == TOKEN_POOL:
      return self.head(hidden, mask, deterministic)
    return self.head(pool_features(hidden, mask, self.pool), deterministic)

  def emotion_tokens(self, s: jax.Array) -> jax.Array:
    """s (B, K) in [0, 1] -> e (B, K, C): e_k = s_k * B_k + b_k."""
    s = s.astype(self.dtype)
    e = s[..., None] * self.basis.astype(self.dtype)[None] + self.offset.astype(self.dtype)[None]
    return nn.with_logical_constraint(e, ("batch", "length", "embed"))

  def __call__(self, hidden: jax.Array, mask: jax.Array, deterministic: bool = True) -> EIBOutput:
    logits = self.logits_from_hidden(hidden, mask, deterministic)
    s_hat = jax.nn.sigmoid(logits)
    tokens = self.emotion_tokens(s_hat)
    if self.num_text_tokens > 0:
      tokens = jnp.concatenate([tokens, self.text_pool(hidden.astype(self.dtype), mask)], axis=1)
    return EIBOutput(tokens=tokens, intensities=s_hat, logits=logits)

  def from_intensities(self, s: jax.Array) -> jax.Array:
    """Tokens (B, K + T, C) from an explicit intensity vector s (B, K) (no prompt)."""
    tokens = self.emotion_tokens(s)
    if self.num_text_tokens > 0:
      no_text = jnp.broadcast_to(
        self.no_text.astype(self.dtype)[None], (s.shape[0],) + self.no_text.shape
      )
      tokens = jnp.concatenate([tokens, no_text], axis=1)
    return tokens

  def null_tokens(self, batch: int) -> jax.Array:
    return jnp.broadcast_to(self.null.astype(self.dtype)[None], (batch,) + self.null.shape)

  def init_all(self, hidden: jax.Array, mask: jax.Array) -> EIBOutput:
    """Touches every parameter (use as ``init(..., method=EmotionIntensityBlock.init_all)``)."""
    out = self(hidden, mask)
    self.from_intensities(out.intensities)
    self.null_tokens(hidden.shape[0])
    return out


class TextEIB(nn.Module):
  """Text encoder + EIB in one module (fine-tuning the encoder with the EIB).

  __call__(input_ids (B, L), attention_mask (B, L)) -> EIBOutput. Params:
  {'text_encoder': <the encoder's tree>, 'eib': ...}; load the pretrained encoder params
  into 'text_encoder' (``with_pretrained_text``). Freezing is the optimizer's business
  (an optax mask), not this module's.
  """

  text_encoder: nn.Module
  eib: EmotionIntensityBlock

  def __call__(self, input_ids, attention_mask, deterministic: bool = True) -> EIBOutput:
    out = self.text_encoder(input_ids, attention_mask)
    hidden = out[0] if isinstance(out, tuple) else out
    return self.eib(hidden, attention_mask, deterministic)


def with_pretrained_text(params: dict, text_params: Any) -> dict:
  """Returns TextEIB params with 'text_encoder' replaced by the pretrained tree."""
  params = dict(params)
  params["text_encoder"] = text_params
  return params


def eib_from_config(config) -> EmotionIntensityBlock:
  """The EIB module of ``config`` (context_dim, eib.*, dtype, param_dtype)."""
  e = config.eib
  return EmotionIntensityBlock(
    context_dim=int(config.context_dim),
    hidden=int(e.hidden),
    num_text_tokens=int(e.num_text_tokens),
    num_emotions=int(e.num_emotions),
    attn_heads=int(e.attn_heads),
    pool=str(e.pool),
    dropout=float(e.dropout),
    num_queries=int(e.num_queries),
    num_anchors=int(e.num_anchors),
    token_dropout=float(e.token_dropout),
    dtype=jnp.dtype(config.dtype),
    param_dtype=jnp.dtype(config.param_dtype),
  )


# ----------------------------------------------------------------------------------------
# Classifier-free guidance
# ----------------------------------------------------------------------------------------


def calibrate_intensities(s: jax.Array, gamma: float) -> jax.Array:
  """s (..., K) in [0, 1] -> s_k' = m (s_k / m) ** gamma with m = max_k s_k: the sampler's
  intensity calibration.

  The generator draws a faint emotion beside a strong one at about 40 % of what the
  benchmark renders, while a faint emotion alone is drawn (docs/RESULTS.md). gamma < 1
  lifts every intensity below the strongest toward it, more the fainter it is; the
  strongest, zeros, the order of the intensities, and so every one-emotion vector (the
  strength sweep) are unchanged. ``emotalker calibrate`` measures gamma on training
  identities. gamma 1 returns s itself.
  """
  if gamma <= 0:
    raise ValueError(f"intensity_gamma must be > 0, got {gamma} (1 = no calibration)")
  if gamma == 1.0:
    return s
  s = jnp.clip(s, 0.0, 1.0)
  m = jnp.max(s, axis=-1, keepdims=True)
  ratio = jnp.where(m > 0, s / jnp.where(m > 0, m, 1.0), 0.0)
  return m * jnp.power(ratio, jnp.asarray(gamma, s.dtype))


def apply_null(tokens: jax.Array, null: jax.Array, drop: jax.Array) -> jax.Array:
  """tokens (B, N, C), null (N, C) or (B, N, C), drop (B,) bool -> tokens with the rows
  where drop is True replaced by the null set (conditioning dropout / the CFG branch)."""
  null = jnp.broadcast_to(null.astype(tokens.dtype), tokens.shape)
  return jnp.where(drop.astype(bool)[:, None, None], null, tokens)


def drop_mask(rng: jax.Array, batch: int, p_uncond: float) -> jax.Array:
  """(B,) bool, True with probability p_uncond (explicit key)."""
  return jax.random.bernoulli(rng, p_uncond, (batch,))


# ----------------------------------------------------------------------------------------
# Loss (eq. 3) and metrics
# ----------------------------------------------------------------------------------------


def dominant_target(s: jax.Array, tol: float = 1e-4) -> jax.Array:
  """(B, K) intensities -> (B, K) CE target: 1/n on the n emotions tied for the max."""
  s = s.astype(jnp.float32)
  top = (s >= jnp.max(s, axis=-1, keepdims=True) - tol).astype(jnp.float32)
  return top / jnp.sum(top, axis=-1, keepdims=True)


def eib_loss(
  logits: jax.Array, s: jax.Array, ce_weight: float = 1.0, weights: jax.Array | None = None
) -> tuple[jax.Array, dict]:
  """L_EIB (eq. 3) averaged over the batch: sum_k (sigmoid(logits) - s)^2 + ce_weight * CE.

  logits, s: (B, K); weights: optional (B,) per-example weights (e.g. a padding mask).
  Returns (loss, {'mse', 'ce', 'mae'}).
  """
  s = s.astype(jnp.float32)
  logits = logits.astype(jnp.float32)
  w = jnp.ones(s.shape[:1], jnp.float32) if weights is None else weights.astype(jnp.float32)
  wsum = jnp.maximum(jnp.sum(w), 1.0)
  s_hat = jax.nn.sigmoid(logits)
  sq = jnp.sum(jnp.square(s_hat - s), axis=-1)
  has = (jnp.max(s, axis=-1) > 0).astype(jnp.float32) * w
  ce = -jnp.sum(dominant_target(s) * jax.nn.log_softmax(logits, axis=-1), axis=-1)
  mse = jnp.sum(sq * w) / wsum
  ce_mean = jnp.sum(ce * has) / jnp.maximum(jnp.sum(has), 1.0)
  mae = jnp.sum(jnp.mean(jnp.abs(s_hat - s), axis=-1) * w) / wsum
  return mse + ce_weight * ce_mean, {"mse": mse, "ce": ce_mean, "mae": mae}


# Canonical words for the monotonicity check ("slightly X" < "X" < "extremely X").
# Neutral uses the word "neutral" itself: FED grades neutral words like any other
# emotion ("slightly neutral" 0.3, "neutral" 0.7, "extremely neutral" 0.95).
MONOTONIC_WORDS = (
  "neutral",
  "angry",
  "contemptuous",
  "disgusted",
  "fearful",
  "happy",
  "sad",
  "surprised",
)
MONOTONIC_FRAMES = ("{}", "she looks {}", "make him {}", "a {} expression")
MONOTONIC_DEGREES = ("slightly", "", "extremely")


def monotonic_prompts() -> list[tuple[int, str, int, str]]:
  """[(emotion index, frame, degree index, prompt)] for the monotonicity sweep."""
  out = []
  for k, word in enumerate(MONOTONIC_WORDS):
    for frame in MONOTONIC_FRAMES:
      for j, deg in enumerate(MONOTONIC_DEGREES):
        phrase = f"{deg} {word}".strip()
        text = frame.format(phrase)
        if frame.startswith("a {}") and phrase[0] in "aeiou":
          text = "an" + text[1:]
        out.append((k, frame, j, text))
  return out


def monotonicity_report(prompts: list[tuple[int, str, int, str]], s_hat: np.ndarray) -> dict:
  """Is s_hat[k] strictly increasing over slightly < bare < extremely, per emotion and
  frame? Returns {'all': bool, 'fraction': f, 'per_emotion': {name: bool},
  'values': {name: {frame: [3 floats]}}}."""
  vals: dict = {}
  for (k, frame, j, _), row in zip(prompts, np.asarray(s_hat)):
    vals.setdefault(EMOTIONS[k], {}).setdefault(frame, [None] * len(MONOTONIC_DEGREES))[j] = round(
      float(row[k]), 4
    )
  ok = {
    name: {f: all(v[i] < v[i + 1] for i in range(len(v) - 1)) for f, v in frames.items()}
    for name, frames in vals.items()
  }
  flat = [x for per in ok.values() for x in per.values()]
  return {
    "all": all(flat),
    "fraction": float(np.mean(flat)),
    "per_emotion": {name: all(per.values()) for name, per in ok.items()},
    "values": vals,
  }


# ----------------------------------------------------------------------------------------
# Loading a trained EIB folder (what `emotalker eib-train` writes: ``checkpoints.eib``)
# ----------------------------------------------------------------------------------------


def unbox(tree) -> dict:
  """Params without logical-partitioning boxes, as plain nested dicts."""
  tree = nn.unbox(tree)
  if hasattr(tree, "unfreeze"):
    tree = tree.unfreeze()
  return jax.tree.map(lambda x: x, dict(tree))


# "No emotion content" (``no_emotion_content``): the EIB itself finds no emotion in the
# prompt (every non-neutral intensity below NO_CONTENT_THRESHOLD, neutral the largest), and
# the prompt holds no FED emotion word and no word of an emotional FED situation. A reading
# that leans to an emotion (one at 0.25 or more, or one above neutral, e.g. a sad situation
# the EIB half knows) keeps the EIB's intensities.
NO_CONTENT_THRESHOLD = 0.25


def no_emotion_content(s_hat: np.ndarray, prompts: Sequence[str]) -> np.ndarray:
  """(N,) bool: which prompts (with their intensities s_hat (N, 8)) carry no emotion."""
  s = np.asarray(s_hat, np.float32).reshape(len(prompts), NUM_EMOTIONS)
  other = s[:, 1:].max(axis=1)
  confident = (other < NO_CONTENT_THRESHOLD) & (s[:, 0] >= other)
  return np.array(
    [
      bool(c) and not fed.contains_emotion_word(p) and not fed_situations.contains_situation_word(p)
      for c, p in zip(confident, prompts)
    ],
    bool,
  )


@dataclasses.dataclass
class LoadedEIB:
  """A trained EIB folder: module, params, config, text encoder, and jitted prediction."""

  module: EmotionIntensityBlock
  params: Any
  config: Any
  info: dict
  encoder: Any
  path: str = ""
  _fn: Any = dataclasses.field(default=None, repr=False)

  def predict(self, prompts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """prompts -> (s_hat (N, 8) float32, truncated (N,) bool). Batches of 64, padded."""
    if self._fn is None:
      enc_module, module = self.encoder.module, self.module

      def fn(enc_params, params, ids, mask):
        out = enc_module.apply({"params": enc_params}, ids, mask)
        hidden = out[0] if isinstance(out, tuple) else out
        logits = module.apply(
          {"params": params}, hidden, mask, method=EmotionIntensityBlock.logits_from_hidden
        )
        return jax.nn.sigmoid(logits)

      self._fn = jax.jit(fn)
    prompts = list(prompts)
    out = np.zeros((len(prompts), NUM_EMOTIONS), np.float32)
    trunc = np.zeros((len(prompts),), bool)
    bs = 64
    for i in range(0, len(prompts), bs):
      chunk = prompts[i : i + bs]
      tok = self.encoder.tokenize(chunk)
      b = max(8, 1 << (len(chunk) - 1).bit_length())
      ids = np.full((b, self.encoder.max_length), self.encoder.pad_id, np.int32)
      mask = np.zeros((b, self.encoder.max_length), np.int32)
      ids[: len(chunk)], mask[: len(chunk)] = tok["input_ids"], tok["attention_mask"]
      mask[len(chunk) :, 0] = 1
      out[i : i + len(chunk)] = np.asarray(self._fn(self.encoder.params, self.params, ids, mask))[
        : len(chunk)
      ]
      trunc[i : i + len(chunk)] = tok["truncated"]
    return out, trunc


def load_eib(path: str, encoder=None) -> LoadedEIB:
  """Loads a folder written by `emotalker eib-train` (``checkpoints.read_eib``) and its text
  encoder: the fine-tuned tower DIR/text_encoder when eib.json says finetune_layers > 0,
  else the frozen one it names (``encoder``: one to reuse; for a fine-tuned EIB it must
  be that folder's tower). Raises FileNotFoundError / ValueError naming the
  folder and the fix."""
  config, info, params = checkpoints.read_eib(path)
  module = eib_from_config(config)
  params = jax.tree.map(jnp.asarray, params)
  tuned = checkpoints.eib.tuned_text_path(path, info)
  if encoder is not None and tuned is not None:
    if os.path.realpath(encoder.path) != os.path.realpath(tuned):
      raise ValueError(
        f"EIB folder {path!r} was fine-tuned with its own text tower {tuned}; the encoder "
        f"given ({encoder.path}) is another: pass encoder=None or load {tuned}"
      )
  if encoder is None and tuned is not None:  # the fine-tuned tower, wherever DIR now is
    encoder = load_text_encoder(tuned, None, int(info.get("max_length", config.text.max_length)))
  if encoder is None:
    text_path = info.get("text_path") or None
    if text_path and not os.path.isdir(text_path):
      warnings.warn(
        f"text encoder folder {text_path} recorded in {path}/eib.json is gone; "
        "using config.text.path",
        stacklevel=2,
      )
      text_path = config.text.path or None
    encoder = load_text_encoder(
      text_path,
      info.get("text_kind") or config.text.encoder,
      int(info.get("max_length", config.text.max_length)),
    )
  return LoadedEIB(module, params, config, info, encoder, path)
