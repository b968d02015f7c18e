"""Training at scale (issue #7): sharding equivalence, exact resume, signals, NaN, overfit.

One small config for all tests; the compiled step of the single-device trainer is reused
by every test that does not need another mesh (module-scoped fixture).
"""

import dataclasses
import os
import signal

import jax
import numpy as np
import pytest

from emotalker_jax import parallel
from emotalker_jax.config_utils import load_config
from emotalker_jax.models.text_encoder import load_text_encoder
from emotalker_jax.training import loop

B = 8
PROMPTS = np.array(
  [
    "angry",
    "very happy",
    "a little sad",
    "fearful",
    "surprised",
    "disgusted",
    "calm and neutral",
    "contemptuous",
  ]
)


def small_config(**over):
  args = [
    "--config.unet.block_out_channels=(16, 32)",
    "--config.unet.norm_num_groups=8",
    "--config.autoencoder.block_out_channels=(16, 16, 32)",
    "--config.context_dim=32",
    "--config.audio.width=32",
    "--config.eib.hidden=64",
    "--config.train.batch_size=8",
    "--config.train.warmup_steps=2",
    "--config.train.log_every=1",
    "--config.train.ckpt_every=1000",
    "--config.seed=0",
  ]
  args += [f"--config.{k}={v}" for k, v in over.items()]
  return load_config(os.path.join(os.path.dirname(__file__), "..", "configs", "tiny.py"), args)


def host_batch(i: int, nan: bool = False) -> dict:
  """Deterministic batch number i (a function of i only, so data order is checkable)."""
  r = np.random.default_rng(1000 + i)
  x = np.tanh(np.cumsum(r.normal(size=(B, 32, 32, 3)), axis=1) / 6).astype(np.float32)
  if nan:
    x[0, 0, 0, 0] = np.nan
  return dict(
    x_tgt=x,
    x_mask=x * (r.uniform(size=(B, 32, 32, 1)) > 0.3),
    x_ref=x[::-1].copy(),
    audio_mel=r.normal(size=(B, 21, 80)).astype(np.float32),
    emotion=np.eye(8, dtype=np.float32)[r.integers(0, 8, B)],
    prompt_emotion=np.eye(8, dtype=np.float32)[r.integers(0, 8, B)] * 0.7,
    prompt=PROMPTS[r.permutation(B)],
    # x_ref's provenance, as the pipeline gives it (cached reference latents are keyed by it)
    ref_clip_id=i * B + np.arange(B)[::-1],
    ref_frame=np.zeros((B,), np.int64),
    batch_index=np.full((B,), i),
  )


class CountingIterator:
  """A checkpointable iterator (grain's protocol: get_state/set_state/start_prefetch, so
  grain's orbax handler saves it) over host_batch."""

  def __init__(self, nan_at=None, sigterm_at=None):
    self.i, self.nan_at, self.sigterm_at, self.served = 0, nan_at, sigterm_at, []

  def __iter__(self):
    return self

  def __next__(self):
    if self.sigterm_at is not None and self.i == self.sigterm_at:
      os.kill(os.getpid(), signal.SIGTERM)
    b = host_batch(self.i, nan=self.i == self.nan_at)
    self.served.append(self.i)
    self.i += 1
    return b

  def get_state(self):
    return str(self.i).encode()

  def set_state(self, s):
    self.i = int(s.decode())

  def start_prefetch(self):
    pass


@pytest.fixture(scope="module")
def text(tmp_path_factory):
  """A 1-layer, 32-wide random BERT with MiniLM's tokenizer: the frozen text tower's role
  in these tests is structural, and a small one keeps each step compile short."""
  import shutil

  import torch
  import transformers

  from emotalker_jax.models.text_encoder import default_minilm_path

  folder = tmp_path_factory.mktemp("tiny_bert")
  torch.manual_seed(0)
  cfg = transformers.BertConfig(
    hidden_size=32,
    num_hidden_layers=1,
    num_attention_heads=2,
    intermediate_size=64,
    max_position_embeddings=64,
  )
  transformers.BertModel(cfg, add_pooling_layer=False).save_pretrained(folder)
  for f in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
    shutil.copy(os.path.join(default_minilm_path(), f), folder)
  return load_text_encoder(str(folder), kind="bert", max_length=16)


