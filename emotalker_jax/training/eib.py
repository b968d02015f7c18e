"""The EIB trainer: the Emotion Intensity Block's intensity head on FED (METHOD.md eq. 3),
on the frozen text encoder, or with its top ``config.eib.finetune_layers`` layers
fine-tuned alongside (``training/eib_tower.py``: steps 2-4 then run on the cached states
entering those layers, and the tuned tower is written to ``DIR/text_encoder``, the
folder to train the generator with: ``--config.text.path=DIR/text_encoder``).
``emotalker eib-train`` runs ``train_eib``:

1. the FED corpus: generated in memory from ``config.eib.fed_size`` / ``fed_seed``
   (or read from ``--fed DIR/fed.jsonl`` written by ``emotalker fed``);
2. pooled text-encoder features of every prompt, computed once in length-sorted batches
   (progress bar) and cached in ``DIR/features-<key>.npz`` (key: encoder, pool, corpus);
   with ``config.eib.pool='tokens'`` the token states themselves (float16, in memory only)
   for the token-level head, plus its frozen anchor table (``anchor_embeddings``: the
   emotion names and train-split terms, encoded alone);
3. the head, trained with optax AdamW (warmup + cosine) in a jitted step on random
   batches of cached features;
4. evaluation on the validation and test splits (top-1, mixed top-2, MAE, per category,
   confusion) and the monotonicity sweep ("slightly X" < "X" < "extremely X");
5. ``DIR/checkpoint`` (orbax, all EIB params: the trained head plus the freshly
   initialised token basis / text-token pooling / null set, which the generator's
   training learns), ``DIR/config.json``, ``DIR/eib.json`` (text encoder, FED, steps)
   and ``DIR/metrics.json``.

The text encoder stays frozen in ``emotalker train``.
"""

from __future__ import annotations

from collections.abc import Sequence
import functools
import hashlib
import json
import os
import shutil
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

from emotalker_jax import checkpoints, fed, fed_lexicon
from emotalker_jax.evaluation.metrics import intensity_metrics
from emotalker_jax.models import eib as eib_lib
from emotalker_jax.models.eib import (
  MONOTONIC_WORDS,
  TOKEN_POOL,
  IntensityHead,
  TokenIntensityHead,
  eib_loss,
  pool_features,
  pooled_dim,
)
from emotalker_jax.models.text_encoder import export_text_encoder, load_text_encoder
from emotalker_jax.training import eib_tower


def eib_settings(config) -> dict:
  e = config.eib
  return {
    "steps": int(e.steps),
    "batch_size": int(e.batch_size),
    "lr": float(e.lr),
    "weight_decay": float(e.weight_decay),
    "warmup": int(e.warmup_steps),
    "ce_weight": float(e.ce_weight),
    "fed_size": int(e.fed_size),
    "fed_seed": int(e.fed_seed),
    "pool": str(e.pool),
    "num_queries": int(e.num_queries),
    "num_anchors": int(e.num_anchors),
    "token_dropout": float(e.token_dropout),
    "finetune_layers": int(e.finetune_layers),
    "tower_lr": float(e.tower_lr),
    "layer_decay": float(e.layer_decay),
  }


def load_corpus(fed_dir: str | None, size: int, seed: int):
  """{split: [FedRecord]} from fed_dir/fed.jsonl, or generated."""
  if fed_dir is None:
    return fed.generate(size, seed)
  path = os.path.join(fed_dir, "fed.jsonl") if os.path.isdir(fed_dir) else fed_dir
  if not os.path.isfile(path):
    raise FileNotFoundError(
      f"--fed {fed_dir!r}: no fed.jsonl there; write one with `emotalker fed --out {fed_dir}`"
    )
  records = {s: [] for s in fed.ALL_SPLITS}
  for r in fed.read_jsonl(path):
    if r.split not in records:
      raise ValueError(f"{path}: unknown split {r.split!r}; regenerate it with `emotalker fed`")
    records[r.split].append(r)
  for s in fed_lexicon.SPLITS:
    if not records[s]:
      raise ValueError(f"{path} has no {s!r} records; regenerate it with `emotalker fed`")
  return {s: v for s, v in records.items() if v}


