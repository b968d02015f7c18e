"""The judge network (emotalker_jax.evaluation.judge) and its trainer
(emotalker_jax.training.judge, `emotalker judge`): a small-scale training run learns
emotions, identity and mouth opening on held-out identities; predictions are deterministic,
batch-independent and survive a save/load round trip. The full-size run (the must-show
figures of issue 5) is the `slow` test at the end."""

import numpy as np
import pytest

from emotalker_jax.emotions import NUM_EMOTIONS
from emotalker_jax.evaluation import judge as J
from emotalker_jax.evaluation import metrics
from emotalker_jax.training import judge as JT

SMALL = dict(
  image_size=32,
  channels=(16, 32, 64),
  space_to_depth=2,
  mouth_branch=8,
  hidden=128,
  embed_dim=32,
  num_identities=64,
  frames_per_identity=8,
  steps=100,
  batch_identities=16,
  batch_frames=4,
  learning_rate=3e-3,
  warmup_steps=10,
  augment=False,
  seed=0,
)


@pytest.fixture(scope="module")
def small_judge():
  cfg = J.get_config("tiny", **SMALL)
  judge, log = JT.train_judge(cfg, progress=False, log_every=40)
  return judge, log


@pytest.fixture(scope="module")
def heldout():
  """6 identities the judge never saw, 16 frames each: one emotion at strength 1 per frame
  (2 frames per emotion), random motion; plus a still neutral portrait per identity."""
  from input_pipeline.synthetic import face_model, renderer

  ids = range(JT.JUDGE_HELDOUT_ID_OFFSET + 100, JT.JUDGE_HELDOUT_ID_OFFSET + 106)
  frames, states, mouth, ident, sources = [], [], [], [], []
  for k, i in enumerate(ids):
    rng = np.random.default_rng(i)
    u = face_model.sample_identity(i)
    s = np.repeat(np.eye(NUM_EMOTIONS, dtype=np.float32), 2, axis=0)
    fr, mo = JT.render_frames(u, s, rng, 32)
    frames.append(fr)
    states.append(s)
    mouth.append(mo)
    ident.append(np.full(len(s), k))
    sources.append(
      renderer.render(
        u, np.zeros(face_model.NUM_CONTROLS, np.float32), face_model.Motion.still(1), 32
      )["frames"][0]
    )
  return {
    "frames": np.concatenate(frames),
    "emotion": np.concatenate(states),
    "mouth_open": np.concatenate(mouth),
    "identity": np.concatenate(ident),
    "sources": np.stack(sources),
  }


def test_training_loss_decreases(small_judge):
  _, log = small_judge
  hist = log["history"]
  assert hist[-1]["loss"] < 0.75 * hist[0]["loss"]
  assert hist[-1]["supcon"] < hist[0]["supcon"]


def test_small_judge_beats_chance_on_heldout_identities(small_judge, heldout):
  judge, _ = small_judge
  pred = judge.predict(heldout["frames"])
  acc = metrics.emotion_accuracy(pred["intensities"], heldout["emotion"])
  assert acc["top1"] >= 0.6, acc  # chance: 1/8 (measured: 0.85)
  src = judge.predict(heldout["sources"])["embedding"]
  same = np.mean(
    [
      metrics.identity_similarity(pred["embedding"][heldout["identity"] == k], src[k])
      for k in range(len(src))
    ]
  )
  diff = np.mean(
    [
      metrics.identity_similarity(pred["embedding"][heldout["identity"] == k], src[j])
      for k in range(len(src))
      for j in range(len(src))
      if j != k
    ]
  )
  assert same - diff >= 0.5, (same, diff)  # measured: 0.92 vs 0.07
  assert metrics.pearson(pred["mouth_open"], heldout["mouth_open"]) >= 0.4  # measured: 0.67