@pytest.fixture(scope="module")
def trainer(text):
  c = small_config(**{"train.steps": 6})
  mesh = parallel.create_mesh(c.mesh, jax.devices()[:1])
  tr = loop.build_trainer(c, mesh, text=text)
  return tr, fresh_copy(tr.state)


def fresh_copy(state):
  """New buffers (the step donates its state; PRNG keys cannot go through numpy)."""
  return jax.tree.map(lambda x: jax.numpy.array(x, copy=True), state)


def reset(tr, init):
  tr.state = jax.device_put(fresh_copy(init), tr.state_shardings)


def run_steps(tr, n):
  losses = []
  for i in range(n):
    losses.append(float(jax.device_get(tr.step(tr.device_batch(host_batch(i))))["loss"]))
  return losses, jax.device_get(tr.state)


# data 2 x fsdp 4 shards both axes, fsdp 8 alone the parameters only; each is a compile of
# the real step on 8 devices (~3-4 min on 2 cores), so both are in the slow tier. The default
# tier keeps sharded training through tests/test_multiprocess.py (two processes x 4 devices
# against one process x 8, the same loop) and the mesh-traced init/apply of test_models.py.
@pytest.mark.slow
@pytest.mark.parametrize("data,fsdp", [(2, 4), (1, 8)], ids=["d2f4", "f8"])
def test_meshes_give_the_same_training(trainer, text, data, fsdp):
  tr1, init = trainer
  reset(tr1, init)
  ref_losses, ref_state = run_steps(tr1, 3)
  devices = jax.devices()[:8]
  c = small_config(**{"train.steps": 6, "mesh.data": data, "mesh.fsdp": fsdp})
  mesh = parallel.create_mesh(c.mesh, devices)
  assert dict(mesh.shape) == {"data": data, "fsdp": fsdp, "tensor": 1}
  tr = loop.build_trainer(c, mesh, text=text, vae_params=jax.device_get(tr1.frozen["vae"]))
  # The same initial values, laid out on this mesh (tx is static metadata).
  tr.state = jax.device_put(fresh_copy(init).replace(tx=tr.state.tx), tr.state_shardings)
  sharded = [s for s in jax.tree.leaves(tr.state_shardings) if any(a is not None for a in s.spec)]
  assert sharded, "some parameters must actually be sharded over fsdp"
  losses, state = run_steps(tr, 3)
  np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
  a = np.concatenate([np.ravel(x) for x in jax.tree.leaves(state.params)])
  b = np.concatenate([np.ravel(x) for x in jax.tree.leaves(ref_state.params)])
  # The whole parameter vector agrees to 1e-5 relative. Element-wise, Adam turns
  # round-off-level gradients (params whose true gradient is ~0, e.g. biases in front
  # of a norm) into updates of ~lr * 1e-3, so those get an absolute bound instead.
  assert np.linalg.norm(a - b) <= 1e-5 * np.linalg.norm(b)
  np.testing.assert_allclose(a, b, rtol=1e-4, atol=5e-5)


def _leaves_equal(a, b):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(la) == len(lb)
  return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


def test_sigterm_checkpoint_resumes_bitwise(trainer, tmp_path):
  tr, init = trainer
  reset(tr, init)
  straight_it = CountingIterator()
  res = loop.train(tr.config, str(tmp_path / "a"), loader=straight_it, trainer=tr, progress=False)
  assert res["stopped_by"] == "done" and res["step"] == 6
  straight = jax.device_get(tr.state)

  # SIGTERM arrives while the 4th batch is fetched: step 3 runs, then save and exit.
  reset(tr, init)
  it1 = CountingIterator(sigterm_at=3)
  res1 = loop.train(tr.config, str(tmp_path / "b"), loader=it1, trainer=tr, progress=False)
  assert res1["stopped_by"] == "SIGTERM" and res1["step"] == 4
  # grain's orbax handler: this process's iterator state in its own file (the next batch).
  state_file = tmp_path / "b" / "checkpoints" / "4" / "data" / "process_0-of-1.json"
  assert state_file.read_text() == "4"

  reset(tr, init)  # a fresh process would start from init; the checkpoint must win
  it2 = CountingIterator()
  res2 = loop.train(tr.config, str(tmp_path / "b"), loader=it2, trainer=tr, progress=False)
  assert res2["step"] == 6
  assert it1.served + it2.served == straight_it.served == list(range(6))
  resumed = jax.device_get(tr.state)
  assert _leaves_equal(resumed.params, straight.params)
  assert _leaves_equal(resumed.opt_state, straight.opt_state)
  assert _leaves_equal(resumed.ema_params, straight.ema_params)


