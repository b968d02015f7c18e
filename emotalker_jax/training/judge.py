"""The judge's trainer and its held-out evaluation (``emotalker judge train|evaluate``).

The model (``JudgeNet``, ``Judge``, ``load_judge``) lives in ``emotalker_jax.evaluation.judge``.

Training (``train_judge``) renders its own frames with the benchmark's renderer, so the
judge sees far more identities than a dataset split holds:
  * identities: ``face_model.sample_identity(JUDGE_TRAIN_ID_OFFSET + k, seed)`` for k < N. The
    reserved id range (>= 1,000,000) is disjoint from every ``synthetic_talk`` config's ids
    (train and test ids are < num_identities) and from the challenging splits' (10000-10015),
    so every test identity is unseen. With ``challenging_fraction`` f > 0, the first
    round(f N) ids are drawn as challenging identities instead
    (``challenging.sample_challenging``; their identity-parameter loss is off, since skin,
    hair and face-shape factors override what those parameters mean);
  * each identity is drawn ``frames_per_identity`` times, each frame with its own emotion
    state (15 % neutral, 47 % one emotion at U[0.1, 1], 33 % two at U[0.25, 1], 5 % three)
    and its own motion (mouth opening, viseme, head pose, blink, gaze; the ranges of
    ``input_pipeline.synthetic.clips``);
  * loss = w_emo BCE(intensities) + w_ce CE(softmax of the same logits, s / sum(s)) (the
    CE term sharpens top-1 / top-2; without it held-out top-1 was 83 % instead of 99.6 %
    after 400 steps) + w_param MSE(identity params, the visual ones: the
    audio-only ``voice_pitch`` has weight 0) + w_mouth MSE(mouth_open) + w_con SupCon
    (supervised contrastive loss on the identity ids of the batch: G identities x F frames,
    temperature tau), AdamW with warm-up + cosine decay; optional light augmentation
    (Gaussian noise, blur) so that generated frames do not throw it off.
Everything is deterministic in ``seed``.

Held-out evaluation (``evaluate_judge``) uses identities the judge never saw: the
``test`` split of ``synthetic_talk/<size>`` (read from ``--data-dir`` when it is built
there, else rendered in-process by the same functions, which give identical clips), an
intensity sweep rendered for those identities, and extra identities from a second
reserved range (``JUDGE_HELDOUT_ID_OFFSET``).
"""

from __future__ import annotations

import functools
import json
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

from emotalker_jax.emotions import NUM_EMOTIONS
from emotalker_jax.evaluation import metrics
from emotalker_jax.evaluation.judge import (
  Judge,
  JudgeConfig,
  init_params,
  make_net,
  test_clips,
  visual_param_mask,
)
from input_pipeline.synthetic import audio as audio_lib
from input_pipeline.synthetic import challenging as challenging_lib
from input_pipeline.synthetic import clips as clips_lib
from input_pipeline.synthetic import face_model, renderer
from input_pipeline.synthetic.sizes import SIZES as DATA_SIZES

JUDGE_TRAIN_ID_OFFSET = 1_000_000  # identity ids the judge trains on: [1e6, 1e6 + N)
JUDGE_HELDOUT_ID_OFFSET = 2_000_000  # extra held-out identities for evaluation
JUDGE_HELDOUT_CHALLENGING_OFFSET = 3_000_000  # extra held-out challenging identities


# ------------------------------------------------------------------------------------------
# Training data: frames rendered on the fly
# ------------------------------------------------------------------------------------------
def sample_emotion_states(rng: np.random.Generator, n: int) -> np.ndarray:
  """(n, 8) float32 emotion states: 15 % neutral (e_0), 47 % one emotion at U[0.1, 1],
  33 % two distinct emotions at U[0.25, 1] each, 5 % three at U[0.25, 1]."""
  kinds = rng.choice(4, size=n, p=[0.15, 0.47, 0.33, 0.05])
  s = np.zeros((n, NUM_EMOTIONS), np.float32)
  for i, k in enumerate(kinds):
    if k == 0:
      s[i, 0] = 1.0
    elif k == 1:
      s[i, rng.integers(1, NUM_EMOTIONS)] = rng.uniform(0.1, 1.0)
    else:
      idx = rng.choice(np.arange(1, NUM_EMOTIONS), size=k, replace=False)
      s[i, idx] = rng.uniform(0.25, 1.0, size=k)
  return s