def test_predict_deterministic_and_batch_independent(small_judge, heldout):
  judge, _ = small_judge
  frames = heldout["frames"][:20]
  a = judge.predict(frames)
  b = judge.predict(frames)
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])
  # Padding / batch size does not change a frame's prediction (GroupNorm is per sample).
  c = judge.predict(frames, batch_size=8)
  one = judge.predict(frames[7])
  for k in a:
    np.testing.assert_allclose(c[k], a[k], atol=2e-5)
    np.testing.assert_allclose(one[k][0], a[k][7], atol=2e-5)
  # uint8 and the equivalent float input in [-1, 1] agree.
  f = judge.predict(frames.astype(np.float32) / 127.5 - 1.0)
  np.testing.assert_allclose(f["intensities"], a["intensities"], atol=1e-6)
  assert a["intensities"].shape == (20, NUM_EMOTIONS)
  np.testing.assert_allclose(np.linalg.norm(a["embedding"], axis=1), 1.0, atol=1e-5)
  assert np.all((a["mouth_open"] >= 0) & (a["mouth_open"] <= 1))


def test_save_load_round_trip(small_judge, heldout, tmp_path):
  judge, log = small_judge
  J.save_judge(str(tmp_path / "j"), judge, {"train_log": log})
  loaded = J.load_judge(str(tmp_path / "j"))
  assert loaded.config == judge.config
  a = judge.predict(heldout["frames"][:10])
  b = loaded.predict(heldout["frames"][:10])
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])
  with pytest.raises(FileNotFoundError, match="judge train"):
    J.load_judge(str(tmp_path / "missing"))
  with pytest.raises(ValueError, match="does not match"):
    other = J.Judge(judge.config.replace(hidden=64), J.init_params(judge.config.replace(hidden=64)))
    J.save_judge(str(tmp_path / "k"), other)
    import json

    cfg_path = tmp_path / "k" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["judge"]["hidden"] = 128
    cfg_path.write_text(json.dumps(cfg))
    J.load_judge(str(tmp_path / "k"))


def test_training_is_deterministic_in_the_seed():
  cfg = J.get_config(
    "tiny",
    **{
      **SMALL,
      "num_identities": 8,
      "frames_per_identity": 4,
      "steps": 3,
      "batch_identities": 4,
      "batch_frames": 2,
      "channels": (8, 16, 32),
      "mouth_branch": 0,
      "hidden": 32,
      "embed_dim": 8,
      "augment": True,
    },
  )
  a, _ = JT.train_judge(cfg, progress=False)
  b, _ = JT.train_judge(cfg, progress=False)
  c, _ = JT.train_judge(cfg.replace(seed=1), progress=False)
  import jax

  la, lb, lc = (jax.tree.leaves(j.params) for j in (a, b, c))
  assert all(np.array_equal(x, y) for x, y in zip(la, lb))
  assert not all(np.array_equal(x, y) for x, y in zip(la, lc))


def test_supcon_loss_matches_numpy_reference():
  import jax.numpy as jnp

  rng = np.random.default_rng(0)
  z = rng.standard_normal((6, 5))
  z /= np.linalg.norm(z, axis=1, keepdims=True)
  labels = np.array([0, 0, 1, 1, 1, 2])
  tau = 0.2
  ref = []
  for i in range(6):
    others = [j for j in range(6) if j != i]
    logden = np.log(sum(np.exp(z[i] @ z[j] / tau) for j in others))
    pos = [j for j in others if labels[j] == labels[i]]
    if pos:
      ref.append(-np.mean([z[i] @ z[j] / tau - logden for j in pos]))
    else:
      ref.append(0.0)
  got = float(JT.supcon_loss(jnp.asarray(z, jnp.float32), jnp.asarray(labels), tau))
  assert got == pytest.approx(np.mean(ref), rel=1e-4)


