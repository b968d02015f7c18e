"""The judge: a small CNN that reads faces of the synthetic benchmark and says what they show.

It measures generated frames where the ground truth is known (METHOD.md, "Metrics,
precisely"): emotion intensities, an identity embedding, the speech mouth opening and the
identity parameters of ``input_pipeline/synthetic``'s renderer. This module is the model
and its loading (what the evaluation uses); ``emotalker_jax.training.judge`` trains it and
measures it on held-out identities (``emotalker judge train|evaluate``).

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

Use:
  emotalker judge train --size tiny --out data/judge_tiny

  judge = load_judge("data/judge_tiny")
  out = judge.predict(frames)   # frames (N, H, W, 3) uint8, or float in [-1, 1]
  out["intensities"] (N, 8), out["embedding"] (N, E), out["mouth_open"] (N,),
  out["identity_params"] (N, P)  -- numpy float32

Mouth opening at 32x32 (1 px = 0.056 face units): the renderer opens the mouth by
0.13 * mouth_open face units, so most speech openings are thinner than a pixel. Since
synthetic_talk 1.1.0 the mouth interior fades in with opacity opening / 1 px below that,
which keeps small openings readable: the tiny judge's per-clip Pearson with the true
opening went from 0.864 (1.0.0, where a closed mouth was already a 1 px dark line) to 0.956.

``test_clips`` gives the held-out clips both the judge's own evaluation and the
generator's evaluation read: the ``test`` split of ``synthetic_talk/<size>``.
"""

from __future__ import annotations

import dataclasses
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import tensorflow_datasets as tfds

from emotalker_jax import checkpoints
from emotalker_jax.emotions import NUM_EMOTIONS
from emotalker_jax.models.layers import IMAGE_AXES, conv, group_norm
from input_pipeline import synthetic_talk as st
from input_pipeline.synthetic import challenging, face_model
from input_pipeline.synthetic import clips as clips_lib

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
  blocks: int = 1  # conv + GroupNorm + SiLU blocks per stage
  space_to_depth: int = 1  # stem: fold k x k pixel blocks into channels (lossless)
  mouth_branch: int = 0  # >0: channels of a full-resolution branch on the mouth crop
  groups: int = 8  # GroupNorm groups
  hidden: int = 256
  embed_dim: int = 64
  num_emotions: int = NUM_EMOTIONS
  num_identity_params: int = 26
  dtype: str = "float32"  # compute dtype; params are float32

  seed: int = 0
  synthetic_seed: int = 0  # the synthetic_talk seed (identity sampling, clip plans)
  num_identities: int = 1024  # training identities (reserved id range)
  # Share of them drawn as challenging identities (input_pipeline/synthetic/challenging.py:
  # colours, face shapes, glasses, beards and lighting the generator never trains on), so
  # that the judge can tell such faces apart; 0 for the demo's judge.
  challenging_fraction: float = 0.0
  frames_per_identity: int = 16
  steps: int = 1000
  batch_identities: int = 16  # G identities x F frames per batch
  batch_frames: int = 4
  learning_rate: float = 3e-3
  warmup_steps: int = 50
  weight_decay: float = 1e-4
  temperature: float = 0.1
  w_emotion: float = 1.0
  w_emotion_ce: float = 1.0  # softmax CE towards s / sum(s) (sharpens top-1 / top-2)
  w_params: float = 10.0
  w_mouth: float = 30.0
  w_contrastive: float = 0.3
  augment: bool = True

  def replace(self, **kw) -> JudgeConfig:
    return dataclasses.replace(self, **kw)

  def to_dict(self) -> dict:
    d = dataclasses.asdict(self)
    d["channels"] = list(self.channels)
    return d

  @classmethod
  def from_dict(cls, d: dict) -> JudgeConfig:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
      raise ValueError(
        f"judge config has unknown keys {unknown}; was it written by a "
        "newer version? Retrain with `emotalker judge train`"
      )
    d = dict(d)
    if "channels" in d:
      d["channels"] = tuple(int(c) for c in d["channels"])
    return cls(**d)