def sample_motion(rng: np.random.Generator, n: int):
  """Independent per-frame motion for n frames, in the ranges the benchmark's clips use.

  Returns (face_model.Motion, mouth_open (n,) float32): mouth 30 % closed else U[0, 1];
  visemes only while open; pose uniform within clips.POSE_AMPLITUDE; 20 % of frames
  blink (U[0, 1] closure); gaze U[-0.6, 0.6]."""
  mouth = np.where(rng.random(n) < 0.3, 0.0, rng.random(n)).astype(np.float32)
  speaking = (mouth > 0).astype(np.float32)
  width = (rng.uniform(-1, 1, n) * speaking).astype(np.float32)
  rnd = (rng.random(n) * speaking).astype(np.float32)
  pose = (rng.uniform(-1, 1, (n, 4)) * clips_lib.POSE_AMPLITUDE[None]).astype(np.float32)
  blink = np.where(rng.random(n) < 0.2, rng.random(n), 0.0).astype(np.float32)
  gaze = rng.uniform(-0.6, 0.6, (n, 2)).astype(np.float32)
  return face_model.Motion(
    mouth_open=mouth, viseme_width=width, viseme_round=rnd, pose=pose, blink=blink, gaze=gaze
  ), mouth


def render_frames(
  identity_params: np.ndarray, states: np.ndarray, rng: np.random.Generator, image_size: int
) -> tuple[np.ndarray, np.ndarray]:
  """One identity, one frame per emotion state (n, 8), each with random motion.

  Returns frames (n, S, S, 3) uint8 and mouth_open (n,) float32."""
  motion, mouth = sample_motion(rng, states.shape[0])
  out = renderer.render(identity_params, face_model.expression_controls(states), motion, image_size)
  return out["frames"], mouth


def still_portrait(identity_params: np.ndarray, image_size: int) -> np.ndarray:
  """The identity's still neutral portrait (S, S, 3) uint8: no expression, no motion."""
  still = np.zeros(face_model.NUM_CONTROLS, np.float32)
  return renderer.render(identity_params, still, face_model.Motion.still(1), image_size)["frames"][
    0
  ]


def build_pool(
  identity_ids,
  frames_per_identity: int,
  image_size: int,
  seed: int,
  synthetic_seed: int = 0,
  progress: bool = False,
  challenging: int = 0,
) -> dict[str, np.ndarray]:
  """Renders F frames for each identity id (deterministic in seed and the ids); the first
  ``challenging`` ids are drawn as challenging identities.

  Returns frames (I, F, S, S, 3) uint8, emotion (I, F, 8), mouth_open (I, F),
  identity_params (I, P) (the ordinary 26; a challenging identity's factors change what
  they look like, so its param_weight (I,) float32 is 0, else 1), identity (I,) int64,
  sources (I, S, S, 3) uint8: each identity's still neutral portrait."""
  ids = np.asarray(list(identity_ids), np.int64)
  n, f, s = len(ids), int(frames_per_identity), int(image_size)
  frames = np.zeros((n, f, s, s, 3), np.uint8)
  sources = np.zeros((n, s, s, 3), np.uint8)
  emotion = np.zeros((n, f, NUM_EMOTIONS), np.float32)
  mouth = np.zeros((n, f), np.float32)
  params = np.zeros((n, face_model.NUM_IDENTITY_PARAMS), np.float32)
  weight = (np.arange(n) >= int(challenging)).astype(np.float32)
  it = range(n)
  if progress:
    it = tqdm(it, desc="render judge training frames", unit="identity", file=sys.stderr)
  for i in it:
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x1DCE, int(ids[i])]))
    if weight[i]:
      u = face_model.sample_identity(int(ids[i]), synthetic_seed)
    else:
      u, _ = challenging_lib.sample_challenging(int(ids[i]), synthetic_seed)
    params[i] = u[: face_model.NUM_IDENTITY_PARAMS]
    emotion[i] = sample_emotion_states(rng, f)
    frames[i], mouth[i] = render_frames(u, emotion[i], rng, s)
    sources[i] = still_portrait(u, s)
  return {
    "frames": frames,
    "emotion": emotion,
    "mouth_open": mouth,
    "identity_params": params,
    "param_weight": weight,
    "identity": ids,
    "sources": sources,
  }