def test_emotion_states_and_pool_are_deterministic():
  rng = np.random.default_rng(0)
  s = JT.sample_emotion_states(rng, 2000)
  nz = (s > 0).sum(1)
  assert set(np.unique(nz)) == {1, 2, 3}
  assert np.all(s[s[:, 0] > 0, 0] == 1.0) and np.all(s[s[:, 0] > 0, 1:] == 0)  # neutral alone
  assert abs(np.mean(s[:, 0] > 0) - 0.15) < 0.03 and abs(np.mean(nz >= 2) - 0.38) < 0.04
  p1 = JT.build_pool([JT.JUDGE_TRAIN_ID_OFFSET + 3], 4, 32, seed=5)
  p2 = JT.build_pool([JT.JUDGE_TRAIN_ID_OFFSET + 3], 4, 32, seed=5)
  for k in p1:
    np.testing.assert_array_equal(p1[k], p2[k])
  assert JT.JUDGE_TRAIN_ID_OFFSET > 10 * 160  # disjoint from every synthetic_talk size's ids


def test_challenging_pool_renders_the_challenging_identities_and_skips_their_params():
  """build_pool(challenging=k): the first k ids are rendered from
  challenging.sample_challenging (their still portrait is that identity's render), the rest
  as before; the identity-parameter loss ignores the challenging rows (changing their
  targets leaves the loss unchanged, changing an ordinary row's does not)."""
  import jax

  from input_pipeline.synthetic import challenging, face_model, renderer

  ids = [JT.JUDGE_TRAIN_ID_OFFSET + 7, JT.JUDGE_TRAIN_ID_OFFSET + 8]
  pool = JT.build_pool(ids, 3, 32, seed=1, challenging=1)
  plain = JT.build_pool(ids, 3, 32, seed=1)
  np.testing.assert_array_equal(pool["param_weight"], [0.0, 1.0])
  u, factors = challenging.sample_challenging(ids[0])
  still = np.zeros(face_model.NUM_CONTROLS, np.float32)
  want = renderer.render(u, still, face_model.Motion.still(1), 32)["frames"][0]
  np.testing.assert_array_equal(pool["sources"][0], want)
  assert np.abs(pool["sources"][0].astype(int) - plain["sources"][0]).max() > 50
  for k in ("frames", "sources", "emotion", "identity_params"):  # the ordinary id: as before
    np.testing.assert_array_equal(pool[k][1], plain[k][1])
  np.testing.assert_array_equal(pool["identity_params"][0], u[:26])
  assert len(factors) == challenging.FACTORS_PER_IDENTITY

  cfg = J.get_config("tiny", **SMALL)
  _, step = JT._compiled_step(cfg.replace(seed=0, num_identities=0, frames_per_identity=0))
  batch = JT.sample_batch(pool, np.random.default_rng(0), 2, 3)
  params = J.init_params(cfg, 0)
  opt = JT.make_optimizer(cfg)

  def params_mse(b):
    return float(step(params, opt.init(params), b, jax.random.PRNGKey(0))[2]["params_mse"])

  base = params_mse(batch)
  moved = dict(batch, identity_params=batch["identity_params"].copy())
  moved["identity_params"][batch["param_weight"] == 0] += 5.0
  assert params_mse(moved) == pytest.approx(base, rel=1e-6)
  moved["identity_params"][batch["param_weight"] == 1] += 5.0
  assert params_mse(moved) > base + 1.0
  with pytest.raises(ValueError, match="--challenging-fraction"):
    JT.train_judge(cfg.replace(challenging_fraction=1.5), progress=False)