SIZES = {
  "tiny": JudgeConfig(image_size=32, channels=(32, 64, 128), space_to_depth=2, mouth_branch=16),
  "small": JudgeConfig(image_size=64, channels=(32, 64, 128), space_to_depth=4, mouth_branch=16),
}


def get_config(size: str = "tiny", **overrides) -> JudgeConfig:
  """The judge config for a synthetic_talk size ('tiny': 32x32, 'small': 64x64)."""
  if size not in SIZES:
    raise ValueError(f"unknown judge size {size!r}; choose from {', '.join(SIZES)}")
  return SIZES[size].replace(**overrides)


def visual_param_mask(num_params: int = 26) -> np.ndarray:
  """(P,) float32: 1 for identity parameters visible in a frame, 0 for audio-only ones."""
  names = face_model.IDENTITY_PARAM_NAMES
  if num_params != len(names):
    raise ValueError(
      f"judge num_identity_params={num_params} but the renderer has "
      f"{len(names)} identity parameters"
    )
  return np.array([0.0 if n == "voice_pitch" else 1.0 for n in names], np.float32)


# ------------------------------------------------------------------------------------------
# The network
# ------------------------------------------------------------------------------------------
def _dense(features, names, dt, name):
  """A float32-param Dense layer whose kernel (and bias) carry the logical axis ``names``."""
  return nn.Dense(
    features,
    dtype=dt,
    param_dtype=jnp.float32,
    name=name,
    kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), names),
    bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), names[-1:]),
  )


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
      raise ValueError(
        f"judge feature map {hh}x{ww} is not divisible by 4: use an "
        "image_size divisible by 4 * 2**(len(channels) - 1)"
      )
    h = h.reshape(b, 4, hh // 4, 4, ww // 4, ch).mean(axis=(2, 4))  # (B, 4, 4, C)
    feats = h.reshape(b, -1)
    if c.mouth_branch:
      feats = jnp.concatenate([feats, self.mouth_features(img)], axis=-1)
    f = nn.silu(_dense(c.hidden, ("embed", "mlp"), dt, "fc")(feats))
    f = nn.with_logical_constraint(f, ("batch", "mlp"))
    emo = _dense(c.num_emotions, ("mlp", None), dt, "emotion_head")(f)
    par = _dense(c.num_identity_params, ("mlp", None), dt, "params_head")(f)
    mouth = _dense(1, ("mlp", None), dt, "mouth_head")(f)
    e = nn.silu(_dense(c.hidden, ("mlp", "embed"), dt, "embed_fc")(f))
    e = _dense(c.embed_dim, ("embed", None), dt, "embed_head")(e).astype(jnp.float32)
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
    m = nn.silu(
      group_norm(c.groups, 1e-5, name="mouth_norm0", **kw)(conv(ch, 3, name="mouth_conv0", **kw)(m))
    )
    m = nn.silu(
      group_norm(c.groups, 1e-5, name="mouth_norm1", **kw)(
        conv(2 * ch, 3, stride=2, name="mouth_conv1", **kw)(m)
      )
    )
    m = nn.silu(
      group_norm(c.groups, 1e-5, name="mouth_norm2", **kw)(
        conv(2 * ch, 3, name="mouth_conv2", **kw)(m)
      )
    )
    m = nn.with_logical_constraint(m, IMAGE_AXES)
    return m.reshape(m.shape[0], -1)


def make_net(config: JudgeConfig):
  """The Flax module for ``config`` (a ``JudgeNet``)."""
  return JudgeNet(config=config)


def init_params(config: JudgeConfig, seed: int = 0) -> dict:
  """Freshly initialised, unboxed float32 params of the judge."""
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
      chunk = x[start : start + batch_size]
      m = chunk.shape[0]
      padded = min(batch_size, 1 << (m - 1).bit_length())
      if padded > m:
        chunk = np.concatenate([chunk, np.zeros((padded - m,) + chunk.shape[1:], np.float32)])
      out = self._apply(self.params, chunk)
      outs.append({k: np.asarray(v)[:m] for k, v in out.items()})
    if not outs:
      e, p = self.config.embed_dim, self.config.num_identity_params
      return {
        "intensities": np.zeros((0, NUM_EMOTIONS), np.float32),
        "embedding": np.zeros((0, e), np.float32),
        "mouth_open": np.zeros((0,), np.float32),
        "identity_params": np.zeros((0, p), np.float32),
      }
    return {k: np.concatenate([o[k] for o in outs]).astype(np.float32) for k in outs[0]}


def save_judge(path: str, judge: Judge, extra: dict | None = None) -> None:
  """Writes ``path/params.safetensors`` and ``path/config.json`` ({"judge": config, ...extra})."""
  cfg = {CONFIG_KEY: judge.config.to_dict(), **(extra or {})}
  checkpoints.save_params(path, judge.params, cfg)


def load_judge(path: str) -> Judge:
  """Reads a judge written by ``save_judge`` / ``train``."""
  if not os.path.isdir(path):
    raise FileNotFoundError(
      f"judge directory {path} not found; train one with `emotalker judge train "
      f"--size tiny --out {path}`"
    )
  params, cfg = checkpoints.load_params(path)
  if not cfg or CONFIG_KEY not in cfg:
    raise FileNotFoundError(
      f"{path}/config.json has no '{CONFIG_KEY}' section; is {path} a "
      "judge directory (written by `... judge train`)?"
    )
  config = JudgeConfig.from_dict(cfg[CONFIG_KEY])
  abstract = jax.eval_shape(lambda: init_params(config))
  checkpoints.check_params_match(params, abstract, f"judge {path}")
  return Judge(config, params)


# ------------------------------------------------------------------------------------------
# Held-out clips
# ------------------------------------------------------------------------------------------
def test_clips(
  size: str,
  data_dir: str | None,
  synthetic_seed: int,
  split: str = "test",
  num_identities: int | None = None,
):
  """The records of synthetic_talk/<size>'s held-out identities: split 'test' from TFDS
  when built under data_dir, else rendered in-process (same functions, identical clips);
  'challenging' / 'challenging_dev' (``input_pipeline/synthetic/challenging.py``: identities
  outside the training distribution, with size's clip plan) always rendered in-process.
  ``num_identities``: render only the first N identities of a challenging split (None: all).
  (records, source)."""
  # synthetic_talk imports TFDS, slow to import: only the callers of test_clips pay for it.
  cfg = st.make_config(size, seed=synthetic_seed)
  if split in challenging.SPLITS:
    ids = challenging.split_identities(split)[:num_identities]
    recs = _render_split(cfg, ids, lambda i: challenging.sample_challenging(i, cfg.seed)[0])
    return recs, f"rendered synthetic_talk/{cfg.name} {split} split (in-process)"
  if split != "test":
    raise ValueError(
      f"unknown synthetic split {split!r}: use 'test' or one of {sorted(challenging.SPLITS)}"
    )
  if data_dir:
    builder = st.get_builder(size, data_dir, seed=synthetic_seed)
    if builder.is_prepared():
      ds = tfds.data_source(f"synthetic_talk/{cfg.name}", data_dir=data_dir)["test"]
      return [ds[i] for i in range(len(ds))], f"tfds synthetic_talk/{cfg.name} test @ {data_dir}"
    raise FileNotFoundError(
      f"synthetic_talk/{cfg.name} is not built under --data-dir {data_dir}; build it with "
      f"`emotalker synth --out {data_dir} --size {size}` or omit --data-dir to render the "
      "test split in-process"
    )
  ids = st.split_identities(cfg)["test"]
  recs = _render_split(cfg, ids, lambda i: face_model.sample_identity(i, cfg.seed))
  return recs, f"rendered synthetic_talk/{cfg.name} test split (in-process)"


def _render_split(cfg, identity_ids, params_of) -> list[dict]:
  """Every clip of cfg's clip plan for each identity id, rendered with params_of(id)."""
  recs = []
  for i in identity_ids:
    params = params_of(i)
    for spec in cfg.clip_plan(i):
      recs.append(
        clips_lib.render_clip(spec, params, cfg.image_size, cfg.frames_per_clip, cfg.seed)
      )
  return recs
