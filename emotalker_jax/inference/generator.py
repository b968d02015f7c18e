"""The Generator: a trained EmoTalker checkpoint + a portrait + audio + an emotion -> frames.

``load_generator(DIR)`` reads a training workdir (``emotalker train --workdir DIR``; DIR or
DIR/checkpoints), restores only what inference needs (the EMA parameters of the latest
step, by default), the frozen autoencoder (``config.train.autoencoder_checkpoint``, or the
same random init the training run used when that is empty) and the text encoder
(``config.text``), and returns a ``Generator``.

``Generator.stream`` / ``Generator.generate(portrait, audio, prompt | intensities, ...)``
follow METHOD.md:

1. x_ref = the portrait (S, S, 3) in [-1, 1]; x_mask = x_ref with the face region blanked
   (``config.data.mask``: 'face' or 'lower_face' of the face mask, filled with 0 as in
   training). Spatial condition y = [E(x_mask); E(x_ref)] (1, h, w, 2C); z_src = E(x_ref)
   (``encode_source``).
2. Source condition c_src (our choice, the paper is silent): the *explicit* intensity
   vector one-hot neutral and the audio window of **silence** (a still photo has no sound;
   a closed, neutral mouth is what the model saw with silent windows). DDIM inversion of
   z_src under (y, c_src) (eq. 4, ``invert_source`` -> ``sampler.invert_source``) gives Z_T
   and the trajectory, once per clip; the Generator keeps the last ``MAX_CACHED_INVERSIONS``
   inversions, keyed by the masked and reference portrait bytes and the sampler's steps /
   spacing / iterations, so the same portrait under another prompt or audio is not
   inverted again. ``sampler.start_latent`` turns Z_T into the start (``constraint.init=
   'noise'``: N(0, I) noise drawn from the seed).
3. Emotion tokens: from the prompt (text encoder -> EIB, ``EmoTalker.text_emotion``) or
   from explicit intensities (``explicit_emotion``), built from the intensities after the
   sampler's calibration (``config.sampler.intensity_gamma``, 1 = none; ``load_generator``
   takes it from the workdir's calibration.json, written by ``emotalker calibrate``, when it
   was measured on the restored step); the unconditional branch of
   classifier-free guidance uses the learned null set (``null_emotion``). Audio tokens
   come from each frame's log-mel window (25 fps: N = floor(duration * 25) frames), in
   both branches.
4. The frames are sampled in chunks of a fixed size (``batch_frames`` rounded up to a
   multiple of the devices on the mesh's batch axes; the last chunk padded by repeating
   its last frame), every chunk starting from the shared start latent and constrained
   toward the shared trajectory (eqs. 5, 6, ``sample_chunk`` -> ``sampler.sample_frames``),
   then decoded (``decode_frames``, in the same compiled function). One compiled function
   serves every chunk of every clip of the same portrait size and sampler settings; the
   chunk's frames are sharded over the devices (NamedSharding on the batch axis), the
   parameters laid out by the config's logical axis rules. ``Generator.stream`` yields each
   chunk's frames as soon as it is fetched (one more chunk in flight), so a clip of any
   length is written in bounded memory; ``Generator.generate`` collects them.

The sampling path is the one of ``sampler.generate_latents`` (``invert_source`` ->
``start_latent`` -> ``sample_frames``), split here so a clip sampled in k chunks is
inverted once, not k times.

Compiled functions belong to their Generator (``Generator._compiled``): each pure function
below is compiled once per generator instance, shape and static sampler setting.

Randomness: ``seed`` -> key; one split for the init noise (init='noise'), one for the
per-chunk DDIM noise (eta > 0: chunk i uses fold_in(key, i), so with eta > 0 the output
depends on ``batch_frames``). With eta = 0 and init='inversion' the result does not depend
on the seed at all. The same inputs, settings and device count give the same bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
import dataclasses
import functools
import hashlib
import logging
import os
import time
from typing import Any
import warnings

from flax import linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

from emotalker_jax import checkpoints, parallel
from emotalker_jax.audio import features_from_config, is_silent
from emotalker_jax.diffusion import compose, sampler
from emotalker_jax.diffusion import schedule as sched
from emotalker_jax.emotions import EMOTION_INDEX, EMOTIONS, NUM_EMOTIONS, intensities_to_dict
from emotalker_jax.fed import NEUTRAL_DEFAULT
from emotalker_jax.inference.inputs import DEFAULT_MAX_AUDIO_SECONDS, centre_face_mask, check_audio
from emotalker_jax.models.autoencoder import build_autoencoder, decode_latent, encode_to_latent
from emotalker_jax.models.eib import calibrate_intensities, no_emotion_content
from emotalker_jax.models.emotalker import EmoTalker, init_emotalker
from emotalker_jax.models.text_encoder import load_text_encoder
from input_pipeline.pipeline import mask_region

log = logging.getLogger(__name__)

MAX_CACHED_INVERSIONS = 8  # per Generator: (portrait, mask, steps, spacing) -> inversion
BATCH_AXES = ("data", "fsdp")  # the mesh axes the frames of a chunk are split over


# ---------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------
def _inference_mesh(config, devices=None):
  """The config's mesh on these devices; when it does not fit (a checkpoint trained on a
  different machine), a data-parallel mesh over all of them (parameters replicated)."""
  try:
    return parallel.create_mesh(config.mesh, devices)
  except ValueError as e:
    log.info("config.mesh does not fit these devices (%s): using a data-parallel mesh", e)
    return parallel.create_mesh({"data": -1, "fsdp": 1, "tensor": 1}, devices)


def load_generator(
  checkpoint_dir: str | os.PathLike,
  config_overrides: Sequence[str] = (),
  use_ema: bool = True,
  step: int | None = None,
  devices=None,
  text=None,
  judge: str | None = None,
) -> Generator:
  """A ``Generator`` from a training workdir (or its checkpoints/ folder), local or
  ``gs://`` (passed as it is to ``emotalker_jax.checkpoints``, which reads it).

  Restores only ``ema_params`` (or ``params`` with use_ema=False) and ``step`` of the
  latest (or given) step, against an abstract target built from the saved config by
  ``jax.eval_shape`` and laid out on the inference mesh by the config's logical axis
  rules. ``config_overrides``: ``--config.a.b=value`` strings applied to the saved config
  (sampler knobs, mesh, ...). ``devices``: the devices to use (default all).
  ``text``: an already loaded TextEncoder to reuse. ``judge``: the judge folder the
  generator will be evaluated with (a calibration.json measured with another is refused).

  Raises FileNotFoundError naming the directory (and how to make a checkpoint) when it is
  missing or holds no checkpoint; ValueError when the weights do not fit the config.
  """
  config, folder, step = checkpoints.load_checkpoint_config(
    checkpoint_dir, config_overrides, step, use_ema=use_ema, judge=judge
  )
  calibration = None
  if not any("sampler.intensity_gamma" in o for o in config_overrides):
    with warnings.catch_warnings():  # load_checkpoint_config has warned already
      warnings.simplefilter("ignore")
      calibration = checkpoints.read_calibration(
        folder,
        step,
        params="ema" if use_ema else "raw",
        steps=int(config.sampler.steps),
        guidance=float(config.sampler.guidance),
        judge=judge,
      )
  if text is None:
    text = load_text_encoder(
      config.text.path or None, kind=config.text.encoder, max_length=int(config.text.max_length)
    )
  model = EmoTalker(config)
  mesh = _inference_mesh(config, devices)
  rules = parallel.rules_from_config(config)
  boxed = jax.eval_shape(lambda r: init_emotalker(model, r, text.hidden_size), jax.random.key(0))
  shardings = parallel.fit_shardings(
    nn.meta.unbox(boxed), parallel.logical_shardings(boxed, mesh, rules)
  )
  abstract = jax.tree.map(
    lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), nn.meta.unbox(boxed), shardings
  )
  params, restored_step = checkpoints.restore_params(
    folder,
    step,
    abstract,
    mesh,
    use_ema=use_ema,
    source=f"(with the overrides {list(config_overrides)})",
  )
  vae = build_autoencoder(config)
  _, r_vae = jax.random.split(jax.random.key(int(config.seed)))  # as build_trainer
  vae_params = checkpoints.load_frozen_autoencoder(config, vae, r_vae)
  rep = parallel.replicated(mesh)
  return Generator(
    config=config,
    mesh=mesh,
    rules=rules,
    model=model,
    params=params,
    vae=vae,
    vae_params=jax.device_put(vae_params, rep),
    text=text,
    text_params=jax.device_put(text.params, rep),
    schedule=jax.device_put(sched.from_config(config.diffusion), rep),
    step=restored_step,
    checkpoint_dir=os.fspath(folder),  # a str (JSON summaries), local or gs://
    use_ema=use_ema,
    calibration=calibration,
  )


# ---------------------------------------------------------------------------------------
# The pure functions a Generator compiles (model / modules bound with functools.partial)
# ---------------------------------------------------------------------------------------
def _denoiser(model, params):
  """``denoise(z_t (B, h, w, C), t (B,), cond {'spatial', 'context'}) -> eps | v``."""

  def denoise(z, t, cond):
    return model.apply({"params": params}, z, t, cond["spatial"], cond["context"], method="denoise")

  return denoise


def emotion_tokens(model, text_module, params, text_params, ids, mask, s, *, use_text, gamma):
  """ids, mask (1, L) int32 token ids (use_text) or s (1, 8) intensities -> (tokens
  (1, N, D), intensities (1, 8) before calibration, null tokens (1, N, D))."""
  if use_text:
    out = text_module.apply({"params": text_params}, ids, mask)
    hidden = (out[0] if isinstance(out, tuple) else out).astype(jnp.float32)
    tokens, s = model.apply({"params": params}, hidden, mask, gamma, method="text_emotion")
  else:
    tokens = model.apply({"params": params}, s, gamma, method="explicit_emotion")
  null = model.apply({"params": params}, 1, method="null_emotion")
  return tokens, s, null


def component_tokens(model, params, r, tokens):
  """Composed guidance's component token sets: r (K, 8) restricted intensities (already
  calibrated), tokens (1, 8 + T, D) the prompt's -> (K, 8 + T, D): the emotion tokens of
  each row (``explicit_emotion``), followed by the prompt's T pooled-text tokens (the same
  in every component; for explicit intensities they are the no-text tokens)."""
  k, n = r.shape
  emo = model.apply({"params": params}, r, method="explicit_emotion")[:, :n]
  text = jnp.broadcast_to(tokens[:, n:], (k, tokens.shape[1] - n, tokens.shape[2]))
  return jnp.concatenate([emo.astype(tokens.dtype), text], axis=1)


def encode_source(model, vae, params, vae_params, x, mel_src, s_src):
  """x (2, S, S, 3) in [-1, 1] = [x_mask; x_ref] -> spatial (1, h, w, 2C), z_src
  (1, h, w, C), source context (1, N, D) (explicit intensities s_src (1, 8), audio
  window mel_src (1, W, n_mels))."""
  z = encode_to_latent(vae, vae_params, x)
  spatial = jnp.concatenate([z[:1], z[1:]], axis=-1)
  emo = model.apply({"params": params}, s_src, method="explicit_emotion")
  ctx = model.apply({"params": params}, mel_src, emo, method="context")
  return spatial, z[1:], ctx


def invert_source(model, params, schedule, z_src, cond_src, *, steps, spacing, iters):
  """z_src (1, h, w, C) under cond_src -> (Z_T (1, h, w, C), trajectory (steps, 1, h, w,
  C)) (``sampler.invert_source``)."""
  return sampler.invert_source(
    _denoiser(model, params),
    schedule,
    z_src,
    cond_src,
    steps=steps,
    spacing=spacing,
    inversion_iters=iters,
  )


def decode_frames(vae, vae_params, z0):
  """Latents (B, h, w, C) -> frames (B, S, S, 3) uint8."""
  x = decode_latent(vae, vae_params, z0)
  return jnp.clip(jnp.round((x + 1.0) * 127.5), 0, 255).astype(jnp.uint8)


def sample_chunk(
  model,
  vae,
  mesh,
  params,
  vae_params,
  schedule,
  z_start,
  traj,
  spatial,
  mel,
  tokens,
  null,
  mask,
  rng,
  guidance,
  constraint,
  components=None,
  *,
  steps,
  eta,
  spacing,
):
  """One chunk of B frames: context, guided constrained DDIM from the shared start latent
  (``sampler.sample_frames``), decode. mel (B, W, n_mels) sharded on the batch; the rest
  replicated. components: None (joint guidance) or the composed guidance's K token sets
  (K, N, D) (``component_tokens``), each given the chunk's audio tokens.
  -> (B, S, S, 3) uint8, sharded on the batch."""
  p = {"params": params}
  B = mel.shape[0]
  bsh = NamedSharding(mesh, P(tuple(a for a in BATCH_AXES if a in mesh.shape)))
  ctx = model.apply(p, mel, tokens, method="context")
  ctx_null = model.apply(p, mel, null, method="context")
  cond = {"spatial": jnp.broadcast_to(spatial, (B,) + spatial.shape[1:]), "context": ctx}
  uncond = {"spatial": spatial, "context": ctx_null}
  comp = None
  if components is not None:  # K is static (<= sampler.compose_max): a Python loop
    ctx_k = [model.apply(p, mel, c[None], method="context") for c in components]
    comp = {"spatial": spatial[None], "context": jnp.stack(ctx_k)}
  z0 = sampler.sample_frames(
    _denoiser(model, params),
    schedule,
    z_start,
    traj,
    cond,
    steps=steps,
    eta=eta,
    rng=rng,
    spacing=spacing,
    guidance=guidance,
    uncond=uncond,
    constraint=constraint,
    mask=mask,
    batch_sharding=bsh,
    components=comp,
  )
  return jax.lax.with_sharding_constraint(decode_frames(vae, vae_params, z0), bsh)


def _round_up(x: int, m: int) -> int:
  return -(-int(x) // int(m)) * int(m)


# ---------------------------------------------------------------------------------------
# The generator
# ---------------------------------------------------------------------------------------
@dataclasses.dataclass
class Generator:
  """A loaded checkpoint ready to generate (see the module docstring). Build it with
  ``load_generator``. Its compiled functions are cached on the instance, per shape and
  static sampler setting (steps, eta, spacing, inversion_iters, constraint schedule /
  until / init); guidance, constraint strength and the parameters are arguments (sweeping
  them does not recompile)."""

  config: Any
  mesh: Any
  rules: Any
  model: Any
  params: Any
  vae: Any
  vae_params: Any
  text: Any
  text_params: Any
  schedule: Any
  step: int
  checkpoint_dir: str
  use_ema: bool = True
  # The calibration.json record config.sampler.intensity_gamma came from (None: none): a
  # generate() call with other DDIM steps or guidance samples uncalibrated, with a warning.
  calibration: dict | None = None
  last_compile_s: float = 0.0
  # (name, static values, argument structure / shapes / dtypes / shardings) -> executable
  _compiled: dict = dataclasses.field(default_factory=dict, repr=False)
  # The source's latents and inversion (Z_T, trajectory) of the last few portraits: a clip
  # in several calls (or one portrait under many prompts) is inverted once.
  _inversions: dict = dataclasses.field(default_factory=dict, repr=False)

  # ---- properties ----------------------------------------------------------------------
  @property
  def image_size(self) -> int:
    return int(self.config.data.image_size)

  @property
  def fps(self) -> float:
    return float(self.config.data.fps)

  @property
  def sample_rate(self) -> int:
    return int(self.config.data.sample_rate)

  @property
  def batch_devices(self) -> int:
    """Devices the frame batch is split over (mesh axes data x fsdp)."""
    return int(np.prod([self.mesh.shape[a] for a in BATCH_AXES if a in self.mesh.shape]))

  @property
  def intensity_gamma(self) -> float:
    """config.sampler.intensity_gamma (1.0 when the saved config predates it)."""
    return float(self.config.sampler.intensity_gamma)

  def chunk_size(self, batch_frames: int) -> int:
    """Frames per compiled chunk: ``batch_frames`` rounded up to a multiple of the devices."""
    if int(batch_frames) < 1:
      raise ValueError(f"batch_frames must be >= 1, got {batch_frames}")
    return _round_up(batch_frames, self.batch_devices)

  # ---- compiled pieces -----------------------------------------------------------------
  def _compile(self, name: str, fn: Callable, args: tuple, static: dict, rules: bool):
    """AOT-compiles ``fn(*args, **static)`` once per (name, static values, arg shapes /
    dtypes / shardings) on this generator; later calls with the same key reuse it."""
    leaves, tree = jax.tree.flatten(args)
    sig = tuple(
      (tuple(np.shape(x)), str(getattr(x, "dtype", type(x))), str(getattr(x, "sharding", "")))
      for x in leaves
    )
    key = (name, tuple(sorted(static.items())), tree, sig)
    hit = self._compiled.get(key)
    if hit is None:
      t0 = time.perf_counter()
      jitted = jax.jit(functools.partial(fn, **static))
      with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules if rules else ()):
        hit = jitted.lower(*args).compile()
      self._compiled[key] = hit
      self.last_compile_s += time.perf_counter() - t0
    return hit

  def _replicated(self):
    return NamedSharding(self.mesh, P())

  # ---- emotion -------------------------------------------------------------------------
  def emotion(
    self, prompt: str | None = None, intensities=None, intensity_gamma: float | None = None
  ):
    """Emotion tokens for a prompt or an explicit (8,) intensity vector.

    The tokens are built from the calibrated intensities (``models.eib.
    calibrate_intensities`` with intensity_gamma; None: ``self.intensity_gamma``).
    Returns (tokens (1, N, D), null tokens (1, N, D), intensities (8,) float32 numpy as
    given or as the EIB read them (before calibration), source 'prompt' | 'intensities' |
    'no_emotion_content': a prompt that names no emotion (``models.eib.no_emotion_content``)
    gets neutral intensities (``fed.NEUTRAL_DEFAULT``) and a warning).
    Raises ValueError for an empty prompt, both or neither given, intensities outside
    [0, 1] / of the wrong length, or intensity_gamma <= 0.
    """
    if (prompt is None) == (intensities is None):
      raise ValueError(
        "give exactly one of a prompt (--prompt TEXT) or intensities (--emotion happy=0.7,...)"
      )
    rep = self._replicated()
    if prompt is not None:
      if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(
          f"prompt {prompt!r} is empty; describe the emotion, e.g. "
          "--prompt 'a little sad and fearful'"
        )
      tok = self.text.tokenize([prompt])
      if bool(tok["truncated"][0]):
        warnings.warn(
          f"prompt is longer than {self.text.max_length} tokens; only its start "
          "is used (config.text.max_length)",
          stacklevel=2,
        )
      ids, mask = tok["input_ids"], tok["attention_mask"]
      s = np.zeros((1, NUM_EMOTIONS), np.float32)
      source = "prompt"
    else:
      s = np.asarray(intensities, np.float32).reshape(-1)
      if s.shape[0] != NUM_EMOTIONS or not np.all(np.isfinite(s)) or s.min() < 0 or s.max() > 1:
        raise ValueError(
          f"intensities must be {NUM_EMOTIONS} numbers in [0, 1] (MEAD order), "
          f"got {np.asarray(intensities).tolist()}"
        )
      s = s[None]
      ids = np.zeros((1, 2), np.int32)
      mask = np.ones((1, 2), np.int32)
      source = "intensities"
    gamma = float(self.intensity_gamma if intensity_gamma is None else intensity_gamma)
    if not gamma > 0:
      raise ValueError(f"intensity_gamma must be > 0 (1 = no calibration), got {gamma}")
    args = jax.device_put((self.params, self.text_params, ids, mask, s), rep)
    fn = self._compile(
      "emotion",
      functools.partial(emotion_tokens, self.model, self.text.module),
      args,
      {"use_text": source == "prompt", "gamma": gamma},
      rules=False,
    )
    tokens, s_used, null = jax.device_put(fn(*args), rep)
    s_used = np.asarray(jax.device_get(s_used), np.float32)[0]
    if source == "prompt" and no_emotion_content(s_used[None], [prompt])[0]:
      # As `emotalker emotion` does: a prompt that names no emotion is drawn neutral.
      warnings.warn(
        f"prompt {prompt!r} names no emotion; using neutral={NEUTRAL_DEFAULT}", stacklevel=2
      )
      neutral = np.zeros(NUM_EMOTIONS, np.float32)
      neutral[0] = NEUTRAL_DEFAULT
      return (*self.emotion(intensities=neutral, intensity_gamma=gamma)[:3], "no_emotion_content")
    return tokens, null, s_used, source

  def emotion_components(
    self, tokens, s_used, intensity_gamma: float = 1.0, min_intensity=None, max_components=None
  ):
    """Composed guidance's component token sets for the tokens ``emotion`` returned.

    The components are the active non-neutral emotions of s' = calibrate_intensities(
    s_used, gamma), the vector the tokens were built from (``compose.active_emotions``;
    None: config.sampler.compose_min_intensity / compose_max); component i's tokens are
    those of s' restricted to emotion i, with the prompt's pooled-text tokens kept
    (``component_tokens``). Returns (components (K, N, D) or None when K <= 1, i.e. joint
    guidance, the active emotions' indices in MEAD order, strongest first).
    """
    sc = self.config.sampler
    lo = float(sc.get("compose_min_intensity", 0.05) if min_intensity is None else min_intensity)
    top = int(sc.get("compose_max", 3) if max_components is None else max_components)
    s_cal = np.asarray(calibrate_intensities(np.asarray(s_used, np.float32), intensity_gamma))
    idx = compose.active_emotions(s_cal, lo, top)
    if len(idx) <= 1:
      return None, idx
    args = jax.device_put(
      (self.params, compose.restricted_intensities(s_cal, idx), tokens), self._replicated()
    )
    fn = self._compile(
      "components", functools.partial(component_tokens, self.model), args, {}, False
    )
    return jax.device_put(fn(*args), self._replicated()), idx

  def _gamma(self, intensity_gamma, steps: int, guidance: float) -> float:
    """The calibration exponent of a call: the argument, else the generator's, unless its
    calibration was measured with other DDIM steps / guidance (then 1, with a warning)."""
    gamma = float(self.intensity_gamma if intensity_gamma is None else intensity_gamma)
    if intensity_gamma is None and self.calibration is not None and gamma != 1.0:
      diff = checkpoints.calibration_mismatches(self.calibration, steps=steps, guidance=guidance)
      if diff:
        warnings.warn(
          f"the calibration (intensity_gamma {gamma:g}) was measured with other "
          f"settings: {'; '.join(diff)}; this call samples uncalibrated "
          "(intensity_gamma 1)",
          stacklevel=2,
        )
        gamma = 1.0
    return gamma

  # ---- the source and its inversion (cached) -------------------------------------------
  def _source(self, x_src: np.ndarray, steps: int, spacing: str, iters: int):
    """x_src (2, S, S, 3) = [x_mask; x_ref] -> (spatial, z_src, Z_T, trajectory, cached):
    the neutral, silent source condition inverted (or the cached inversion of the same
    portrait bytes and sampler settings)."""
    inv_key = (
      hashlib.sha1(x_src.tobytes()).hexdigest(),
      steps,
      spacing,
      iters,
      id(self.params),
      id(self.vae_params),
    )
    cached = self._inversions.get(inv_key)
    if cached is not None:
      return (*cached, True)
    rep = self._replicated()
    c = self.config
    mel_src = np.asarray(
      features_from_config(np.zeros(int(round(self.sample_rate / self.fps)), np.float32), 1, c)
    )
    s_src = np.zeros((1, NUM_EMOTIONS), np.float32)
    s_src[0, EMOTION_INDEX["neutral"]] = 1.0
    args = jax.device_put((self.params, self.vae_params, x_src, mel_src, s_src), rep)
    encode = self._compile(
      "source", functools.partial(encode_source, self.model, self.vae), args, {}, False
    )
    spatial, z_src, ctx_src = jax.device_put(encode(*args), rep)
    args = (self.params, self.schedule, z_src, {"spatial": spatial, "context": ctx_src})
    invert = self._compile(
      "invert",
      functools.partial(invert_source, self.model),
      args,
      {"steps": steps, "spacing": spacing, "iters": iters},
      False,
    )
    z_T, traj = jax.device_put(invert(*args), rep)
    while len(self._inversions) >= MAX_CACHED_INVERSIONS:
      self._inversions.pop(next(iter(self._inversions)))
    self._inversions[inv_key] = (spatial, z_src, z_T, traj)
    return spatial, z_src, z_T, traj, False

  # ---- public --------------------------------------------------------------------------
  def stream(
    self,
    portrait: np.ndarray,
    audio: np.ndarray,
    prompt: str | None = None,
    intensities=None,
    *,
    steps: int | None = None,
    guidance: float | None = None,
    eta: float | None = None,
    constraint=None,
    seed: int = 0,
    face_mask=None,
    batch_frames: int = 8,
    max_audio_seconds: float = DEFAULT_MAX_AUDIO_SECONDS,
    mask: str | None = None,
    progress: Callable[[int], None] | None = None,
    intensity_gamma: float | None = None,
    guidance_mode: str | None = None,
  ) -> FrameStream:
    """Talking-face frames for a prepared portrait and a waveform, chunk by chunk.

    Everything up to sampling happens in this call (validation, emotion tokens, the
    source's inversion, compiling), so bad inputs fail before any output is opened;
    iterating the returned ``FrameStream`` samples and decodes one chunk at a time and
    yields it, (B, S, S, 3) uint8 with B <= ``chunk_size`` (the last one shorter). At most
    one further chunk is in flight on the devices while the caller consumes a chunk, so a
    clip of any length holds O(chunk) frames.

    Args:
      portrait: (S, S, 3) uint8 RGB, S = config.data.image_size (``prepare_portrait``).
      audio: (L,) float32 in [-1, 1] at config.data.sample_rate (16 kHz).
      prompt / intensities: exactly one: a text prompt, or (8,) intensities in [0, 1].
      steps, guidance, eta: DDIM steps, CFG scale, DDIM eta (None: config.sampler.*).
      constraint: ``sampler.ConstraintConfig`` (None: from config.sampler.constraint).
      seed: int (see the module docstring for what it changes).
      face_mask: (S, S) {0, 1} face region (None: ``centre_face_mask``).
      batch_frames: frames per compiled chunk (rounded up to a multiple of the devices).
      mask: the region of the portrait to blank, 'face' | 'lower_face' (None:
        config.data.mask, what the model was trained with).
      progress: called with 0 once everything is compiled and sampling starts, then with
        the number of frames finished after each chunk.
      intensity_gamma: the emotion tokens see ``calibrate_intensities(s, gamma)`` (None:
        config.sampler.intensity_gamma, which ``load_generator`` takes from the
        checkpoint's calibration.json when there is one).
      guidance_mode: 'joint' (eq. 5) | 'composed' (one guidance term per active emotion,
        ``diffusion.compose``; a one-emotion vector samples as 'joint') (None:
        config.sampler.guidance_mode).
    Returns:
      a ``FrameStream`` of N = floor(duration * fps) frames; its ``info`` dict (intensities
      used, emotion source, sampler settings) gets its ``timing`` once the stream is spent.
    """
    t_start = time.perf_counter()
    self.last_compile_s = 0.0
    # ---- validate ----
    sc, S = self.config.sampler, self.image_size
    portrait = np.asarray(portrait)
    if portrait.shape != (S, S, 3) or portrait.dtype != np.uint8:
      raise ValueError(
        f"portrait must be ({S}, {S}, 3) uint8 (config.data.image_size), got "
        f"{portrait.shape} {portrait.dtype}; prepare it with prepare_portrait"
      )
    audio = np.asarray(audio, np.float32)
    n = check_audio(audio, self.sample_rate, self.fps, max_audio_seconds)
    silent = bool(is_silent(audio))
    if silent:
      warnings.warn(
        "the audio is silent (RMS below -60 dBFS): the frames are generated, but "
        "the audio condition carries no speech",
        stacklevel=2,
      )
    steps = int(sc.steps if steps is None else steps)
    guidance = float(sc.guidance if guidance is None else guidance)
    eta = float(sc.eta if eta is None else eta)
    if eta < 0:
      raise ValueError(f"eta must be >= 0, got {eta}")
    where = "sampler.guidance_mode" if guidance_mode is None else "guidance_mode"
    guidance_mode = compose.check_guidance_mode(
      str(sc.get("guidance_mode", "joint") if guidance_mode is None else guidance_mode), where
    )
    spacing, iters = str(sc.spacing), int(sc.inversion_iters)
    constraint = (
      sampler.ConstraintConfig.from_config(sc.constraint) if constraint is None else constraint
    ).validate()
    sampler.ddim_timesteps(self.schedule.num_train_timesteps, steps, spacing)  # validates
    bsz = self.chunk_size(batch_frames)
    face = (
      np.asarray(centre_face_mask(S) if face_mask is None else face_mask, np.float32) > 0.5
    ).astype(np.float32)
    if face.shape != (S, S):
      raise ValueError(f"face mask must be ({S}, {S}), got {face.shape}")
    # ---- emotion, source inversion (cached), start latent ----
    gamma = self._gamma(intensity_gamma, steps, guidance)
    tokens, null, s_used, source = self.emotion(prompt, intensities, gamma)
    components, active = None, []
    if guidance_mode == "composed":
      components, active = self.emotion_components(tokens, s_used, gamma)
    region = mask_region(face, str(self.config.data.mask if mask is None else mask))
    x_ref = portrait.astype(np.float32) / 127.5 - 1.0
    x_mask = np.where(region[..., None] > 0, np.float32(0.0), x_ref)
    spatial, z_src, z_T, traj, cached = self._source(
      np.stack([x_mask, x_ref]), steps, spacing, iters
    )
    k_init, k_sample = jax.random.split(jax.random.key(int(seed) % (2**32)))
    rep = self._replicated()
    z_start = jax.device_put(sampler.start_latent(z_T, constraint, k_init), rep)
    latent_mask = jax.device_put(
      np.asarray(
        sampler.latent_mask_from_face_mask(face, z_src.shape[1:3], float(constraint.m_face))
      )[None],
      rep,
    )
    # ---- the chunk function (compiled now), the chunks (when iterated) ----
    chunk_fn, chunk_args = self._chunk_program(
      np.asarray(features_from_config(audio, n, self.config)),
      bsz,
      k_sample,
      (self.params, self.vae_params, self.schedule, z_start, traj, spatial),
      (tokens, null, latent_mask, components),
      guidance,
      constraint,
      {"steps": steps, "eta": eta, "spacing": spacing},
    )
    info = {
      "num_frames": n,
      "fps": self.fps,
      "duration_s": round(audio.shape[0] / self.sample_rate, 4),
      "emotion_source": source,
      "prompt": prompt,
      "intensities": intensities_to_dict(s_used),
      "intensity_gamma": gamma,
      # what the emotion tokens were built from: calibrate_intensities(s, gamma)
      "intensities_calibrated": intensities_to_dict(
        np.asarray(calibrate_intensities(s_used, gamma), np.float32)
      ),
      "seed": int(seed),
      "steps": steps,
      "guidance": guidance,
      "guidance_mode": guidance_mode,
      # composed: the emotions guided separately (fewer than 2: sampled as joint)
      "compose_emotions": [EMOTIONS[i] for i in active],
      "eta": eta,
      "spacing": spacing,
      "inversion_iters": iters,
      "inversion_cached": cached,
      "constraint": {
        "strength": float(constraint.strength),
        "m_face": float(constraint.m_face),
        "schedule": constraint.schedule,
        "until": float(constraint.until),
        "init": constraint.init,
        "init_noise": float(constraint.init_noise),
      },
      "batch_frames": bsz,
      "devices": self.batch_devices,
      "audio_silent": silent,
      "checkpoint": self.checkpoint_dir,
      "checkpoint_step": self.step,
      "params": "ema" if self.use_ema else "raw",
    }
    compile_s, t_prep = self.last_compile_s, time.perf_counter()
    chunks = self._run_chunks(chunk_fn, chunk_args, n, bsz, progress)

    def timed():
      # Only the time spent in here counts, not the caller's between chunks.
      busy = 0.0
      t0 = time.perf_counter()
      for c in chunks:
        busy += time.perf_counter() - t0
        yield c
        t0 = time.perf_counter()
      busy += time.perf_counter() - t0
      total = t_prep - t_start + busy
      info["timing"] = {
        "compile_s": round(compile_s, 3),
        "prepare_s": round(t_prep - t_start, 3),
        "sample_s": round(busy, 3),
        "total_s": round(total, 3),
        "frames_per_s": round(n / max(busy, 1e-9), 3),
        "frames_per_s_without_compile": round(n / max(total - compile_s, 1e-9), 3),
      }

    return FrameStream(n, bsz, info, timed())

  def generate(self, portrait: np.ndarray, audio: np.ndarray, prompt=None, intensities=None, **kw):
    """``stream`` collected: (frames (N, S, S, 3) uint8, info dict with ``timing``); the
    arguments are ``stream``'s. For long clips prefer ``stream`` (bounded memory)."""
    st = self.stream(portrait, audio, prompt, intensities, **kw)
    S = self.image_size
    frames = np.empty((st.num_frames, S, S, 3), np.uint8)
    i = 0
    for c in st:
      frames[i : i + len(c)] = c
      i += len(c)
    return frames, st.info

  def _chunk_program(
    self,
    mel: np.ndarray,
    bsz: int,
    k_sample,
    shared: tuple,
    emotion: tuple,
    guidance: float,
    constraint,
    static: dict,
  ):
    """The compiled ``sample_chunk`` and ``chunk_args(i, start, stop)``, the arguments of
    chunk i = frames [start, stop) of mel (N, W, n_mels) (its DDIM noise from
    fold_in(k_sample, i); a short last chunk padded by repeating its last window).
    shared = (params, vae_params, schedule, z_start, traj, spatial), emotion = (tokens,
    null, latent mask, components or None)."""
    n = mel.shape[0]
    rep = self._replicated()
    bsh = NamedSharding(
      self.mesh, P(tuple(a for a in BATCH_AXES if a in self.mesh.shape), None, None)
    )
    g = jax.device_put(jnp.float32(guidance), rep)
    constraint_d = jax.device_put(constraint, rep)
    tokens, null, latent_mask, components = emotion

    def chunk_args(i, start, stop):
      m_chunk = mel[start:stop]
      if stop - start < bsz:
        m_chunk = np.concatenate([m_chunk, np.repeat(m_chunk[-1:], bsz - (stop - start), 0)])
      rng = jax.device_put(jax.random.fold_in(k_sample, i), rep)
      return (
        *shared,
        jax.device_put(m_chunk, bsh),
        tokens,
        null,
        latent_mask,
        rng,
        g,
        constraint_d,
        components,
      )

    chunk_fn = self._compile(
      "chunk",
      functools.partial(sample_chunk, self.model, self.vae, self.mesh),
      chunk_args(0, 0, min(n, bsz)),
      static,
      True,
    )
    return chunk_fn, chunk_args

  @staticmethod
  def _run_chunks(chunk_fn, chunk_args, n: int, bsz: int, progress) -> Iterator[np.ndarray]:
    """Yields the frames of each chunk, (B, S, S, 3) uint8. Chunk i+1 is dispatched before
    chunk i is fetched (the devices work while the caller consumes chunk i); nothing runs
    further ahead."""
    if progress is not None:
      progress(0)  # sampling starts now (everything is compiled)
    pending = None
    for i, start in enumerate(range(0, n, bsz)):
      stop = min(n, start + bsz)
      out = chunk_fn(*chunk_args(i, start, stop))
      if pending is not None:
        yield _fetch(pending, progress)
      pending = (start, stop, out)
    yield _fetch(pending, progress)


def _fetch(item, progress) -> np.ndarray:
  start, stop, out = item
  frames = np.asarray(jax.device_get(out))[: stop - start]
  if progress is not None:
    progress(stop - start)
  return frames


@dataclasses.dataclass
class FrameStream:
  """The frames of one ``Generator.stream`` call: iterate once for (B, S, S, 3) uint8
  chunks in order, B <= chunk_size. num_frames N; info: the call's settings, with
  ``timing`` added when the stream is spent (compile_s, prepare_s, sample_s: time spent
  producing the chunks, not consuming them, total_s, frames_per_s)."""

  num_frames: int
  chunk_size: int
  info: dict
  chunks: Iterator[np.ndarray] = dataclasses.field(repr=False)

  def __iter__(self) -> Iterator[np.ndarray]:
    return self.chunks