# ------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------
def supcon_loss(emb, labels, temperature: float):
  """Supervised contrastive loss (Khosla et al. 2020, L_out) of unit embeddings (B, E) with
  integer labels (B,): mean over anchors of -mean_{positives} log softmax_{j != i}(z_i.z_j/t)."""
  b = emb.shape[0]
  logits = emb @ emb.T / temperature
  eye = jnp.eye(b, dtype=bool)
  logits = jnp.where(eye, -1e9, logits)
  logp = logits - jnp.max(logits, axis=1, keepdims=True)
  logp = logp - jnp.log(jnp.sum(jnp.exp(logp), axis=1, keepdims=True))
  pos = (labels[:, None] == labels[None, :]) & ~eye
  npos = jnp.maximum(pos.sum(1), 1)
  return -jnp.mean(jnp.sum(jnp.where(pos, logp, 0.0), axis=1) / npos)


def _augment(key, x):
  """Light corruption of a batch (B, S, S, 3) in [-1, 1]: half the images get Gaussian noise
  (sigma U[0, 0.06]), a third a 3x3 binomial blur mixed in at U[0, 1]."""
  b = x.shape[0]
  k1, k2, k3, k4, k5 = jax.random.split(key, 5)
  k = jnp.array([0.25, 0.5, 0.25], x.dtype)
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
  blur = sum(k[i] * xp[:, i : i + x.shape[1], 1:-1] for i in range(3))
  bp = jnp.pad(blur, ((0, 0), (0, 0), (1, 1), (0, 0)), mode="edge")
  blur = sum(k[i] * bp[:, :, i : i + x.shape[2]] for i in range(3))
  a = jax.random.uniform(k1, (b, 1, 1, 1)) * (jax.random.uniform(k2, (b, 1, 1, 1)) < 1 / 3)
  x = x + a * (blur - x)
  sigma = jax.random.uniform(k3, (b, 1, 1, 1), maxval=0.06) * (
    jax.random.uniform(k4, (b, 1, 1, 1)) < 0.5
  )
  return jnp.clip(x + sigma * jax.random.normal(k5, x.shape), -1.0, 1.0)


def make_train_step(config: JudgeConfig, optimizer):
  """A jitted (params, opt_state, batch, key) -> (params, opt_state, metrics) step."""
  net = make_net(config)
  pmask = jnp.asarray(visual_param_mask(config.num_identity_params))

  def loss_fn(params, batch, key):
    x = batch["frames"].astype(jnp.float32) / 127.5 - 1.0
    if config.augment:
      x = _augment(key, x)
    out = net.apply({"params": params}, x)
    l_emo = optax.sigmoid_binary_cross_entropy(out["intensity_logits"], batch["emotion"]).mean()
    dist = batch["emotion"] / jnp.maximum(jnp.sum(batch["emotion"], -1, keepdims=True), 1e-6)
    l_ce = optax.softmax_cross_entropy(out["intensity_logits"], dist).mean()
    l_par = jnp.sum((out["identity_params"] - batch["identity_params"]) ** 2 * pmask, -1)
    w = batch["param_weight"]
    l_par = jnp.sum(l_par * w) / jnp.maximum(jnp.sum(w), 1.0) / jnp.sum(pmask)
    l_mouth = jnp.mean((out["mouth_open"] - batch["mouth_open"]) ** 2)
    l_con = supcon_loss(out["embedding"], batch["identity"], config.temperature)
    loss = (
      config.w_emotion * l_emo
      + config.w_emotion_ce * l_ce
      + config.w_params * l_par
      + config.w_mouth * l_mouth
      + config.w_contrastive * l_con
    )
    return loss, {
      "loss": loss,
      "emotion_bce": l_emo,
      "emotion_ce": l_ce,
      "params_mse": l_par,
      "mouth_mse": l_mouth,
      "supcon": l_con,
    }

  @jax.jit
  def step(params, opt_state, batch, key):
    grads, aux = jax.grad(loss_fn, has_aux=True)(params, batch, key)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, aux

  return step


def make_optimizer(config: JudgeConfig):
  """AdamW (warm-up + cosine decay to 2 % of the peak) after global-norm clipping at 1."""
  sched = optax.warmup_cosine_decay_schedule(
    0.0,
    config.learning_rate,
    config.warmup_steps,
    max(config.steps, config.warmup_steps + 1),
    end_value=config.learning_rate * 0.02,
  )
  return optax.chain(
    optax.clip_by_global_norm(1.0), optax.adamw(sched, weight_decay=config.weight_decay)
  )