def test_max_steps_then_resume_matches_straight_run(trainer, tmp_path):
  """--max-steps 3, then a resume, equals 6 straight steps; so does a resume from the same
  state saved in the old single-process layout (the iterator state one JSON item)."""
  import orbax.checkpoint as ocp

  tr, init = trainer
  reset(tr, init)
  loop.train(tr.config, str(tmp_path / "a"), loader=CountingIterator(), trainer=tr, progress=False)
  straight = jax.device_get(tr.state)
  reset(tr, init)
  r1 = loop.train(
    tr.config,
    str(tmp_path / "b"),
    loader=CountingIterator(),
    trainer=tr,
    max_steps=3,
    progress=False,
  )
  assert r1["stopped_by"] == "max_steps" and r1["step"] == 3
  legacy = ocp.CheckpointManager(
    str(tmp_path / "legacy" / "checkpoints"), item_names=("state", "data", "config")
  )
  legacy.save(
    3,
    args=ocp.args.Composite(
      state=ocp.args.StandardSave(tr.state),
      data=ocp.args.JsonSave({"iterator": "3"}),
      config=ocp.args.JsonSave({}),
    ),
  )
  legacy.wait_until_finished()
  legacy.close()
  for folder in ("b", "legacy"):
    reset(tr, init)
    it = CountingIterator()
    loop.train(tr.config, str(tmp_path / folder), loader=it, trainer=tr, progress=False)
    assert it.served == [3, 4, 5], folder
    assert _leaves_equal(jax.device_get(tr.state).params, straight.params), folder
  rows = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
  assert [int(r.split('"step": ')[1].split(",")[0]) for r in rows] == list(range(1, 7))


def test_nan_in_batch_stops_with_message_naming_the_step(trainer, tmp_path):
  tr, init = trainer
  reset(tr, init)
  with pytest.raises(loop.NonFiniteLossError, match="at step 2"):
    loop.train(
      tr.config, str(tmp_path / "n"), loader=CountingIterator(nan_at=2), trainer=tr, progress=False
    )


