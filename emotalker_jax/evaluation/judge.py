"""The judge: a small CNN that reads faces of the synthetic benchmark and says what they show.

It measures generated frames where the ground truth is known (METHOD.md, "Metrics,
precisely"): emotion intensities, an identity embedding, the speech mouth opening and the
identity parameters of ``input_pipeline/synthetic``'s renderer.

Network (``JudgeNet``, Flax linen, NHWC):
  x (B, S, S, 3) float in [-1, 1], S = ``config.image_size`` (32 for tiny, 64 for small)
  space-to-depth (k x k pixel blocks -> channels; lossless, k = 2 at 32, 4 at 64) ->
  conv3x3 -> per stage i: ``blocks`` x [conv3x3 + GroupNorm + SiLU], then a stride-2
  conv3x3 (not after the last stage) -> average-pool to 4x4 -> flatten, concatenated with
  the mouth branch (the ``MOUTH_BOX`` crop at full resolution: conv3x3 + GN + SiLU, a
  stride-2 one, another, flattened) -> Dense + SiLU (``hidden``) -> heads:
    intensities      (B, 8)  sigmoid, MEAD order (neutral .. surprised), in [0, 1]
    identity_params  (B, P)  sigmoid, the renderer's identity vector u in [0, 1]^P
    embedding        (B, E)  L2-normalised identity embedding (a 2-layer MLP head)
    mouth_open       (B,)    sigmoid, the speech mouth opening label in [0, 1]
  The 4x4 spatial map is flattened rather than globally pooled: identity parameters are
  positions (eye spacing, hairline, parting) that a global mean would blur. The mouth
  branch sees the lips and jaw at full resolution (sub-pixel cues of small openings).

Training (``train_judge``) renders its own frames with the benchmark's renderer, so the
judge sees far more identities than a dataset split holds:
  * identities: ``face_model.sample_identity(JUDGE_TRAIN_ID_OFFSET + k, seed)`` for k < N. The
    reserved id range (>= 1,000,000) is disjoint from every ``synthetic_talk`` config's ids
    (train and test ids are < num_identities), so every test identity is unseen;
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

Use:
  python -m emotalker_jax.evaluation.judge train --size tiny --out data/judge_tiny
  python -m emotalker_jax.evaluation.judge evaluate --judge data/judge_tiny [--data-dir data/tfds]

  judge = load_judge("data/judge_tiny")
  out = judge.predict(frames)   # frames (N, H, W, 3) uint8, or float in [-1, 1]
  out["intensities"] (N, 8), out["embedding"] (N, E), out["mouth_open"] (N,),
  out["identity_params"] (N, P)  -- numpy float32

Mouth opening at 32x32 (1 px = 0.056 face units): the renderer opens the mouth by
0.13 * mouth_open face units, so most speech openings are thinner than a pixel. Since
synthetic_talk 1.1.0 the mouth interior fades in with opacity opening / 1 px below that,
which keeps small openings readable: the tiny judge's per-clip Pearson with the true
opening went from 0.864 (1.0.0, where a closed mouth was already a 1 px dark line) to 0.956.

Held-out evaluation (``evaluate_judge``) uses identities the judge never saw: the
``test`` split of ``synthetic_talk/<size>`` (read from ``--data-dir`` when it is built
there, else rendered in-process by the same functions, which give identical clips), an
intensity sweep rendered for those identities, and extra identities from a second
reserved range (``JUDGE_HELDOUT_ID_OFFSET``).
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import sys
import time
from typing import Any

import numpy as np

from emotalker_jax.emotions import NUM_EMOTIONS
from input_pipeline.synthetic.sizes import SIZES as DATA_SIZES

JUDGE_TRAIN_ID_OFFSET = 1_000_000    # identity ids the judge trains on: [1e6, 1e6 + N)
JUDGE_HELDOUT_ID_OFFSET = 2_000_000  # extra held-out identities for evaluation
CONFIG_KEY = "judge"
# Mouth and chin crop (fractions of the frame: rows, columns) for the mouth branch: the
# mouth at rest pose sits near row 0.7; the box allows the head motion and the jaw drop.
MOUTH_BOX = ((0.5, 0.94), (0.22, 0.78))


# ------------------------------------------------------------------------------------------
# Configuration
# ------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class JudgeConfig:
  """Architecture (first block) and training recipe (second block) of a judge."""
  image_size: int = 32
  channels: tuple = (32, 64, 128)
  blocks: int = 1               # conv + GroupNorm + SiLU blocks per stage
  space_to_depth: int = 1       # stem: fold k x k pixel blocks into channels (lossless)
  mouth_branch: int = 0         # >0: channels of a full-resolution branch on the mouth crop
  groups: int = 8               # GroupNorm groups
  hidden: int = 256
  embed_dim: int = 64
  num_emotions: int = NUM_EMOTIONS
  num_identity_params: int = 26
  dtype: str = "float32"        # compute dtype; params are float32

  seed: int = 0
  synthetic_seed: int = 0       # the synthetic_talk seed (identity sampling, clip plans)
  num_identities: int = 1024    # training identities (reserved id range)
  frames_per_identity: int = 16
  steps: int = 1000
  batch_identities: int = 16    # G identities x F frames per batch
  batch_frames: int = 4
  learning_rate: float = 3e-3
  warmup_steps: int = 50
  weight_decay: float = 1e-4
  temperature: float = 0.1
  w_emotion: float = 1.0
  w_emotion_ce: float = 1.0     # softmax CE towards s / sum(s) (sharpens top-1 / top-2)
  w_params: float = 10.0
  w_mouth: float = 30.0
  w_contrastive: float = 0.3
  augment: bool = True

  def replace(self, **kw) -> "JudgeConfig":
    return dataclasses.replace(self, **kw)

  def to_dict(self) -> dict:
    d = dataclasses.asdict(self)
    d["channels"] = list(self.channels)
    return d

  @classmethod
  def from_dict(cls, d: dict) -> "JudgeConfig":
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
      raise ValueError(f"judge config has unknown keys {unknown}; was it written by a "
                       "newer version? Retrain with `python -m emotalker_jax.evaluation.judge "
                       "train`")
    d = dict(d)
    if "channels" in d:
      d["channels"] = tuple(int(c) for c in d["channels"])
    return cls(**d)


SIZES = {
    "tiny": JudgeConfig(image_size=32, channels=(32, 64, 128), space_to_depth=2,
                        mouth_branch=16),
    "small": JudgeConfig(image_size=64, channels=(32, 64, 128), space_to_depth=4,
                         mouth_branch=16),
}


def get_config(size: str = "tiny", **overrides) -> JudgeConfig:
  """The judge config for a synthetic_talk size ('tiny': 32x32, 'small': 64x64)."""
  if size not in SIZES:
    raise ValueError(f"unknown judge size {size!r}; choose from {', '.join(SIZES)}")
  return SIZES[size].replace(**overrides)


def visual_param_mask(num_params: int = 26) -> np.ndarray:
  """(P,) float32: 1 for identity parameters visible in a frame, 0 for audio-only ones."""
  from input_pipeline.synthetic import face_model
  names = face_model.IDENTITY_PARAM_NAMES
  if num_params != len(names):
    raise ValueError(f"judge num_identity_params={num_params} but the renderer has "
                     f"{len(names)} identity parameters")
  return np.array([0.0 if n == "voice_pitch" else 1.0 for n in names], np.float32)


# ------------------------------------------------------------------------------------------
# The network
# ------------------------------------------------------------------------------------------
def _net_module():
  import flax.linen as nn
  import jax
  import jax.numpy as jnp

  from emotalker_jax.models.layers import IMAGE_AXES, conv, group_norm

  def dense(features, names, dt, name):
    return nn.Dense(
        features, dtype=dt, param_dtype=jnp.float32, name=name,
        kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), names),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), names[-1:]))

  class JudgeNet(nn.Module):
    """Frames (B, S, S, 3) float in [-1, 1] -> dict of heads (see the module docstring)."""
    config: JudgeConfig

    @nn.compact
    def __call__(self, x):
      c = self.config
      dt = jnp.dtype(c.dtype)
      kw = dict(dtype=dt, param_dtype=jnp.float32)
      x = jnp.asarray(x, dt)
      img = x
      k = c.space_to_depth
      if k > 1:
        b0, hh0, ww0, _ = x.shape
        x = x.reshape(b0, hh0 // k, k, ww0 // k, k, 3).transpose(0, 1, 3, 2, 4, 5)
        x = x.reshape(b0, hh0 // k, ww0 // k, k * k * 3)
      h = conv(c.channels[0], 3, name="conv_in", **kw)(x)
      for i, ch in enumerate(c.channels):
        for j in range(c.blocks):
          h = conv(ch, 3, name=f"stage{i}_conv{j}", **kw)(h)
          h = group_norm(c.groups, 1e-5, name=f"stage{i}_norm{j}", **kw)(h)
          h = nn.silu(h)
          h = nn.with_logical_constraint(h, IMAGE_AXES)
        if i + 1 < len(c.channels):
          h = conv(c.channels[i + 1], 3, stride=2, name=f"stage{i}_down", **kw)(h)
      b, hh, ww, ch = h.shape
      if hh % 4 or ww % 4:
        raise ValueError(f"judge feature map {hh}x{ww} is not divisible by 4: use an "
                         "image_size divisible by 4 * 2**(len(channels) - 1)")
      h = h.reshape(b, 4, hh // 4, 4, ww // 4, ch).mean(axis=(2, 4))   # (B, 4, 4, C)
      feats = h.reshape(b, -1)
      if c.mouth_branch:
        feats = jnp.concatenate([feats, self.mouth_features(img)], axis=-1)
      f = nn.silu(dense(c.hidden, ("embed", "mlp"), dt, "fc")(feats))
      f = nn.with_logical_constraint(f, ("batch", "mlp"))
      emo = dense(c.num_emotions, ("mlp", None), dt, "emotion_head")(f)
      par = dense(c.num_identity_params, ("mlp", None), dt, "params_head")(f)
      mouth = dense(1, ("mlp", None), dt, "mouth_head")(f)
      e = nn.silu(dense(c.hidden, ("mlp", "embed"), dt, "embed_fc")(f))
      e = dense(c.embed_dim, ("embed", None), dt, "embed_head")(e).astype(jnp.float32)
      e = e / jnp.sqrt(jnp.sum(e * e, axis=-1, keepdims=True) + 1e-12)
      return {
          "intensity_logits": emo.astype(jnp.float32),
          "intensities": jax.nn.sigmoid(emo.astype(jnp.float32)),
          "identity_params": jax.nn.sigmoid(par.astype(jnp.float32)),
          "mouth_open": jax.nn.sigmoid(mouth[:, 0].astype(jnp.float32)),
          "embedding": e,
      }

    def mouth_features(self, x):
      """Full-resolution features of the mouth and chin crop (MOUTH_BOX of the frame)."""
      c = self.config
      dt = jnp.dtype(c.dtype)
      kw = dict(dtype=dt, param_dtype=jnp.float32)
      s = x.shape[1]
      (r0, r1), (c0, c1) = [(int(round(a * s)), int(round(b * s))) for a, b in MOUTH_BOX]
      m = x[:, r0:r1, c0:c1]
      ch = c.mouth_branch
      m = nn.silu(group_norm(c.groups, 1e-5, name="mouth_norm0", **kw)(
          conv(ch, 3, name="mouth_conv0", **kw)(m)))
      m = nn.silu(group_norm(c.groups, 1e-5, name="mouth_norm1", **kw)(
          conv(2 * ch, 3, stride=2, name="mouth_conv1", **kw)(m)))
      m = nn.silu(group_norm(c.groups, 1e-5, name="mouth_norm2", **kw)(
          conv(2 * ch, 3, name="mouth_conv2", **kw)(m)))
      m = nn.with_logical_constraint(m, IMAGE_AXES)
      return m.reshape(m.shape[0], -1)

  return JudgeNet


def make_net(config: JudgeConfig):
  """The Flax module for ``config`` (a ``JudgeNet``)."""
  return _net_module()(config=config)


def init_params(config: JudgeConfig, seed: int = 0) -> dict:
  """Freshly initialised, unboxed float32 params of the judge."""
  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  net = make_net(config)
  x = jnp.zeros((1, config.image_size, config.image_size, 3), jnp.float32)
  return nn.meta.unbox(net.init(jax.random.PRNGKey(seed), x)["params"])


def _to_model_input(frames, image_size: int):
  """uint8 (N, H, W, 3) -> float32 in [-1, 1]; float inputs are taken as [-1, 1] already."""
  frames = np.asarray(frames)
  if frames.ndim == 3:
    frames = frames[None]
  if frames.ndim != 4 or frames.shape[-1] != 3:
    raise ValueError(f"judge frames must be (N, H, W, 3) RGB, got shape {frames.shape}")
  if frames.dtype == np.uint8:
    return frames.astype(np.float32) / 127.5 - 1.0
  return frames.astype(np.float32)


class Judge:
  """A trained judge: ``predict(frames)`` -> numpy dict; jitted, batched."""

  def __init__(self, config: JudgeConfig, params):
    import jax
    import jax.numpy as jnp
    self.config = config
    self.params = jax.tree.map(jnp.asarray, params)
    net = make_net(config)
    size = config.image_size

    def apply(p, x):
      if x.shape[1] != size or x.shape[2] != size:
        x = jax.image.resize(x, (x.shape[0], size, size, 3), method="linear", antialias=True)
      out = net.apply({"params": p}, x)
      return {k: out[k] for k in ("intensities", "embedding", "mouth_open", "identity_params")}

    self._apply = jax.jit(apply)

  def predict(self, frames, batch_size: int = 256) -> dict[str, np.ndarray]:
    """frames (N, H, W, 3) (or one (H, W, 3)): uint8 RGB, or float in [-1, 1]; any H, W
    (resized to the judge's resolution). Returns float32 numpy arrays: intensities (N, 8),
    embedding (N, E) (unit norm), mouth_open (N,), identity_params (N, P).

    Batches are padded to a power of two <= batch_size, so a few shapes compile once."""
    x = _to_model_input(frames, self.config.image_size)
    n = x.shape[0]
    outs = []
    for start in range(0, n, batch_size):
      chunk = x[start:start + batch_size]
      m = chunk.shape[0]
      padded = min(batch_size, 1 << (m - 1).bit_length())
      if padded > m:
        chunk = np.concatenate([chunk, np.zeros((padded - m,) + chunk.shape[1:], np.float32)])
      out = self._apply(self.params, chunk)
      outs.append({k: np.asarray(v)[:m] for k, v in out.items()})
    if not outs:
      e, p = self.config.embed_dim, self.config.num_identity_params
      return {"intensities": np.zeros((0, NUM_EMOTIONS), np.float32),
              "embedding": np.zeros((0, e), np.float32), "mouth_open": np.zeros((0,), np.float32),
              "identity_params": np.zeros((0, p), np.float32)}
    return {k: np.concatenate([o[k] for o in outs]).astype(np.float32) for k in outs[0]}


def save_judge(path: str, judge: Judge, extra: dict | None = None) -> None:
  """Writes ``path/params.safetensors`` and ``path/config.json`` ({"judge": config, ...extra})."""
  from emotalker_jax import checkpoints
  cfg = {CONFIG_KEY: judge.config.to_dict(), **(extra or {})}
  checkpoints.save_params(path, judge.params, cfg)


def load_judge(path: str) -> Judge:
  """Reads a judge written by ``save_judge`` / ``train``."""
  from emotalker_jax import checkpoints
  if not os.path.isdir(path):
    raise FileNotFoundError(
        f"judge directory {path} not found; train one with `python -m "
        f"emotalker_jax.evaluation.judge train --size tiny --out {path}`")
  params, cfg = checkpoints.load_params(path)
  if not cfg or CONFIG_KEY not in cfg:
    raise FileNotFoundError(f"{path}/config.json has no '{CONFIG_KEY}' section; is {path} a "
                            "judge directory (written by `... judge train`)?")
  config = JudgeConfig.from_dict(cfg[CONFIG_KEY])
  import jax
  abstract = jax.eval_shape(lambda: init_params(config))
  checkpoints.check_params_match(params, abstract, f"judge {path}")
  return Judge(config, params)


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
  from input_pipeline.synthetic import clips as clips_lib
  from input_pipeline.synthetic import face_model
  mouth = np.where(rng.random(n) < 0.3, 0.0, rng.random(n)).astype(np.float32)
  speaking = (mouth > 0).astype(np.float32)
  width = (rng.uniform(-1, 1, n) * speaking).astype(np.float32)
  rnd = (rng.random(n) * speaking).astype(np.float32)
  pose = (rng.uniform(-1, 1, (n, 4)) * clips_lib.POSE_AMPLITUDE[None]).astype(np.float32)
  blink = np.where(rng.random(n) < 0.2, rng.random(n), 0.0).astype(np.float32)
  gaze = rng.uniform(-0.6, 0.6, (n, 2)).astype(np.float32)
  return face_model.Motion(mouth_open=mouth, viseme_width=width, viseme_round=rnd, pose=pose,
                         blink=blink, gaze=gaze), mouth


def render_frames(identity_params: np.ndarray, states: np.ndarray, rng: np.random.Generator,
                  image_size: int) -> tuple[np.ndarray, np.ndarray]:
  """One identity, one frame per emotion state (n, 8), each with random motion.

  Returns frames (n, S, S, 3) uint8 and mouth_open (n,) float32."""
  from input_pipeline.synthetic import face_model, renderer
  motion, mouth = sample_motion(rng, states.shape[0])
  out = renderer.render(identity_params, face_model.expression_controls(states), motion,
                        image_size)
  return out["frames"], mouth


def build_pool(identity_ids, frames_per_identity: int, image_size: int, seed: int,
               synthetic_seed: int = 0, progress: bool = False) -> dict[str, np.ndarray]:
  """Renders F frames for each identity id (deterministic in seed and the ids).

  Returns frames (I, F, S, S, 3) uint8, emotion (I, F, 8), mouth_open (I, F),
  identity_params (I, P), identity (I,) int64."""
  from input_pipeline.synthetic import face_model
  ids = np.asarray(list(identity_ids), np.int64)
  n, f, s = len(ids), int(frames_per_identity), int(image_size)
  frames = np.zeros((n, f, s, s, 3), np.uint8)
  emotion = np.zeros((n, f, NUM_EMOTIONS), np.float32)
  mouth = np.zeros((n, f), np.float32)
  params = np.zeros((n, face_model.NUM_IDENTITY_PARAMS), np.float32)
  it = range(n)
  if progress:
    from tqdm import tqdm
    it = tqdm(it, desc="render judge training frames", unit="identity", file=sys.stderr)
  for i in it:
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x1DCE, int(ids[i])]))
    params[i] = face_model.sample_identity(int(ids[i]), synthetic_seed)
    emotion[i] = sample_emotion_states(rng, f)
    frames[i], mouth[i] = render_frames(params[i], emotion[i], rng, s)
  return {"frames": frames, "emotion": emotion, "mouth_open": mouth, "identity_params": params,
          "identity": ids}


# ------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------
def supcon_loss(emb, labels, temperature: float):
  """Supervised contrastive loss (Khosla et al. 2020, L_out) of unit embeddings (B, E) with
  integer labels (B,): mean over anchors of -mean_{positives} log softmax_{j != i}(z_i.z_j/t)."""
  import jax.numpy as jnp
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
  import jax
  import jax.numpy as jnp
  b = x.shape[0]
  k1, k2, k3, k4, k5 = jax.random.split(key, 5)
  k = jnp.array([0.25, 0.5, 0.25], x.dtype)
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
  blur = sum(k[i] * xp[:, i:i + x.shape[1], 1:-1] for i in range(3))
  bp = jnp.pad(blur, ((0, 0), (0, 0), (1, 1), (0, 0)), mode="edge")
  blur = sum(k[i] * bp[:, :, i:i + x.shape[2]] for i in range(3))
  a = jax.random.uniform(k1, (b, 1, 1, 1)) * (jax.random.uniform(k2, (b, 1, 1, 1)) < 1 / 3)
  x = x + a * (blur - x)
  sigma = jax.random.uniform(k3, (b, 1, 1, 1), maxval=0.06) * (
      jax.random.uniform(k4, (b, 1, 1, 1)) < 0.5)
  return jnp.clip(x + sigma * jax.random.normal(k5, x.shape), -1.0, 1.0)


def make_train_step(config: JudgeConfig, optimizer):
  """A jitted (params, opt_state, batch, key) -> (params, opt_state, metrics) step."""
  import jax
  import jax.numpy as jnp
  import optax
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
    l_par = jnp.sum((out["identity_params"] - batch["identity_params"]) ** 2 * pmask, -1).mean()
    l_par = l_par / jnp.sum(pmask)
    l_mouth = jnp.mean((out["mouth_open"] - batch["mouth_open"]) ** 2)
    l_con = supcon_loss(out["embedding"], batch["identity"], config.temperature)
    loss = (config.w_emotion * l_emo + config.w_emotion_ce * l_ce + config.w_params * l_par + config.w_mouth * l_mouth
            + config.w_contrastive * l_con)
    return loss, {"loss": loss, "emotion_bce": l_emo, "emotion_ce": l_ce, "params_mse": l_par,
                  "mouth_mse": l_mouth, "supcon": l_con}

  @jax.jit
  def step(params, opt_state, batch, key):
    grads, metrics = jax.grad(loss_fn, has_aux=True)(params, batch, key)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, metrics

  return step


def make_optimizer(config: JudgeConfig):
  import optax
  sched = optax.warmup_cosine_decay_schedule(
      0.0, config.learning_rate, config.warmup_steps, max(config.steps, config.warmup_steps + 1),
      end_value=config.learning_rate * 0.02)
  return optax.chain(optax.clip_by_global_norm(1.0),
                     optax.adamw(sched, weight_decay=config.weight_decay))


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
  return {"frames": pool["frames"][ii, ff], "emotion": pool["emotion"][ii, ff],
          "mouth_open": pool["mouth_open"][ii, ff],
          "identity_params": pool["identity_params"][ii],
          "identity": ii.astype(np.int32)}


def train_judge(config: JudgeConfig, progress: bool = True, log_every: int = 100,
                pool: dict | None = None) -> tuple[Judge, dict]:
  """Renders the training pool and trains a judge. Deterministic in ``config.seed``.

  Returns (judge, log) with log = {render_s, train_s, steps, history: [...]}."""
  import jax
  t0 = time.perf_counter()
  if pool is None:
    ids = range(JUDGE_TRAIN_ID_OFFSET, JUDGE_TRAIN_ID_OFFSET + config.num_identities)
    pool = build_pool(ids, config.frames_per_identity, config.image_size, config.seed,
                      config.synthetic_seed, progress=progress)
  t_render = time.perf_counter() - t0
  params = init_params(config, config.seed)
  opt, step = _compiled_step(config.replace(seed=0, synthetic_seed=0, num_identities=0,
                                            frames_per_identity=0))
  opt_state = opt.init(params)
  rng = np.random.default_rng(np.random.SeedSequence([config.seed, 0x57E9]))
  key = jax.random.PRNGKey(config.seed + 1)
  history = []
  it = range(config.steps)
  if progress:
    from tqdm import tqdm
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
  log = {"render_s": round(t_render, 2), "train_s": round(time.perf_counter() - t1, 2),
         "steps": config.steps, "pool_frames": int(np.prod(pool["frames"].shape[:2])),
         "history": history}
  return Judge(config, params), log


# ------------------------------------------------------------------------------------------
# Held-out evaluation
# ------------------------------------------------------------------------------------------
SWEEP_STRENGTHS = tuple(np.round(np.linspace(0.1, 1.0, 10), 4))


def test_clips(size: str, data_dir: str | None, synthetic_seed: int):
  """The records of synthetic_talk/<size> 'test' split: from TFDS when built under
  data_dir, else rendered in-process (same functions, identical clips). (records, source)."""
  from input_pipeline import synthetic_talk as st
  from input_pipeline.synthetic import clips as clips_lib
  from input_pipeline.synthetic import face_model
  cfg = st.make_config(size, seed=synthetic_seed)
  if data_dir:
    import tensorflow_datasets as tfds
    builder = st.get_builder(size, data_dir, seed=synthetic_seed)
    if builder.is_prepared():
      ds = tfds.data_source(f"synthetic_talk/{cfg.name}", data_dir=data_dir)["test"]
      return [ds[i] for i in range(len(ds))], f"tfds synthetic_talk/{cfg.name} test @ {data_dir}"
    raise FileNotFoundError(
        f"synthetic_talk/{cfg.name} is not built under --data-dir {data_dir}; build it with "
        f"`emotalker synth --out {data_dir} --size {size}` or omit --data-dir to render the "
        "test split in-process")
  recs = []
  for i in st.split_identities(cfg)["test"]:
    params = face_model.sample_identity(i, cfg.seed)
    for spec in cfg.clip_plan(i):
      recs.append(clips_lib.render_clip(spec, params, cfg.image_size, cfg.frames_per_clip,
                                        cfg.seed))
  return recs, f"rendered synthetic_talk/{cfg.name} test split (in-process)"


def _identity_figures(emb: np.ndarray, ident: np.ndarray, src_emb: dict) -> dict:
  """Mean cosine of each frame to its own identity's source portrait vs to the others'."""
  from emotalker_jax.evaluation import metrics
  same, diff = [], []
  for i, e in src_emb.items():
    sel = ident == i
    same.append(metrics.identity_similarity(emb[sel], e))
    for j, ej in src_emb.items():
      if j != i:
        diff.append(metrics.identity_similarity(emb[sel], ej))
  return {"same_id_cosine": float(np.mean(same)), "diff_id_cosine": float(np.mean(diff)),
          "same_id_cosine_min_identity": float(np.min(same)),
          "diff_id_cosine_max_pair": float(np.max(diff))}


def evaluate_judge(judge: Judge, size: str = "tiny", data_dir: str | None = None,
                   extra_identities: int = 32, sweep_frames: int = 4,
                   progress: bool = True) -> dict:
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
  """
  from emotalker_jax.evaluation import metrics
  from input_pipeline.synthetic import audio as audio_lib
  from input_pipeline.synthetic import face_model, renderer
  c = judge.config
  if c.image_size != DATA_SIZES.get(size, {}).get("image_size", c.image_size):
    print(f"note: judge resolution {c.image_size} differs from synthetic_talk/{size}; frames "
          "are resized", file=sys.stderr)
  out: dict[str, Any] = {}
  t0 = time.perf_counter()
  recs, source = test_clips(size, data_dir, c.synthetic_seed)
  frames = np.concatenate([r["frames"] for r in recs])
  t = recs[0]["frames"].shape[0]
  pred = judge.predict(frames)
  target = np.repeat(np.stack([r["emotion"] for r in recs]), t, axis=0)
  ident = np.repeat(np.array([int(r["identity"]) for r in recs]), t)
  acc = metrics.emotion_accuracy(pred["intensities"], target)
  src = {int(r["identity"]): pred["embedding"][k * t]
         for k, r in enumerate(recs) if bool(r["is_neutral_reference"])}
  idf = _identity_figures(pred["embedding"], ident, src)
  mouth_pred = pred["mouth_open"].reshape(len(recs), t)
  mouth_true = np.stack([r["mouth_open"] for r in recs])
  per_clip = [metrics.pearson(a, b) for a, b in zip(mouth_pred, mouth_true)]
  audio = [r["audio"] for r in recs]
  sync_pred = metrics.lip_sync_correlation(list(mouth_pred), audio, audio_lib.FPS,
                                           audio_lib.SAMPLE_RATE)
  sync_true = metrics.lip_sync_correlation(list(mouth_true), audio, audio_lib.FPS,
                                           audio_lib.SAMPLE_RATE)
  pmask = visual_param_mask(c.num_identity_params) > 0
  true_params = np.repeat(np.stack([r["identity_params"] for r in recs]), t, axis=0)
  out["test_split"] = {
      "source": source, "identities": len(src), "clips": len(recs), "frames": int(len(frames)),
      "emotion_top1": acc["top1"], "mixture_top2": acc["top2_mixed"],
      "emotion_overall": acc["overall"], "n_single": acc["n_single"], "n_mixed": acc["n_mixed"],
      "top1_per_emotion": acc["per_emotion"], "confusion": acc["confusion"],
      **idf,
      "mouth_pearson_vs_truth": float(np.nanmean(per_clip)),
      "mouth_pearson_vs_truth_min_clip": float(np.nanmin(per_clip)),
      "mouth_pearson_vs_truth_all_frames": metrics.pearson(mouth_pred.reshape(-1),
                                                           mouth_true.reshape(-1)),
      "lip_sync_pred": sync_pred["mean"], "lip_sync_true_mouth": sync_true["mean"],
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
  sw_frames = metrics.intensity_spearman(np.array(strengths), sp["intensities"],
                                         np.array(emo_ids), reduce="none")
  out["sweep"] = {"identities": len(test_ids), "strengths": list(map(float, SWEEP_STRENGTHS)),
                  "frames": int(len(strengths)), "spearman_mean": sw["mean"],
                  "spearman_per_emotion": sw["per_emotion"],
                  "spearman_frame_level_mean": sw_frames["mean"]}

  # Extra held-out identities.
  if extra_identities > 0:
    ids = range(JUDGE_HELDOUT_ID_OFFSET, JUDGE_HELDOUT_ID_OFFSET + extra_identities)
    pool = build_pool(ids, 16, c.image_size, c.seed + 7, c.synthetic_seed)
    still = []
    for u in pool["identity_params"]:
      still.append(renderer.render(u, np.zeros(face_model.NUM_CONTROLS, np.float32),
                                   face_model.Motion.still(1), c.image_size)["frames"][0])
    pe = judge.predict(pool["frames"].reshape((-1,) + pool["frames"].shape[2:]))
    ps = judge.predict(np.stack(still))
    n_id, f = pool["frames"].shape[:2]
    ident_x = np.repeat(np.arange(n_id), f)
    idx = _identity_figures(pe["embedding"], ident_x, dict(enumerate(ps["embedding"])))
    em = pool["emotion"].reshape(-1, NUM_EMOTIONS)
    acc_x = metrics.emotion_accuracy(pe["intensities"], em)
    out["extra_heldout"] = {
        "identities": n_id, "frames": int(n_id * f), **idx,
        "emotion_top1": acc_x["top1"], "mixture_top2": acc_x["top2_mixed"],
        "mouth_pearson_all_frames": metrics.pearson(pe["mouth_open"],
                                                    pool["mouth_open"].reshape(-1)),
        "identity_params_mae": float(np.abs(pe["identity_params"] - np.repeat(
            pool["identity_params"], f, axis=0))[:, pmask].mean()),
    }
  out["judge"] = {"image_size": c.image_size, "seed": c.seed, "synthetic_seed": c.synthetic_seed,
                  "train_identities": c.num_identities, "steps": c.steps}
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
# Command line
# ------------------------------------------------------------------------------------------
def _summary(figures: dict, meta: dict) -> str:
  from emotalker_jax.evaluation import metrics
  flat = {}
  for sec in ("test_split", "sweep", "extra_heldout"):
    for k, v in figures.get(sec, {}).items():
      if isinstance(v, (int, float)) and not isinstance(v, bool):
        flat[f"{sec}.{k}"] = v
  lines = [metrics.metrics_table_markdown(flat, meta)]
  lines.append("\n| target | value | required | met |\n|---|---|---|---|")
  for k, r in check_targets(figures).items():
    lines.append(f"| {k} | {r['value']:.4f} | {r['target']} | {'yes' if r['ok'] else 'NO'} |")
  if "test_split" in figures:
    lines.append("\nConfusion (test split, single-emotion frames; rows true, columns predicted):\n")
    lines.append(metrics.confusion_markdown(figures["test_split"]["confusion"]))
  return "\n".join(lines)


def _cmd_train(args) -> int:
  overrides = {}
  for k in ("steps", "num_identities", "seed"):
    v = getattr(args, k)
    if v is not None:
      overrides[k] = v
  config = get_config(args.size, **overrides)
  t0 = time.perf_counter()
  judge, log = train_judge(config, progress=not args.quiet)
  log["wall_s"] = round(time.perf_counter() - t0, 2)
  save_judge(args.out, judge, {"train_log": log})
  print(f"judge saved to {args.out}: render {log['render_s']} s, train {log['train_s']} s "
        f"({config.steps} steps), total {log['wall_s']} s", file=sys.stderr)
  if args.no_eval:
    return 0
  figures = evaluate_judge(judge, args.size, args.data_dir, progress=not args.quiet)
  return _report(figures, args, {"judge": args.out, "train_wall_s": log["wall_s"]})


def _report(figures, args, meta) -> int:
  j = figures.get("judge", {})
  meta = {**meta, "synthetic_talk": args.size, "judge image size": j.get("image_size"),
          "judge seed": j.get("seed"), "judge training identities": j.get("train_identities"),
          "judge steps": j.get("steps"),
          "test split": figures.get("test_split", {}).get("source")}
  figures["targets"] = check_targets(figures)
  path = args.json or os.path.join(getattr(args, "out", None) or args.judge, "heldout.json")
  with open(path, "w") as fh:
    json.dump(figures, fh, indent=2)
  print(_summary(figures, meta))
  print(f"\nfigures written to {path}", file=sys.stderr)
  return 0


def _cmd_evaluate(args) -> int:
  judge = load_judge(args.judge)
  figures = evaluate_judge(judge, args.size, args.data_dir,
                           extra_identities=args.extra_identities, progress=not args.quiet)
  args.out = None
  return _report(figures, args, {"judge": args.judge})


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="python -m emotalker_jax.evaluation.judge",
                              description=__doc__.split("\n")[0])
  sub = p.add_subparsers(dest="cmd", required=True)
  t = sub.add_parser("train", help="render frames, train a judge, evaluate it on held-out ids")
  t.add_argument("--size", default="tiny", choices=tuple(SIZES))
  t.add_argument("--out", required=True, help="directory for params.safetensors + config.json")
  t.add_argument("--data-dir", default=None,
                 help="TFDS data_dir with synthetic_talk built (test split for evaluation); "
                      "omitted: the test split is rendered in-process")
  t.add_argument("--seed", type=int, default=None)
  t.add_argument("--steps", type=int, default=None)
  t.add_argument("--num-identities", type=int, default=None)
  t.add_argument("--no-eval", action="store_true")
  t.add_argument("--json", default=None, help="held-out figures JSON (default OUT/heldout.json)")
  t.add_argument("--quiet", action="store_true")
  e = sub.add_parser("evaluate", help="held-out figures of a trained judge")
  e.add_argument("--judge", required=True)
  e.add_argument("--size", default="tiny", choices=tuple(DATA_SIZES))
  e.add_argument("--data-dir", default=None)
  e.add_argument("--extra-identities", type=int, default=32)
  e.add_argument("--json", default=None)
  e.add_argument("--quiet", action="store_true")
  args = p.parse_args(argv)
  try:
    return _cmd_train(args) if args.cmd == "train" else _cmd_evaluate(args)
  except (ValueError, FileNotFoundError) as err:
    print(f"error: {err}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