@functools.lru_cache(maxsize=4)
def _compiled_step(config: JudgeConfig):
  """(optimizer, jitted step) for a config with the data-only fields normalised, so runs
  that differ only in seed or pool share one compiled step."""
  opt = make_optimizer(config)
  return opt, make_train_step(config, opt)


def sample_batch(pool: dict, rng: np.random.Generator, g: int, f: int) -> dict:
  """G identities x F of their frames from the pool (without replacement) -> flat batch."""
  n_id, n_f = pool["frames"].shape[:2]
  ids = rng.choice(n_id, size=min(g, n_id), replace=False)
  fr = np.stack([rng.choice(n_f, size=min(f, n_f), replace=False) for _ in ids])
  ii = np.repeat(ids, fr.shape[1])
  ff = fr.reshape(-1)
  return {
    "frames": pool["frames"][ii, ff],
    "emotion": pool["emotion"][ii, ff],
    "mouth_open": pool["mouth_open"][ii, ff],
    "identity_params": pool["identity_params"][ii],
    "param_weight": pool["param_weight"][ii],
    "identity": ii.astype(np.int32),
  }


def train_judge(
  config: JudgeConfig, progress: bool = True, log_every: int = 100, pool: dict | None = None
) -> tuple[Judge, dict]:
  """Renders the training pool and trains a judge. Deterministic in ``config.seed``.

  Returns (judge, log) with log = {render_s, train_s, steps, history: [...]}."""
  if not 0.0 <= config.challenging_fraction <= 1.0:
    raise ValueError(
      f"challenging_fraction must be in [0, 1] (--challenging-fraction), "
      f"got {config.challenging_fraction}"
    )
  t0 = time.perf_counter()
  if pool is None:
    ids = range(JUDGE_TRAIN_ID_OFFSET, JUDGE_TRAIN_ID_OFFSET + config.num_identities)
    pool = build_pool(
      ids,
      config.frames_per_identity,
      config.image_size,
      config.seed,
      config.synthetic_seed,
      progress=progress,
      challenging=round(config.challenging_fraction * config.num_identities),
    )
  t_render = time.perf_counter() - t0
  params = init_params(config, config.seed)
  opt, step = _compiled_step(
    config.replace(
      seed=0, synthetic_seed=0, num_identities=0, frames_per_identity=0, challenging_fraction=0.0
    )
  )
  opt_state = opt.init(params)
  rng = np.random.default_rng(np.random.SeedSequence([config.seed, 0x57E9]))
  key = jax.random.PRNGKey(config.seed + 1)
  history = []
  it = range(config.steps)
  if progress:
    it = tqdm(it, desc="train judge", unit="step", file=sys.stderr)
  t1 = time.perf_counter()
  for i in it:
    batch = sample_batch(pool, rng, config.batch_identities, config.batch_frames)
    params, opt_state, m = step(params, opt_state, batch, jax.random.fold_in(key, i))
    if (i + 1) % log_every == 0 or i + 1 == config.steps:
      m = {k: float(v) for k, v in m.items()}
      history.append({"step": i + 1, **m})
      if progress and hasattr(it, "set_postfix"):
        it.set_postfix(loss=f"{m['loss']:.3f}", supcon=f"{m['supcon']:.2f}")
  jax.block_until_ready(params)
  log = {
    "render_s": round(t_render, 2),
    "train_s": round(time.perf_counter() - t1, 2),
    "steps": config.steps,
    "pool_frames": int(np.prod(pool["frames"].shape[:2])),
    "history": history,
  }
  return Judge(config, params), log


# ------------------------------------------------------------------------------------------
# Held-out evaluation
# ------------------------------------------------------------------------------------------
SWEEP_STRENGTHS = tuple(np.round(np.linspace(0.1, 1.0, 10), 4))


def _identity_figures(emb: np.ndarray, ident: np.ndarray, src_emb: dict) -> dict:
  """Mean cosine of each frame to its own identity's source portrait vs to the others'."""
  same, diff = [], []
  for i, e in src_emb.items():
    sel = ident == i
    same.append(metrics.identity_similarity(emb[sel], e))
    for j, ej in src_emb.items():
      if j != i:
        diff.append(metrics.identity_similarity(emb[sel], ej))
  return {
    "same_id_cosine": float(np.mean(same)),
    "diff_id_cosine": float(np.mean(diff)),
    "same_id_cosine_min_identity": float(np.min(same)),
    "diff_id_cosine_max_pair": float(np.max(diff)),
  }