def test_mouth_loss_weight_is_a_weighted_mean(trainer):
  """train.mouth_loss_weight w: per-latent-pixel weights 1 + w * (mouth overlap), the
  loss their weighted mean. With the same noise and timesteps, a region over the top
  half gives L(w) = ((1 + w) A + B) / (2 + w), A, B the halves' mean errors: solve A, B
  from w = 0 and w = 10, then w = 3 must match. An all-mouth region gives L(0)."""
  import jax.numpy as jnp

  from emotalker_jax.training import step as step_lib

  tr, init = trainer
  batch = tr.device_batch(host_batch(0))
  top = np.zeros((B, 32, 32), np.float32)
  top[:, :16] = 1.0
  rng = jax.random.PRNGKey(7)

  def loss(w, region):
    cfg = small_config(**{"train.mouth_loss_weight": w})
    # Eager: five configs would be five compiles (~15 s each on 2 cores); op by op is faster.
    fn = step_lib.make_loss_fn(tr.model, tr.vae, tr.text.module, tr.schedule, cfg)
    b = dict(batch, mouth_region=jnp.asarray(region)) if w > 0 else batch
    return float(fn(init.params, tr.frozen, b, rng)[1]["loss_ldm"])

  l0, l10, l3 = loss(0.0, top), loss(10.0, top), loss(3.0, top)
  a = (12 * l10 - 2 * l0) / 10  # from l0 = (A + B) / 2, l10 = (11 A + B) / 12
  b = 2 * l0 - a
  assert abs(a - b) > 0.01 * l0  # the halves differ, so the weights matter
  np.testing.assert_allclose(l3, (4 * a + b) / 5, rtol=1e-4)
  np.testing.assert_allclose(loss(10.0, np.ones_like(top)), l0, rtol=1e-5)
  # The pooled weights: the fraction of each 2x2 (f=4 here: 4x4) block inside the region.
  reg = np.zeros((1, 8, 8), np.float32)
  reg[0, 1:3, 0:4] = 1.0
  w = np.asarray(step_lib.latent_loss_weights(jnp.asarray(reg), (2, 2), 8.0))[0, ..., 0]
  np.testing.assert_allclose(w, [[1 + 8 * 8 / 16, 1], [1, 1]])
  assert step_lib.batch_keys(small_config(**{"train.mouth_loss_weight": 1.0}))[
    -1
  ] == step_lib.MOUTH_KEY and step_lib.MOUTH_KEY not in step_lib.batch_keys(tr.config)
  with pytest.raises(ValueError, match="mouth_loss_weight"):
    step_lib.batch_keys(small_config(**{"train.mouth_loss_weight": -1.0}))
  # Two weighted regions add: the loss with mouth weight a on the top half and eyes weight
  # b on the bottom half is the loss of weights (1 + a) / (1 + b) on the halves.
  cfg = small_config(**{"train.mouth_loss_weight": 10.0, "train.eyes_loss_weight": 3.0})
  assert step_lib.batch_keys(cfg)[-2:] == (step_lib.MOUTH_KEY, step_lib.EYES_KEY)
  fn = step_lib.make_loss_fn(tr.model, tr.vae, tr.text.module, tr.schedule, cfg)
  both = dict(batch, mouth_region=jnp.asarray(top), eyes_region=jnp.asarray(1.0 - top))
  l_both = float(fn(init.params, tr.frozen, both, rng)[1]["loss_ldm"])
  np.testing.assert_allclose(l_both, (11 * a + 4 * b) / 15, rtol=1e-4)
  with pytest.raises(ValueError, match="eyes_loss_weight"):
    step_lib.batch_keys(small_config(**{"train.eyes_loss_weight": -0.5}))


def test_step_on_cached_frozen_outputs_equals_the_step_computing_them(trainer, text):  # noqa: F811
  """With a prompt pool and cached reference latents the batch carries text_states and z_ref
  (no input_ids, no x_ref); the loss and metrics equal those of the step that runs the text
  tower and encodes x_ref itself (same params, batch and rng)."""
  tr, init = trainer
  from emotalker_jax.training import frozen_cache
  from emotalker_jax.training import step as step_lib

  cfg = small_config(**{"train.prompt_pool_size": 4, "train.cache_reference_latents": True})
  cached = dataclasses.replace(
    tr,
    config=cfg,
    text_states=frozen_cache.TextStateCache(text),
    reference_latents=frozen_cache.ReferenceLatentCache(tr.vae, tr.frozen["vae"], 32),
  )
  hb = host_batch(0)
  full_batch, cached_batch = tr.device_batch(hb), cached.device_batch(hb)
  assert set(cached_batch) == set(step_lib.batch_keys(cfg))
  for gone, new in (("input_ids", step_lib.TEXT_STATES_KEY), ("x_ref", step_lib.REF_LATENT_KEY)):
    assert new in cached_batch and gone not in cached_batch
  rng = jax.random.PRNGKey(11)
  losses = []
  for c, b in ((tr.config, full_batch), (cfg, cached_batch)):
    fn = step_lib.make_loss_fn(tr.model, tr.vae, tr.text.module, tr.schedule, c)
    losses.append({k: float(v) for k, v in fn(init.params, tr.frozen, b, rng)[1].items()})
  for k in losses[0]:
    np.testing.assert_allclose(losses[1][k], losses[0][k], rtol=1e-4, err_msg=k)
  # batch_spec: the states' width is the configured tower's (text.path '': MiniLM, 384),
  # the latents' the autoencoder's (f = 4 here).
  spec = step_lib.batch_spec(cfg)
  assert spec[step_lib.TEXT_STATES_KEY].shape == (8, int(cfg.text.max_length), 384)
  assert spec[step_lib.REF_LATENT_KEY].shape == (8, 8, 8, 4)
  assert spec[step_lib.TEXT_STATES_KEY].dtype == spec[step_lib.REF_LATENT_KEY].dtype == np.float32
  # A loader without the reference ids is refused with the fix.
  with pytest.raises(ValueError, match="cache_reference_latents=False"):
    cached.device_batch({k: v for k, v in hb.items() if k != "ref_clip_id"})