def _length_sorted_batches(encoder, tok, batch_size: int, max_length: int):
  """Yields (idx, ids, mask) over the tokenized prompts ``tok`` sorted by token count: each
  batch is cut to its longest prompt (rounded up to a multiple of 8, at most max_length)
  and padded to ``batch_size`` rows (filler rows attend to their first token), so short
  prompts cost short sequences and every batch shape compiles once. idx: (n,) the rows'
  positions in the input order."""
  lens = tok["attention_mask"].sum(axis=1)
  order = np.argsort(lens, kind="stable")
  for start in range(0, len(order), batch_size):
    idx = order[start : start + batch_size]
    length = min(max_length, int(-(-int(lens[idx].max()) // 8) * 8))
    ids = np.full((batch_size, length), encoder.pad_id, np.int32)
    mask = np.zeros((batch_size, length), np.int32)
    ids[: len(idx)] = tok["input_ids"][idx, :length]
    mask[: len(idx)] = tok["attention_mask"][idx, :length]
    mask[len(idx) :, 0] = 1  # filler rows
    yield idx, ids, mask


def encode_pooled(encoder, prompts, pool: str, batch_size: int = 256, progress=None):
  """Pooled token states of the frozen encoder for every prompt: (N, P) float32.

  Prompts are sorted by token count and each batch is cut to its longest prompt (rounded
  up to a multiple of 8), so short prompts cost short sequences; results come back in the
  input order. progress(n) is called after each batch.
  """
  module = encoder.module

  @jax.jit
  def fn(params, ids, mask):
    out = module.apply({"params": params}, ids, mask)
    hidden = out[0] if isinstance(out, tuple) else out
    return pool_features(hidden, mask, pool)

  feats = np.zeros((len(prompts), pooled_dim(encoder.hidden_size, pool)), np.float32)
  if not len(prompts):
    return feats
  tok = encoder.tokenize(list(prompts))
  for idx, ids, mask in _length_sorted_batches(encoder, tok, batch_size, encoder.max_length):
    feats[idx] = np.asarray(fn(encoder.params, ids, mask))[: len(idx)]
    if progress is not None:
      progress(len(idx))
  return feats


def encode_tokens(encoder, prompts, batch_size: int = 256, progress=None):
  """Token states of the frozen encoder for every prompt, for config.eib.pool='tokens'.

  Returns (hidden (N, L, D) float16, mask (N, L) int32) with L the longest prompt's token
  count rounded up to a multiple of 8 (float16 halves the memory: 60k prompts, L = 32,
  D = 384 is 1.5 GB). Batching as in ``encode_pooled``.
  """
  module = encoder.module

  @jax.jit
  def fn(params, ids, mask):
    out = module.apply({"params": params}, ids, mask)
    return (out[0] if isinstance(out, tuple) else out).astype(jax.numpy.float16)

  tok = encoder.tokenize(list(prompts))
  lens = tok["attention_mask"].sum(axis=1)
  L = min(encoder.max_length, max(8, int(-(-int(lens.max(initial=1)) // 8) * 8)))
  hidden = np.zeros((len(prompts), L, encoder.hidden_size), np.float16)
  mask = np.ascontiguousarray(tok["attention_mask"][:, :L])
  for idx, ids, m in _length_sorted_batches(encoder, tok, batch_size, L):
    hidden[idx, : ids.shape[1]] = np.asarray(fn(encoder.params, ids, m))[: len(idx)]
    if progress is not None:
      progress(len(idx))
  return hidden, mask


def anchor_words(num: int) -> list[list[str]]:
  """Per emotion, ``num`` anchor phrases from the TRAIN split's vocabulary only: the
  emotion's name word first, then its train terms (adjectives, nouns, -ing phrases,
  facial actions, in FED's table order), cycled when there are fewer than ``num``."""
  terms = fed.split_pools()["train"].terms
  out = []
  for k, name in enumerate(MONOTONIC_WORDS):
    words = [name] + [
      t.surface()
      for kind in fed_lexicon.KINDS
      for t in terms.get((k, kind), ())
      if t.surface() != name
    ]
    out.append([words[i % len(words)] for i in range(num)])
  return out


def anchor_embeddings(encoder, num: int):
  """(K, num, D) float32: each anchor phrase encoded alone, its last-layer token states
  averaged over the phrase's own tokens (special tokens left out)."""
  words = anchor_words(num)
  flat = [w for ws in words for w in ws]
  hidden, mask = encoder.encode(flat)
  hidden, mask = np.asarray(hidden), np.asarray(mask).copy()
  n = mask.sum(axis=1)
  if encoder.family == "bert":  # [CLS] ... [SEP]
    mask[:, 0] = 0
    mask[np.arange(len(flat)), n - 1] = 0
  emb = (hidden * mask[..., None]).sum(axis=1) / np.maximum(mask.sum(axis=1), 1)[:, None]
  return emb.reshape(len(words), num, -1).astype(np.float32)


def make_head(st: dict, hidden: int, dropout: float = 0.0):
  """The intensity head module for the settings ``st`` (``eib_settings``): IntensityHead on
  pooled features or TokenIntensityHead on token states (pool='tokens')."""
  if st["pool"] == TOKEN_POOL:
    return TokenIntensityHead(
      hidden=hidden,
      num_queries=st["num_queries"],
      num_anchors=st["num_anchors"],
      dropout=dropout,
      token_dropout=st["token_dropout"],
    )
  return IntensityHead(hidden=hidden, dropout=dropout)


def _head_inputs(xs, rows):
  """The head's inputs for ``rows`` (an index array or slice) of features ``xs``: token
  states (3-D, stored float16) as float32, everything else as stored."""
  return tuple(
    jnp.asarray(f[rows], jnp.float32) if f.ndim == 3 else jnp.asarray(f[rows]) for f in xs
  )


def train_head(
  features,
  targets,
  *,
  hidden: int,
  steps: int,
  batch_size: int,
  lr: float,
  weight_decay: float,
  warmup: int,
  ce_weight: float,
  seed: int = 0,
  dropout: float = 0.0,
  progress=None,
  head=None,
  anchors=None,
):
  """Trains the head on (features, targets (N, 8)); returns (params, losses).

  features: pooled (N, P) for IntensityHead (the default head), or a tuple (hidden
  (N, L, D), mask (N, L)) for a TokenIntensityHead passed as ``head``; ``anchors``
  (K, N_a, D) fills its frozen anchor table.
  """
  if steps < 1:
    raise ValueError(f"--steps must be >= 1, got {steps}")
  head = IntensityHead(hidden=hidden, dropout=dropout) if head is None else head
  key = jax.random.key(seed)
  key, init_key = jax.random.split(key)
  xs = tuple(jnp.asarray(f) for f in (features if isinstance(features, tuple) else (features,)))
  y = jnp.asarray(targets)
  params = dict(nn.unbox(head.init(init_key, *_head_inputs(xs, slice(0, 1)))["params"]))
  if anchors is not None:
    params["anchors"] = jnp.asarray(anchors, jnp.float32)
  sched = optax.warmup_cosine_decay_schedule(
    0.0, lr, min(warmup, max(steps - 1, 1)), max(steps, 2), lr * 0.02
  )
  opt = optax.adamw(sched, weight_decay=weight_decay)
  opt_state = opt.init(params)

  @jax.jit
  def step(params, opt_state, key):
    k_idx, k_drop = jax.random.split(key)
    idx = jax.random.randint(k_idx, (batch_size,), 0, y.shape[0])
    batch = _head_inputs(xs, idx)

    def loss_fn(p):
      logits = head.apply({"params": p}, *batch, deterministic=False, rngs={"dropout": k_drop})
      return eib_loss(logits, y[idx], ce_weight)

    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss, aux["mae"]

  losses = []
  for i in range(steps):
    key, sub = jax.random.split(key)
    params, opt_state, loss, mae = step(params, opt_state, sub)
    if progress is not None and (i % 50 == 0 or i == steps - 1):
      loss_f = float(loss)
      losses.append((i, loss_f))
      progress(i, loss_f, float(mae))
  return params, losses


def predict_head(params, features, hidden: int, batch: int = 1024, head=None):
  """s_hat (N, 8) of a trained head; features as in ``train_head``."""
  head = IntensityHead(hidden=hidden) if head is None else head
  xs = features if isinstance(features, tuple) else (features,)
  fn = jax.jit(lambda p, *x: jax.nn.sigmoid(head.apply({"params": p}, *x)))
  n = len(xs[0])
  return np.concatenate(
    [np.asarray(fn(params, *_head_inputs(xs, slice(i, i + batch)))) for i in range(0, n, batch)]
    or [np.zeros((0, 8))]
  )


def evaluate(params, feats, records, hidden: int, head=None) -> dict:
  """FED metrics of the head on one split: overall and per category."""
  return split_metrics(predict_head(params, feats, hidden, head=head), records)


def split_metrics(pred, records) -> dict:
  """FED metrics of predictions pred (N, 8) on one split's records: overall, per category,
  and the worded order."""
  target = np.stack([r.intensities for r in records])
  mixed = np.array([r.is_mixed for r in records])
  out = intensity_metrics(pred, target, mixed)
  cats = np.array([r.category for r in records])
  out["per_category"] = {}
  for c in sorted(set(cats)):
    ix = cats == c
    m = intensity_metrics(pred[ix], target[ix], mixed[ix])
    out["per_category"][c] = {k: m[k] for k in ("n", "top1", "top2_mixed", "mae")}
  orders = [(i, r.order) for i, r in enumerate(records) if len(r.order) >= 2]
  if orders:  # worded order respected: "mostly X, a little Y" -> s_hat_X > s_hat_Y
    ok = [all(pred[i, o[j]] > pred[i, o[j + 1]] for j in range(len(o) - 1)) for i, o in orders]
    out["worded_order"] = float(np.mean(ok))
  return out


def feature_cache_path(out: str, encoder, pool: str, prompts) -> str:
  h = hashlib.sha256()
  h.update(f"{encoder.path}|{encoder.kind}|{encoder.max_length}|{pool}|".encode())
  for p in prompts:
    h.update(p.encode("utf-8"))
    h.update(b"\n")
  return os.path.join(out, f"features-{h.hexdigest()[:16]}.npz")


def _train_bar(steps: int):
  """(tqdm bar, progress(i, loss, mae) callback) for the training loop."""
  bar = tqdm(total=steps, desc="EIB: training", unit="step", file=sys.stderr)
  last = [0]

  def progress(i, loss, mae):
    bar.update(i + 1 - last[0])
    last[0] = i + 1
    bar.set_postfix(loss=f"{loss:.4f}", mae=f"{mae:.4f}")

  return bar, progress


def _fit_frozen(config, st, encoder, records, out, steps, batch_size, encode_batch):
  """The head on the frozen tower's cached features. Returns (head params, losses,
  {split: metrics}, monotonicity report, {'encode': s, 'train': s})."""
  t0 = time.time()
  splits = list(records)
  prompts = [r.prompt for s in splits for r in records[s]]
  tokens = st["pool"] == TOKEN_POOL
  cache = feature_cache_path(out, encoder, st["pool"], prompts)
  if tokens:  # token states (1.5 GB for 66k prompts) are recomputed, not cached on disk
    with tqdm(total=len(prompts), desc="EIB: encoding FED", unit="prompt", file=sys.stderr) as bar:
      feats = encode_tokens(encoder, prompts, encode_batch, bar.update)
  elif os.path.isfile(cache):
    feats = np.load(cache)["features"]
    print(f"eib-train: using cached features {cache}", file=sys.stderr)
  else:
    with tqdm(total=len(prompts), desc="EIB: encoding FED", unit="prompt", file=sys.stderr) as bar:
      feats = encode_pooled(encoder, prompts, st["pool"], encode_batch, bar.update)
    np.savez(cache, features=feats)
  t_encode = time.time() - t0
  offsets, start = {}, 0
  for s in splits:
    offsets[s] = (start, start + len(records[s]))
    start += len(records[s])
  split_feats = {
    s: (tuple(f[a:b] for f in feats) if tokens else feats[a:b]) for s, (a, b) in offsets.items()
  }
  targets = np.stack([r.intensities for r in records["train"]])

  hidden = int(config.eib.hidden)
  dropout = float(config.eib.dropout)
  head = make_head(st, hidden, dropout)
  anchors = (
    anchor_embeddings(encoder, st["num_anchors"]) if (tokens and st["num_anchors"] > 0) else None
  )
  bar, progress = _train_bar(steps)
  t1 = time.time()
  head_params, losses = train_head(
    split_feats["train"],
    targets,
    hidden=hidden,
    steps=steps,
    batch_size=batch_size,
    lr=st["lr"],
    weight_decay=st["weight_decay"],
    warmup=st["warmup"],
    ce_weight=st["ce_weight"],
    seed=int(config.seed),
    dropout=dropout,
    progress=progress,
    head=head,
    anchors=anchors,
  )
  bar.close()
  t_train = time.time() - t1

  del feats
  metrics = {s: evaluate(head_params, split_feats[s], records[s], hidden, head) for s in splits}
  mono_prompts = eib_lib.monotonic_prompts()
  mono_text = [p for *_, p in mono_prompts]
  mono_feats = (
    encode_tokens(encoder, mono_text, 128)
    if tokens
    else encode_pooled(encoder, mono_text, st["pool"], 128)
  )
  mono = eib_lib.monotonicity_report(
    mono_prompts, predict_head(head_params, mono_feats, hidden, head=head)
  )

  return head_params, losses, metrics, mono, {"encode": t_encode, "train": t_train}


def _fit_tower(config, st, encoder, records, out, steps, batch_size, encode_batch):
  """The top ``finetune_layers`` tower layers + head (training/eib_tower.py). Returns as
  ``_fit_frozen`` plus the fine-tuned layers {'layer_i': ...}."""
  t0 = time.time()
  start = eib_tower.tower_start(encoder, st["finetune_layers"])
  if st["pool"] == TOKEN_POOL and st["num_anchors"] > 0:
    raise ValueError(
      "config.eib.num_anchors > 0 needs the frozen tower; set config.eib.finetune_layers=0"
    )
  n = sum(len(v) for v in records.values())
  caches = {}
  with tqdm(total=n, desc="EIB: encoding FED", unit="prompt", file=sys.stderr) as bar:
    for s, recs in records.items():
      caches[s] = eib_tower.encode_lower(
        encoder, [r.prompt for r in recs], start, encode_batch, bar.update
      )
  t_encode = time.time() - t0
  head = make_head(st, int(config.eib.hidden), float(config.eib.dropout))
  bar, progress = _train_bar(steps)
  t1 = time.time()
  tower, head_params, losses = eib_tower.train_tower_head(
    caches["train"],
    np.stack([r.intensities for r in records["train"]]),
    encoder,
    head,
    pool=st["pool"],
    steps=steps,
    batch_size=batch_size,
    lr=st["lr"],
    tower_lr=st["tower_lr"],
    layer_decay=st["layer_decay"],
    weight_decay=st["weight_decay"],
    warmup=st["warmup"],
    ce_weight=st["ce_weight"],
    seed=int(config.seed),
    progress=progress,
  )
  bar.close()
  t_train = time.time() - t1
  predict = functools.partial(
    eib_tower.predict_tower, tower, head_params, encoder=encoder, head=head, pool=st["pool"]
  )
  metrics = {s: split_metrics(predict(caches[s]), records[s]) for s in records}
  del caches
  mono_prompts = eib_lib.monotonic_prompts()
  mono_cache = eib_tower.encode_lower(encoder, [p for *_, p in mono_prompts], start, 128)
  mono = eib_lib.monotonicity_report(mono_prompts, predict(mono_cache))
  times = {"encode": t_encode, "train": t_train}
  return head_params, losses, metrics, mono, times, tower


def train_eib(
  config,
  out: str,
  *,
  steps: int | None = None,
  batch_size: int | None = None,
  fed_dir: str | None = None,
  encode_batch: int = 256,
  config_path: str | None = None,
  overrides: Sequence[str] = (),
) -> dict:
  """Trains the EIB's head for ``config`` and writes it to the folder ``out``.

  steps / batch_size: None -> config.eib.steps / batch_size. fed_dir: a folder with
  fed.jsonl (or the file), None -> the corpus generated from config.eib.fed_size / fed_seed.
  encode_batch: prompts per text-encoder call when caching features. config_path and
  overrides are recorded in metrics.json. Returns the summary (printed by the command).
  """
  st = eib_settings(config)
  steps = st["steps"] if steps is None else int(steps)
  batch_size = st["batch_size"] if batch_size is None else int(batch_size)
  if steps < 1:
    raise ValueError(f"--steps must be >= 1, got {steps}")
  if batch_size < 1:
    raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
  if os.path.exists(out) and not os.path.isdir(out):
    raise ValueError(f"--out {out!r} is a file; give a folder path")
  os.makedirs(out, exist_ok=True)
  t0 = time.time()

  records = load_corpus(fed_dir, st["fed_size"], st["fed_seed"])
  encoder = load_text_encoder(
    config.text.path or None, config.text.encoder, int(config.text.max_length)
  )
  fit = _fit_tower if st["finetune_layers"] > 0 else _fit_frozen
  head_params, losses, metrics, mono, secs, *tower = fit(
    config, st, encoder, records, out, steps, batch_size, encode_batch
  )
  text_path = encoder.path
  tuned_dir = os.path.join(out, checkpoints.eib.TEXT_ENCODER_DIR)
  if not tower and os.path.isdir(tuned_dir):  # an earlier fine-tuned run's tower
    shutil.rmtree(tuned_dir)
  if tower:  # the fine-tuned tower, as a folder load_text_encoder reads (config.text.path)
    text_path = os.path.abspath(os.path.join(out, checkpoints.eib.TEXT_ENCODER_DIR))
    export_text_encoder(encoder, text_path, eib_tower.merged_params(encoder, tower[0]))

  # Full EIB params: the trained head + initialised tokens / pooling / null set.
  module = eib_lib.eib_from_config(config)
  h0 = jnp.zeros((1, 8, encoder.hidden_size), jnp.float32)
  m0 = jnp.ones((1, 8), jnp.int32)
  variables = module.init(
    jax.random.key(int(config.seed)), h0, m0, method=eib_lib.EmotionIntensityBlock.init_all
  )
  params = eib_lib.unbox(variables["params"])
  params["head"] = head_params
  params = eib_lib.unbox(params)
  checkpoints.save_eib(
    out,
    params,
    config,
    {
      "text_path": text_path,
      "text_base": encoder.path,
      "finetune_layers": st["finetune_layers"],
      "text_kind": encoder.kind,
      "max_length": encoder.max_length,
      "hidden_size": encoder.hidden_size,
      "pool": st["pool"],
      "steps": steps,
      "batch_size": batch_size,
      "fed": {
        "source": fed_dir or "generated",
        "size": sum(len(v) for v in records.values()),
        "seed": st["fed_seed"],
        "version": fed_lexicon.FED_VERSION,
      },
    },
  )
  summary = {
    "test": {
      k: metrics["test"][k]
      for k in ("top1", "top2_mixed", "mae", "n", "n_top1", "n_mixed", "worded_order")
      if k in metrics["test"]
    },
    "validation": {k: metrics["validation"][k] for k in ("top1", "top2_mixed", "mae")},
    "train": {k: metrics["train"][k] for k in ("top1", "top2_mixed", "mae")},
    **(
      {"test_frames": {k: metrics["test_frames"][k] for k in ("top1", "top2_mixed", "mae")}}
      if "test_frames" in metrics
      else {}
    ),
    "monotonic_all": mono["all"],
    "monotonic_fraction": mono["fraction"],
    "monotonic_per_emotion": mono["per_emotion"],
    "seconds": {
      "encode": round(secs["encode"], 1),
      "train": round(secs["train"], 1),
      "total": round(time.time() - t0, 1),
    },
  }
  with open(os.path.join(out, "metrics.json"), "w") as f:
    json.dump(
      {
        "summary": summary,
        "splits": metrics,
        "monotonicity": mono,
        "losses": losses,
        "config": config_path,
        "overrides": list(overrides),
      },
      f,
      indent=1,
    )
  return summary