def _pool_figures(judge: Judge, pool: dict) -> dict:
  """A judge on a rendered pool (``build_pool``): identity cosine of every frame to its own
  identity's still neutral portrait vs the others', emotion top-1 / top-2, mouth Pearson,
  identity-parameter MAE (over the identities whose parameters mean what they say)."""
  pe = judge.predict(pool["frames"].reshape((-1,) + pool["frames"].shape[2:]))
  ps = judge.predict(pool["sources"])
  n_id, f = pool["frames"].shape[:2]
  idx = _identity_figures(
    pe["embedding"], np.repeat(np.arange(n_id), f), dict(enumerate(ps["embedding"]))
  )
  acc = metrics.emotion_accuracy(pe["intensities"], pool["emotion"].reshape(-1, NUM_EMOTIONS))
  pmask = visual_param_mask(judge.config.num_identity_params) > 0
  err = np.abs(pe["identity_params"] - np.repeat(pool["identity_params"], f, axis=0))[:, pmask]
  rows = np.repeat(pool["param_weight"], f) > 0
  return {
    "identities": n_id,
    "frames": int(n_id * f),
    **idx,
    "emotion_top1": acc["top1"],
    "mixture_top2": acc["top2_mixed"],
    "mouth_pearson_all_frames": metrics.pearson(pe["mouth_open"], pool["mouth_open"].reshape(-1)),
    "identity_params_mae": float(err[rows].mean()) if rows.any() else float("nan"),
  }


def factor_sensitivity(judge: Judge, identity_ids, synthetic_seed: int = 0) -> dict:
  """Whether the judge's identity embedding sees each challenge factor: the mean cosine
  between a challenging identity's still neutral portrait and the same portrait with one of
  its factors switched off (per factor, over the ids that have it), and with all of them
  off ("all"). A generator that dropped a factor would score about this on identity, so a
  value well below the same-identity cosine (~0.96) means the identity figure can show it."""
  s = judge.config.image_size
  images, pairs = [], []  # pairs: (factor, index of the portrait, index of the variant)
  for i in identity_ids:
    u, factors = challenging_lib.sample_challenging(int(i), synthetic_seed)
    ref = len(images)
    images.append(still_portrait(u, s))
    for f, off in [(f, (f,)) for f in factors] + [("all", factors)]:
      pairs.append((f, ref, len(images)))
      images.append(still_portrait(challenging_lib.without_factors(u, off), s))
  e = judge.predict(np.stack(images))["embedding"]
  out: dict[str, list] = {}
  for f, a, b in pairs:
    out.setdefault(f, []).append(float(metrics.cosine(e[a], e[b])))
  return {f: {"cosine": float(np.mean(v)), "n": len(v)} for f, v in sorted(out.items())}