def test_joint_eib_loss_uses_the_configured_ce_weight(trainer):
  """L_EIB in the train step is eib-train's: ||s_hat - s||^2 + eib.ce_weight * CE, so it
  is linear in ce_weight (same params, batch and rng), and the CE term is positive."""
  from emotalker_jax.training import step as step_lib

  tr, init = trainer
  batch = tr.device_batch(host_batch(0))
  rng = jax.random.PRNGKey(3)

  def l_eib(w):
    cfg = small_config(**{"eib.ce_weight": w})
    fn = jax.jit(step_lib.make_loss_fn(tr.model, tr.vae, tr.text.module, tr.schedule, cfg))
    return float(fn(init.params, tr.frozen, batch, rng)[1]["loss_eib"])

  l0, l1, l_half = l_eib(0.0), l_eib(1.0), l_eib(0.5)
  assert l1 - l0 > 1e-3
  np.testing.assert_allclose(l_half, (l0 + l1) / 2, rtol=1e-5)


def test_joint_eib_loss_is_supervised_by_the_prompts_own_label(trainer):
  """L_EIB's target is batch['prompt_emotion'] (the FED label of the prompt the EIB
  reads), not the clip's batch['emotion']. With ce_weight 0, L(P) = mean_b ||s_hat_b -
  P_b||^2 is quadratic in the target P, so for any Q: L(2Q) - 2 L(Q) + L(0) =
  2 mean_b ||Q_b||^2 whatever the EIB reads (s_hat cancels). Were the clip's label the
  target, the three losses would be equal and the left side 0."""
  import jax.numpy as jnp

  from emotalker_jax.training import step as step_lib

  tr, init = trainer
  batch = tr.device_batch(host_batch(0))
  cfg = small_config(**{"eib.ce_weight": 0.0})
  fn = jax.jit(step_lib.make_loss_fn(tr.model, tr.vae, tr.text.module, tr.schedule, cfg))
  rng = jax.random.PRNGKey(5)
  q = np.zeros((B, 8), np.float32)
  q[np.arange(B), np.arange(B) % 8] = 0.6
  q[np.arange(B), (np.arange(B) + 3) % 8] = 0.25

  def l_eib(target, clip_emotion=None):
    b = dict(batch, prompt_emotion=jnp.asarray(target))
    if clip_emotion is not None:
      b["emotion"] = jnp.asarray(clip_emotion)
    return float(fn(init.params, tr.frozen, b, rng)[1]["loss_eib"])

  want = 2 * float(np.mean(np.sum(q**2, axis=1)))
  got = l_eib(2 * q) - 2 * l_eib(q) + l_eib(np.zeros_like(q))
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
  # The clip's label does not enter L_EIB at all: it only builds the explicit-intensity
  # tokens, while the EIB's logits are always its reading of the prompt.
  np.testing.assert_allclose(l_eib(q, clip_emotion=np.roll(q, 1, axis=1)), l_eib(q), rtol=1e-6)


@pytest.mark.slow
def test_tiny_overfits_a_fixed_batch(text):
  c = load_config(
    os.path.join(os.path.dirname(__file__), "..", "configs", "tiny.py"),
    ["--config.train.steps=300", "--config.train.warmup_steps=10", "--config.train.lr=2e-3"],
  )
  tr = loop.build_trainer(c, parallel.create_mesh(c.mesh, jax.devices()[:1]), text=text)
  batch = tr.device_batch(host_batch(0))
  losses = [float(jax.device_get(tr.step(batch))["loss"]) for _ in range(300)]
  first, last = np.mean(losses[:10]), np.mean(losses[-20:])
  assert first / last >= 10, (first, last)