def test_factor_sensitivity_is_the_cosine_to_the_portrait_without_the_factor():
  """With a stand-in judge whose embedding is the raw pixels, factor_sensitivity is the
  cosine of the portrait to the same portrait with one factor (or all) switched off."""
  from input_pipeline.synthetic import challenging, face_model, renderer

  class PixelJudge:
    config = J.get_config("tiny")

    def predict(self, x):
      return {"embedding": np.asarray(x, np.float64).reshape(len(x), -1) / 255.0 - 0.5}

  ids = [JT.JUDGE_HELDOUT_CHALLENGING_OFFSET + k for k in range(3)]
  got = JT.factor_sensitivity(PixelJudge(), ids)
  still = np.zeros(face_model.NUM_CONTROLS, np.float32)

  def image(u):
    x = renderer.render(u, still, face_model.Motion.still(1), 32)["frames"][0]
    return x.astype(np.float64).reshape(-1) / 255.0 - 0.5

  def cos(a, b):
    return a @ b / np.linalg.norm(a) / np.linalg.norm(b)

  want: dict = {}
  for i in ids:
    u, factors = challenging.sample_challenging(i)
    for f in factors:
      q = u.copy()
      q[26 + challenging.CHALLENGE_PARAM_NAMES.index(challenging.FACTOR_SWITCHES[f])] = 0
      want.setdefault(f, []).append(cos(image(u), image(q)))
    plain = u.copy()
    plain[26:] = 0
    want.setdefault("all", []).append(cos(image(u), image(plain)))
  assert set(got) == set(want) and got["all"]["n"] == 3
  assert sum(d["n"] for f, d in got.items() if f != "all") == 3 * challenging.FACTORS_PER_IDENTITY
  for f, v in want.items():
    assert got[f]["cosine"] == pytest.approx(np.mean(v), abs=1e-5)
    assert got[f]["cosine"] < 0.9999  # every factor changes the portrait


def test_cli_errors_are_one_line(capsys, tmp_path):
  from emotalker_jax.cli import main

  assert main(["judge", "evaluate", "--judge", str(tmp_path / "nope")]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("emotalker judge: error:") and "judge train" in err[0]


def test_cli_size_choices_are_the_judge_sizes():
  from emotalker_jax.commands import judge as judge_command

  assert judge_command.JUDGE_SIZES == tuple(J.SIZES)


def test_cli_train_saves_a_judge_and_evaluate_writes_the_figures(tmp_path, capsys):
  """`emotalker judge train` (a few steps, --no-eval) writes a judge that load_judge reads
  back with the command's settings; `emotalker judge evaluate` writes the held-out figures
  with every target to --json."""
  import json

  from emotalker_jax.cli import main

  out = tmp_path / "j"
  assert (
    main(
      [
        "judge",
        "train",
        "--size",
        "tiny",
        "--out",
        str(out),
        "--steps",
        "2",
        "--num-identities",
        "4",
        "--seed",
        "3",
        "--challenging-fraction",
        "0.5",
        "--no-eval",
        "--quiet",
      ]
    )
    == 0
  )
  judge = J.load_judge(str(out))
  assert (judge.config.steps, judge.config.num_identities, judge.config.seed) == (2, 4, 3)
  assert judge.config == J.get_config(
    "tiny", steps=2, num_identities=4, seed=3, challenging_fraction=0.5
  )
  capsys.readouterr()
  path = tmp_path / "figures.json"
  assert (
    main(
      [
        "judge",
        "evaluate",
        "--judge",
        str(out),
        "--extra-identities",
        "2",
        "--json",
        str(path),
        "--quiet",
      ]
    )
    == 0
  )
  figures = json.loads(path.read_text())
  assert set(figures["targets"]) == set(JT.TARGETS)
  assert figures["challenging_heldout"]["identities"] == 2
  assert figures["judge"]["challenging_fraction"] == 0.5
  assert set(figures["challenging_heldout"]["factor_removed_cosine"]) >= {"all"}
  assert figures["judge"]["steps"] == 2
  assert "| target | value | required | met |" in capsys.readouterr().out


@pytest.mark.slow
def test_full_judge_meets_the_heldout_targets():
  """The must-show figures of issue 5 for the tiny (32x32) judge (a few minutes on 2 cores):
  emotion top-1, mixture top-2, intensity Spearman, same/different-id cosine and mouth
  opening (measured with synthetic_talk 1.1.0: 0.9988, 0.960, 0.960, 0.974 / -0.18, 0.956)."""
  judge, _ = JT.train_judge(J.get_config("tiny"), progress=False)
  figures = JT.evaluate_judge(judge, "tiny", None, extra_identities=16, progress=False)
  res = JT.check_targets(figures)
  assert all(r["ok"] for r in res.values()), res