def evaluate_judge(
  judge: Judge,
  size: str = "tiny",
  data_dir: str | None = None,
  extra_identities: int = 32,
  sweep_frames: int = 4,
  progress: bool = True,
) -> dict:
  """Held-out figures of a judge on clean renders (identities it never saw).

  test_split: synthetic_talk/<size> 'test' clips: emotion top-1 (single-emotion clips incl.
    neutral) and top-2 (mixtures) per frame; identity cosine of every frame to the source
    portrait (frame 0 of the identity's neutral reference clip) of the same vs the other
    identities; mouth: per-clip Pearson of predicted vs true mouth_open, and the lip-sync
    metric (predicted / true mouth vs the audio RMS envelope); identity-parameter MAE.
  sweep: the test identities x 7 emotions x 10 strengths (0.1 .. 1) x ``sweep_frames``
    frames with random motion: intensity Spearman (per-strength mean, mean over emotions;
    neutral is left out: the renderer's neutral row is the zero expression).
  extra_heldout: ``extra_identities`` ids from JUDGE_HELDOUT_ID_OFFSET, each with a still
    neutral source portrait and 16 frames of random states and motion.
  challenging_heldout: the same for as many challenging identities (ids from
    JUDGE_HELDOUT_CHALLENGING_OFFSET, outside the challenging splits): whether the judge
    can tell faces outside the generator's training distribution apart; and in it
    ``factor_removed_cosine`` (``factor_sensitivity``): whether it sees each factor.
  """
  c = judge.config
  if c.image_size != DATA_SIZES.get(size, {}).get("image_size", c.image_size):
    print(
      f"note: judge resolution {c.image_size} differs from synthetic_talk/{size}; frames "
      "are resized",
      file=sys.stderr,
    )
  out: dict[str, Any] = {}
  pool_args = (c.image_size, c.seed + 7, c.synthetic_seed)
  t0 = time.perf_counter()
  recs, source = test_clips(size, data_dir, c.synthetic_seed)
  frames = np.concatenate([r["frames"] for r in recs])
  t = recs[0]["frames"].shape[0]
  pred = judge.predict(frames)
  target = np.repeat(np.stack([r["emotion"] for r in recs]), t, axis=0)
  ident = np.repeat(np.array([int(r["identity"]) for r in recs]), t)
  acc = metrics.emotion_accuracy(pred["intensities"], target)
  src = {
    int(r["identity"]): pred["embedding"][k * t]
    for k, r in enumerate(recs)
    if bool(r["is_neutral_reference"])
  }
  idf = _identity_figures(pred["embedding"], ident, src)
  mouth_pred = pred["mouth_open"].reshape(len(recs), t)
  mouth_true = np.stack([r["mouth_open"] for r in recs])
  per_clip = [metrics.pearson(a, b) for a, b in zip(mouth_pred, mouth_true)]
  audio = [r["audio"] for r in recs]
  sync_pred = metrics.lip_sync_correlation(
    list(mouth_pred), audio, audio_lib.FPS, audio_lib.SAMPLE_RATE
  )
  sync_true = metrics.lip_sync_correlation(
    list(mouth_true), audio, audio_lib.FPS, audio_lib.SAMPLE_RATE
  )
  pmask = visual_param_mask(c.num_identity_params) > 0
  true_params = np.repeat(np.stack([r["identity_params"] for r in recs]), t, axis=0)
  out["test_split"] = {
    "source": source,
    "identities": len(src),
    "clips": len(recs),
    "frames": int(len(frames)),
    "emotion_top1": acc["top1"],
    "mixture_top2": acc["top2_mixed"],
    "emotion_overall": acc["overall"],
    "n_single": acc["n_single"],
    "n_mixed": acc["n_mixed"],
    "top1_per_emotion": acc["per_emotion"],
    "confusion": acc["confusion"],
    **idf,
    "mouth_pearson_vs_truth": float(np.nanmean(per_clip)),
    "mouth_pearson_vs_truth_min_clip": float(np.nanmin(per_clip)),
    "mouth_pearson_vs_truth_all_frames": metrics.pearson(
      mouth_pred.reshape(-1), mouth_true.reshape(-1)
    ),
    "lip_sync_pred": sync_pred["mean"],
    "lip_sync_true_mouth": sync_true["mean"],
    "identity_params_mae": float(np.abs(pred["identity_params"] - true_params)[:, pmask].mean()),
  }

  # Intensity sweep on the same held-out identities.
  test_ids = sorted(src)
  strengths, emo_ids, sweep_frames_list = [], [], []
  for i in test_ids:
    rng = np.random.default_rng(np.random.SeedSequence([c.seed, 0x5EE9, i]))
    u = face_model.sample_identity(i, c.synthetic_seed)
    states = []
    for e in range(1, NUM_EMOTIONS):
      for s in SWEEP_STRENGTHS:
        for _ in range(sweep_frames):
          v = np.zeros(NUM_EMOTIONS, np.float32)
          v[e] = s
          states.append(v)
          strengths.append(s)
          emo_ids.append(e)
    fr, _ = render_frames(u, np.stack(states), rng, c.image_size)
    sweep_frames_list.append(fr)
  sp = judge.predict(np.concatenate(sweep_frames_list))
  sw = metrics.intensity_spearman(np.array(strengths), sp["intensities"], np.array(emo_ids))
  sw_frames = metrics.intensity_spearman(
    np.array(strengths), sp["intensities"], np.array(emo_ids), reduce="none"
  )
  out["sweep"] = {
    "identities": len(test_ids),
    "strengths": list(map(float, SWEEP_STRENGTHS)),
    "frames": int(len(strengths)),
    "spearman_mean": sw["mean"],
    "spearman_per_emotion": sw["per_emotion"],
    "spearman_frame_level_mean": sw_frames["mean"],
  }

  # Extra held-out identities, ordinary and challenging (ids no judge trains on).
  if extra_identities > 0:
    ids = range(JUDGE_HELDOUT_ID_OFFSET, JUDGE_HELDOUT_ID_OFFSET + extra_identities)
    out["extra_heldout"] = _pool_figures(judge, build_pool(ids, 16, *pool_args))
    ids = range(
      JUDGE_HELDOUT_CHALLENGING_OFFSET, JUDGE_HELDOUT_CHALLENGING_OFFSET + extra_identities
    )
    out["challenging_heldout"] = _pool_figures(
      judge, build_pool(ids, 16, *pool_args, challenging=extra_identities)
    )
    out["challenging_heldout"]["factor_removed_cosine"] = factor_sensitivity(
      judge, ids, c.synthetic_seed
    )
  out["judge"] = {
    "image_size": c.image_size,
    "seed": c.seed,
    "synthetic_seed": c.synthetic_seed,
    "train_identities": c.num_identities,
    "challenging_fraction": c.challenging_fraction,
    "steps": c.steps,
  }
  out["eval_s"] = round(time.perf_counter() - t0, 2)
  return out


