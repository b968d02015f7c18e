"""Emotion Intensity Block: token algebra, CFG null swap, loss, metrics, a small trained
EIB (the real `emotalker eib-train` on a small FED) and the `emotalker emotion` command."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from emotalker_jax.emotions import EMOTIONS
from emotalker_jax.evaluation.metrics import intensity_metrics
from emotalker_jax.models import eib as E

K, C, T, D = 8, 16, 3, 24


@pytest.fixture(scope="module")
def small_eib():
  m = E.EmotionIntensityBlock(context_dim=C, hidden=32, num_text_tokens=T, attn_heads=2)
  h = jax.random.normal(jax.random.key(1), (4, 7, D))
  mask = jnp.array([[1] * 7, [1] * 3 + [0] * 4, [1] * 5 + [0] * 2, [1] + [0] * 6])
  variables = m.init(jax.random.key(0), h, mask, method=E.EmotionIntensityBlock.init_all)
  return m, variables, h, mask


def test_tokens_follow_the_method(small_eib):
  m, v, h, mask = small_eib
  params = v["params"]
  out = m.apply(v, h, mask)
  assert out.tokens.shape == (4, K + T, C)
  s_hat = np.asarray(out.intensities)
  assert np.all((s_hat > 0) & (s_hat < 1))
  np.testing.assert_allclose(s_hat, jax.nn.sigmoid(out.logits), rtol=1e-6)
  basis, offset = nn.unbox(params["basis"]), nn.unbox(params["offset"])
  # e_k = s_hat_k * B_k + b_k
  want = s_hat[..., None] * np.asarray(basis)[None] + np.asarray(offset)[None]
  np.testing.assert_allclose(out.tokens[:, :K], want, rtol=1e-5, atol=1e-6)
  # explicit intensities: same emotion tokens, text tokens = the learned "no text" set
  tok_s = m.apply(v, out.intensities, method=E.EmotionIntensityBlock.from_intensities)
  np.testing.assert_allclose(tok_s[:, :K], out.tokens[:, :K], rtol=1e-6)
  np.testing.assert_allclose(tok_s[:, K:], np.broadcast_to(nn.unbox(params["no_text"]), (4, T, C)))
  # linear in s: tokens(2s) - tokens(s) = s * B
  s = jnp.array([[0.0, 0.2, 0, 0, 0, 0.7, 0, 0.3]])
  d = (
    m.apply(v, 2 * s, method=E.EmotionIntensityBlock.from_intensities)
    - m.apply(v, s, method=E.EmotionIntensityBlock.from_intensities)
  )[0, :K]
  np.testing.assert_allclose(d, np.asarray(s[0])[:, None] * np.asarray(basis), atol=1e-5)


def test_text_tokens_ignore_padding(small_eib):
  m, v, h, mask = small_eib
  out = m.apply(v, h, mask)
  h2 = h.at[1, 3:].set(100.0)  # change only padded positions of row 1
  out2 = m.apply(v, h2, mask)
  np.testing.assert_allclose(out.tokens[1], out2.tokens[1], rtol=1e-5, atol=1e-5)
  assert not np.allclose(out.tokens[0], m.apply(v, h.at[0, 3:].set(100.0), mask).tokens[0])


def test_null_tokens_swap_under_mask(small_eib):
  m, v, h, mask = small_eib
  tokens = m.apply(v, h, mask).tokens
  null = m.apply(v, 4, method=E.EmotionIntensityBlock.null_tokens)
  drop = jnp.array([True, False, True, False])
  mixed = E.apply_null(tokens, nn.unbox(v["params"]["null"]), drop)
  np.testing.assert_array_equal(mixed[0], null[0])
  np.testing.assert_array_equal(mixed[2], null[2])
  np.testing.assert_array_equal(mixed[1], tokens[1])
  np.testing.assert_array_equal(mixed[3], tokens[3])
  p = E.drop_mask(jax.random.key(3), 20000, 0.1)
  assert abs(float(p.mean()) - 0.1) < 0.01
  np.testing.assert_array_equal(p, E.drop_mask(jax.random.key(3), 20000, 0.1))


def test_every_param_has_logical_axis_names(small_eib):
  _, v, _, _ = small_eib
  leaves = jax.tree_util.tree_leaves(v["params"], is_leaf=lambda x: isinstance(x, nn.Partitioned))
  assert leaves and all(isinstance(x, nn.LogicallyPartitioned) for x in leaves)
  specs = jax.tree_util.tree_leaves(
    nn.get_partition_spec(v["params"]), is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec)
  )
  assert any("embed" in s for s in specs) and any("mlp" in s for s in specs)


def _np_loss(logits, s):
  s_hat = 1 / (1 + np.exp(-logits))
  mse = np.mean(np.sum((s_hat - s) ** 2, -1))
  ls = logits - logits.max(-1, keepdims=True)
  logp = ls - np.log(np.exp(ls).sum(-1, keepdims=True))
  ces = []
  for row, lp in zip(s, logp):
    top = np.isclose(row, row.max())
    ces.append(-np.sum(top / top.sum() * lp))
  return mse + np.mean(ces)


def test_loss_matches_numpy_reference():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(5, 8)).astype(np.float32)
  s = np.zeros((5, 8), np.float32)
  s[0, 5] = 0.7
  s[1, [1, 6]] = 0.5  # tie: CE target split equally
  s[2, [2, 3, 4]] = [0.8, 0.3, 0.1]
  s[3, 0] = 0.7
  s[4, 7] = 1.0
  loss, aux = E.eib_loss(jnp.asarray(logits), jnp.asarray(s))
  assert float(loss) == pytest.approx(_np_loss(logits, s), rel=1e-5)
  tgt = np.asarray(E.dominant_target(jnp.asarray(s)))
  np.testing.assert_allclose(tgt[1], [0, 0.5, 0, 0, 0, 0, 0.5, 0])
  # gradient descent on the loss alone reaches the targets
  p = jnp.zeros((5, 8))
  g = jax.jit(jax.grad(lambda p: E.eib_loss(p, jnp.asarray(s), ce_weight=0.0)[0]))
  for _ in range(3000):
    p = p - 2.0 * g(p)
  np.testing.assert_allclose(jax.nn.sigmoid(p), s, atol=0.05)


def test_metrics_on_hand_made_examples():
  t = np.zeros((4, 8))
  t[0, 5] = 0.7  # single happy
  t[1, [5, 7]] = [0.8, 0.3]  # mixed happy > surprised
  t[2, [1, 6]] = [0.5, 0.5]  # tie: no clear dominant
  t[3, [2, 3, 4]] = [0.8, 0.3, 0.3]  # tie at second place
  p = np.zeros((4, 8))
  p[0, 5] = 0.6
  p[1, [5, 7, 6]] = [0.5, 0.6, 0.1]  # top-1 wrong, top-2 right
  p[2, [6, 1]] = [0.9, 0.2]
  p[3, [2, 4]] = [0.9, 0.4]  # top-2 {contempt, fear}: allowed by the tie
  m = intensity_metrics(p, t, np.array([False, True, True, True]))
  assert m["n_top1"] == 3 and m["top1"] == pytest.approx(2 / 3)
  assert m["n_mixed"] == 3 and m["top2_mixed"] == pytest.approx(1.0)
  assert m["mae"] == pytest.approx(np.abs(p - t).mean())
  assert m["confusion"][5][7] == 1


def test_text_eib_equals_encoder_then_eib():
  from emotalker_jax.models.text_encoder import BertConfig, BertTextModel

  cfg = BertConfig(
    vocab_size=50,
    hidden_size=D,
    num_hidden_layers=1,
    num_attention_heads=2,
    intermediate_size=32,
    max_position_embeddings=16,
  )
  enc = BertTextModel(cfg)
  head = E.EmotionIntensityBlock(context_dim=C, hidden=32, num_text_tokens=T, attn_heads=2)
  model = E.TextEIB(enc, head)
  ids = jnp.array([[1, 5, 7, 2, 0, 0], [1, 9, 2, 0, 0, 0]])
  mask = (ids > 0).astype(jnp.int32)
  v = model.init(jax.random.key(0), ids, mask)
  out = model.apply(v, ids, mask)
  h = enc.apply({"params": v["params"]["text_encoder"]}, ids, mask)
  ref = head.apply({"params": v["params"]["eib"]}, h, mask)
  np.testing.assert_allclose(out.tokens, ref.tokens, rtol=1e-5, atol=1e-6)
  # gradients reach the encoder (fine-tunable)
  g = jax.jit(jax.grad(lambda p: model.apply({"params": p}, ids, mask).intensities.sum()))(
    v["params"]
  )
  gnorm = sum(
    float(jnp.abs(x).sum()) for x in jax.tree_util.tree_leaves(nn.unbox(g["text_encoder"]))
  )
  assert gnorm > 0


# ----------------------------------------------------------------------------------------
# A small trained EIB, made by the real command on a small FED corpus.
# ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  from emotalker_jax.cli import main

  out = tmp_path_factory.mktemp("eib")
  rc = main(
    [
      "eib-train",
      "--out",
      str(out),
      "--config",
      "configs/tiny.py",
      "--config.eib.fed_size=3000",
      "--config.eib.finetune_layers=0",  # the frozen-tower head, as measured below
      "--config.eib.warmup_steps=100",
      "--steps",
      "1000",
    ]
  )
  assert rc == 0
  metrics = json.loads((out / "metrics.json").read_text())
  return out, metrics


def test_small_eib_is_monotonic_and_accurate(trained):
  """Small-scale version of the FED figures (the full ones: `emotalker eib-train`)."""
  _, metrics = trained
  mono = metrics["monotonicity"]
  # "slightly X" < "X" < "extremely X" in "she looks ...": at this scale (3000 prompts,
  # 1000 steps, token head) 7 of 8 emotions; neutral, the rarest graded word, is not yet
  # calibrated (measured 0.14 < 0.41 > 0.33). The full run holds for all 8 in 4 frames.
  ok = [
    name
    for name in EMOTIONS
    if (lambda v: v[0] < v[1] < v[2])(mono["values"][name]["she looks {}"])
  ]
  assert len(ok) >= 7, ok
  assert mono["fraction"] >= 0.75  # measured 0.875
  s = metrics["splits"]
  assert s["train"]["top1"] >= 0.95 and s["train"]["mae"] <= 0.05  # measured 1.0, 0.016
  # unseen frames filled with known words: phrasing generalises (measured 0.95, 0.065)
  assert s["test_frames"]["per_category"]["single"]["top1"] >= 0.85
  assert s["test_frames"]["mae"] <= 0.1
  # unseen words in unseen frames: measured 0.54 (chance 1/8; full run 0.56)
  assert s["test"]["top1"] >= 0.45


def _run(argv, capsys):
  from emotalker_jax.cli import main

  rc = main(argv)
  cap = capsys.readouterr()
  return rc, cap.out, cap.err


def test_emotion_command_json_and_bad_input(trained, tmp_path, capsys):
  out, _ = trained
  rc, stdout, err = _run(
    [
      "emotion",
      "--eib",
      str(out),
      "very happy",
      "extremely sad",
      "she is reading out the weather report",
      "happy " * 2000,
    ],
    capsys,
  )
  assert rc == 0
  rows = [json.loads(x) for x in stdout.splitlines()]
  assert [r["prompt"] for r in rows[:3]] == [
    "very happy",
    "extremely sad",
    "she is reading out the weather report",
  ]
  for i, r in enumerate(rows):
    extra = ["no_emotion_content"] if i == 2 else []  # the one key beside the fixed two
    assert list(r) == ["prompt", "intensities"] + extra
    assert list(r["intensities"]) == list(EMOTIONS)
    assert all(0.0 <= x <= 1.0 for x in r["intensities"].values())
  assert max(rows[0]["intensities"], key=rows[0]["intensities"].get) == "happy"
  assert max(rows[1]["intensities"], key=rows[1]["intensities"].get) == "sad"
  # no emotion content -> neutral, with a warning
  assert rows[2]["intensities"]["neutral"] == pytest.approx(0.7)
  assert sum(rows[2]["intensities"].values()) == pytest.approx(0.7)
  assert "prompt #3" in err and "names no emotion" in err and rows[2]["no_emotion_content"]
  # 10k characters -> truncated, with a warning, still a result
  assert "prompt #4" in err and "longer than" in err
  assert max(rows[3]["intensities"], key=rows[3]["intensities"].get) == "happy"

  # prompts file, non-UTF-8 bytes named by line
  good = tmp_path / "p.jsonl"
  good.write_text('{"prompt": "slightly angry"}\n\n{"prompt": "a little surprised"}\n')
  rc, stdout, _ = _run(["emotion", "--eib", str(out), "--prompts-file", str(good)], capsys)
  assert rc == 0 and [json.loads(x)["prompt"] for x in stdout.splitlines()] == [
    "slightly angry",
    "a little surprised",
  ]
  bad = tmp_path / "bad.jsonl"
  bad.write_bytes(b'{"prompt": "happy"}\n{"prompt": "sa\xffd"}\n')
  rc, _, err = _run(["emotion", "--eib", str(out), "--prompts-file", str(bad)], capsys)
  assert rc == 2 and "line 2" in err and "UTF-8" in err
  notjson = tmp_path / "nj.jsonl"
  notjson.write_text('{"prompt": "happy"}\n{"text": "sad"}\n')
  rc, _, err = _run(["emotion", "--eib", str(out), "--prompts-file", str(notjson)], capsys)
  assert rc == 2 and "line 2" in err

  # empty prompt
  rc, stdout, err = _run(["emotion", "--eib", str(out), "happy", "   "], capsys)
  assert rc == 2 and "prompt #2 is empty" in err and stdout == ""
  # missing EIB folder
  rc, _, err = _run(["emotion", "--eib", str(tmp_path / "nope"), "happy"], capsys)
  assert rc == 2 and "not found" in err and "eib-train" in err


def test_emotion_command_explicit_vector(capsys):
  rc, stdout, _ = _run(["emotion", "--emotion", "happy=0.7,surprised=0.3"], capsys)
  assert rc == 0
  row = json.loads(stdout)
  assert row["prompt"] is None
  assert row["intensities"] == {
    "neutral": 0.0,
    "angry": 0.0,
    "contempt": 0.0,
    "disgusted": 0.0,
    "fear": 0.0,
    "happy": 0.7,
    "sad": 0.0,
    "surprised": 0.3,
  }
  rc, _, err = _run(["emotion", "--emotion", "joyful=0.5"], capsys)
  assert rc == 2 and "unknown emotion 'joyful'" in err
  rc, _, err = _run(["emotion", "--emotion", "happy=1.5"], capsys)
  assert rc == 2 and "outside [0, 1]" in err
  rc, _, err = _run(["emotion", "--emotion", "happy=-0.1"], capsys)
  assert rc == 2 and "outside [0, 1]" in err


def test_saved_eib_restores_exactly(trained):
  out, _ = trained
  loaded = E.load_eib(str(out))
  # the restored head reproduces the command's own evaluation features path
  from emotalker_jax.training.eib import (
    eib_settings,
    encode_pooled,
    encode_tokens,
    make_head,
    predict_head,
  )

  prompts = ["slightly angry", "mostly happy, a little surprised", "not at all sad"]
  a, trunc = loaded.predict(prompts)
  st = eib_settings(loaded.config)
  hidden = int(loaded.config.eib.hidden)
  feats = (
    encode_tokens(loaded.encoder, prompts)
    if st["pool"] == E.TOKEN_POOL
    else encode_pooled(loaded.encoder, prompts, st["pool"])
  )
  b = predict_head(loaded.params["head"], feats, hidden, head=make_head(st, hidden))
  # token states are kept as float16 by eib-train (memory); predict reads float32 ones
  np.testing.assert_allclose(a, b, atol=2e-3 if st["pool"] == E.TOKEN_POOL else 2e-5)
  assert not trunc.any()
  # the full token set is restorable and usable
  tokens = loaded.module.apply(
    {"params": loaded.params}, jnp.asarray(a), method=E.EmotionIntensityBlock.from_intensities
  )
  assert tokens.shape == (
    3,
    8 + int(loaded.config.eib.num_text_tokens),
    int(loaded.config.context_dim),
  )


def test_unseen_paraphrases_move_the_named_emotion(trained):
  """Prompts in none of FED's sentence frames (the eval harness's PARAPHRASES, e.g. "tears
  are running down her face") raise the emotion they name above its value for a
  content-free sentence and put it in the top 2. Measured on this small EIB and on the
  full one (`emotalker eib-train`, default config): see the comments."""
  from emotalker_jax import fed
  from emotalker_jax.evaluation.evaluate import PARAPHRASES
  from emotalker_jax.models.eib import load_eib

  out, _ = trained
  seen = {r.prompt for recs in fed.generate(3000, 0).values() for r in recs}
  assert not any(p in seen for p, _ in PARAPHRASES)
  eib = load_eib(str(out))
  base = "she is reading out the weather report"
  s, _ = eib.predict([base] + [p for p, _ in PARAPHRASES])
  moved = []
  for (_prompt, name), v in zip(PARAPHRASES, s[1:]):
    k = EMOTIONS.index(name)
    top2 = set(np.argsort(-v)[:2].tolist())
    rises = v[k] > s[0][k] if name != "neutral" else int(np.argmax(v)) == k
    moved.append(bool(rises and k in top2))
  # measured: this small EIB 6 of 8 (misses: disgusted, surprised; two hits rise by only
  # 0.01, hence the margin of one); the full EIB 7 of 8
  # (miss: "he is fuming after that meeting" -> disgusted / sad)
  assert sum(moved) >= 5, list(zip([p for p, _ in PARAPHRASES], moved, s[1:].round(2).tolist()))


# ----------------------------------------------------------------------------------------
# "No emotion content": the rule's mechanics on a stand-in EIB (fixed intensities)
# ----------------------------------------------------------------------------------------


class _FixedEIB:
  """Stand-in for load_eib(): predict() returns the rows given, nothing truncated."""

  def __init__(self, rows):
    self.rows = np.asarray(rows, np.float32)

  def predict(self, prompts):
    return self.rows[: len(prompts)], np.zeros(len(prompts), bool)


def test_no_emotion_content_needs_the_eib_to_find_no_emotion():
  from emotalker_jax.commands.emotion import intensities_for

  def vec(**kw):
    v = np.zeros(8, np.float32)
    for k, x in kw.items():
      v[EMOTIONS.index(k)] = x
    return v

  prompts = [
    "reading the weather report",  # confident neutral, no emotion word -> flagged
    "her dog just died",  # unsure: nothing confident either way -> the EIB's reading
    "the train leaves at noon",  # neutral but one emotion not low enough -> kept
    "a calm face",  # confident neutral, but "calm" is a FED (neutral) word -> kept
    "she reads the news",  # every emotion below 0.25, neutral the largest: flagged
    "he lost his job today",  # all weak, but sad above neutral: the EIB's reading
    "her dog just died",  # reads as no emotion, but names an emotional FED situation
  ]
  rows = [
    vec(neutral=0.72, sad=0.05),
    vec(neutral=0.40, sad=0.31, fear=0.2),
    vec(neutral=0.60, surprised=0.30),
    vec(neutral=0.80),
    vec(neutral=0.30, happy=0.249),
    vec(neutral=0.15, sad=0.2),
    vec(neutral=0.6, sad=0.1),
  ]
  warnings = []
  out = intensities_for(_FixedEIB(rows), prompts, warn=warnings.append)
  flagged = [bool(r.get("no_emotion_content")) for r in out]
  assert flagged == [True, False, False, False, True, False, False]
  assert [w.split("'")[1] for w in warnings] == [prompts[0], prompts[4]]
  assert all("names no emotion" in w for w in warnings)
  for r, v, f in zip(out, rows, flagged):
    want = vec(neutral=0.7) if f else v  # FED's label of a content-free sentence
    np.testing.assert_allclose([r["intensities"][k] for k in EMOTIONS], want, atol=1e-6)
  # the rule itself, vectorised
  np.testing.assert_array_equal(E.no_emotion_content(np.stack(rows), prompts), flagged)


def test_whitespace_prompt_is_refused_before_the_eib_runs():
  from emotalker_jax.commands.emotion import intensities_for

  class Never(_FixedEIB):
    def predict(self, prompts):
      raise AssertionError("predict must not run on an empty prompt")

  for bad in ("", "   ", "\t\n"):
    with pytest.raises(ValueError, match="prompt #2 is empty"):
      intensities_for(Never([]), ["happy", bad])


# ----------------------------------------------------------------------------------------
# Fine-tuning the text tower's top layers (config.eib.finetune_layers), on a tiny FED
# ----------------------------------------------------------------------------------------

TUNED_K = 1


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
  from emotalker_jax.cli import main

  out = tmp_path_factory.mktemp("eib_tuned")
  rc = main(
    [
      "eib-train",
      "--out",
      str(out),
      "--config",
      "configs/tiny.py",
      "--config.eib.fed_size=600",
      f"--config.eib.finetune_layers={TUNED_K}",
      "--config.eib.tower_lr=1e-3",  # large, so 40 steps move the layer visibly
      "--config.eib.hidden=32",
      "--config.eib.warmup_steps=5",
      "--steps",
      "40",
      "--batch-size",
      "32",
    ]
  )
  assert rc == 0
  return out, json.loads((out / "metrics.json").read_text())


def test_finetuning_changes_only_the_top_layers(tuned):
  from emotalker_jax.models.text_encoder import load_text_encoder

  out, metrics = tuned
  base = load_text_encoder(None, "minilm", 48)
  tower = load_text_encoder(str(out / "text_encoder"), None, 48)
  n = base.config.num_hidden_layers
  for name in ["embeddings"] + [f"layer_{i}" for i in range(n)]:
    a = jax.tree_util.tree_leaves(base.params[name])
    b = jax.tree_util.tree_leaves(tower.params[name])
    same = [bool(np.array_equal(x, y)) for x, y in zip(a, b)]
    if name == "embeddings" or int(name.split("_")[1]) < n - TUNED_K:
      assert all(same), name  # the frozen bottom: bit-identical
    else:
      assert not any(same), name  # every tensor of a tuned layer moved
  losses = [loss for _, loss in metrics["losses"]]
  assert len(losses) >= 3 and losses[-1] < 0.7 * losses[0], losses
  info = json.loads((out / "eib.json").read_text())
  assert info["finetune_layers"] == TUNED_K
  assert info["text_path"] == str(out / "text_encoder")


def test_load_eib_runs_the_tuned_tower_as_trained(tuned):
  """load_eib(DIR).predict == eib-train's own evaluation path (cached states entering the
  tuned layers, then those layers + the head), and != the frozen tower under that head."""
  from emotalker_jax.models.text_encoder import load_text_encoder
  from emotalker_jax.training import eib_tower
  from emotalker_jax.training.eib import eib_settings, make_head

  out, _ = tuned
  loaded = E.load_eib(str(out))
  assert loaded.encoder.path == str(out / "text_encoder")
  prompts = ["slightly angry", "mostly happy, a little surprised", "not at all sad", "x"]
  a, trunc = loaded.predict(prompts)
  base = load_text_encoder(None, "minilm", 48)
  st = eib_settings(loaded.config)
  head = make_head(st, int(loaded.config.eib.hidden))
  start = eib_tower.tower_start(base, TUNED_K)
  tower = eib_tower.tower_params(loaded.encoder, start)

  def train_time(dtype):
    cache = eib_tower.encode_lower(base, prompts, start, 8, dtype=dtype)
    return eib_tower.predict_tower(tower, loaded.params["head"], cache, base, head, st["pool"])

  np.testing.assert_allclose(a, train_time(np.float32), atol=1e-5)
  np.testing.assert_allclose(a, train_time(np.float16), atol=2e-3)  # eib-train's cache
  frozen = eib_tower.predict_tower(
    eib_tower.tower_params(base, start),
    loaded.params["head"],
    eib_tower.encode_lower(base, prompts, start, 8, dtype=np.float32),
    base,
    head,
    st["pool"],
  )
  assert np.abs(a - frozen).max() > 1e-3
  assert not trunc.any()


def test_generator_must_use_the_tuned_tower(tuned, trained):
  from emotalker_jax.checkpoints.eib import check_eib_text_encoder
  from emotalker_jax.models.text_encoder import default_minilm_path, load_text_encoder

  out, _ = tuned
  other = default_minilm_path()
  with pytest.raises(ValueError) as e:
    check_eib_text_encoder(str(out), other)
  msg = str(e.value)
  assert other in msg and str(out / "text_encoder") in msg
  assert f"--config.text.path={out / 'text_encoder'}" in msg
  check_eib_text_encoder(str(out), str(out / "text_encoder"))  # the right one: accepted
  check_eib_text_encoder(str(trained[0]), other)  # a frozen-tower EIB: nothing to check
  with pytest.raises(ValueError, match="fine-tuned with its own text tower"):
    E.load_eib(str(out), encoder=load_text_encoder(None, "minilm", 48))


@pytest.mark.slow
def test_default_eib_flags_content_free_prompts_but_not_situations(tmp_path, capsys):
  """The trained default EIB (`emotalker eib-train` with configs/tiny.py's defaults, about
  15 minutes on 2 cores): a prompt with no emotion content is flagged, a sad situation
  with no emotion word is not."""
  from emotalker_jax.cli import main

  out = tmp_path / "eib"
  assert main(["eib-train", "--out", str(out), "--config", "configs/tiny.py"]) == 0
  capsys.readouterr()
  prompts = ["reading the weather report", "her dog just died"]
  rc, stdout, err = _run(["emotion", "--eib", str(out)] + prompts, capsys)
  assert rc == 0
  rows = [json.loads(x) for x in stdout.splitlines()]
  assert rows[0].get("no_emotion_content") is True and "prompt #1" in err
  assert "no_emotion_content" not in rows[1] and "prompt #2" not in err