TARGETS = {  # the judge's acceptance figures (held-out identities, clean renders)
  "test_split.emotion_top1": (">=", 0.98),
  "test_split.mixture_top2": (">=", 0.95),
  "sweep.spearman_mean": (">=", 0.95),
  "test_split.same_id_cosine": (">=", 0.95),
  "test_split.diff_id_cosine": ("<=", 0.5),
  "test_split.mouth_pearson_vs_truth": (">=", 0.95),
}


def check_targets(figures: dict) -> dict:
  """{name: {value, target, ok}} for every TARGETS entry."""
  res = {}
  for name, (op, thr) in TARGETS.items():
    sec, key = name.split(".")
    v = figures.get(sec, {}).get(key, float("nan"))
    ok = bool(v >= thr) if op == ">=" else bool(v <= thr)
    res[name] = {"value": v, "target": f"{op} {thr}", "ok": ok}
  return res


# ------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------
def _summary(figures: dict, meta: dict) -> str:
  """Markdown: the figures table, the TARGETS table and the test split's confusion."""
  flat = {}
  for sec in ("test_split", "sweep", "extra_heldout", "challenging_heldout"):
    for k, v in figures.get(sec, {}).items():
      if isinstance(v, (int, float)) and not isinstance(v, bool):
        flat[f"{sec}.{k}"] = v
  for f, d in figures.get("challenging_heldout", {}).get("factor_removed_cosine", {}).items():
    flat[f"challenging_heldout.factor_removed_cosine.{f}"] = d["cosine"]
  lines = [metrics.metrics_table_markdown(flat, meta)]
  lines.append("\n| target | value | required | met |\n|---|---|---|---|")
  for k, r in check_targets(figures).items():
    lines.append(f"| {k} | {r['value']:.4f} | {r['target']} | {'yes' if r['ok'] else 'NO'} |")
  if "test_split" in figures:
    lines.append("\nConfusion (test split, single-emotion frames; rows true, columns predicted):\n")
    lines.append(metrics.confusion_markdown(figures["test_split"]["confusion"]))
  return "\n".join(lines)


def write_report(figures: dict, size: str, path: str, meta: dict) -> str:
  """Adds ``figures["targets"]`` (``check_targets``), writes the figures to the JSON file
  ``path`` and returns the markdown summary; ``meta`` (e.g. {"judge": folder}) heads its
  table, with the judge's settings from ``figures["judge"]`` and the synthetic_talk size."""
  j = figures.get("judge", {})
  meta = {
    **meta,
    "synthetic_talk": size,
    "judge image size": j.get("image_size"),
    "judge seed": j.get("seed"),
    "judge training identities": j.get("train_identities"),
    "judge steps": j.get("steps"),
    "test split": figures.get("test_split", {}).get("source"),
  }
  figures["targets"] = check_targets(figures)
  with open(path, "w") as fh:
    json.dump(figures, fh, indent=2)
  return _summary(figures, meta)
