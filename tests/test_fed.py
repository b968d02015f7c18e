"""FED corpus: determinism, size, held-out vocabulary and frames, label rules, TFDS/JSONL."""

import json
import re

import numpy as np
import pytest

from emotalker_jax import fed, fed_lexicon
from emotalker_jax.emotions import EMOTION_INDEX, EMOTIONS


@pytest.fixture(scope="module")
def corpus():
  """The default-size corpus, seed 0 (all splits incl. test_frames)."""
  return fed.generate(fed.DEFAULT_SIZE, seed=0)


def _key(records):
  return [(r.prompt, tuple(np.round(r.intensities, 4))) for r in records]


def test_default_size_has_at_least_50k_unique_pairs(corpus):
  main = [r for s in fed_lexicon.SPLITS for r in corpus[s]]
  assert len(main) >= 50_000
  assert len({r.prompt.lower().rstrip(".") for r in main}) == len(main)
  sizes = fed.split_sizes(fed.DEFAULT_SIZE)
  assert {s: len(corpus[s]) for s in sizes} == sizes
  cats = {r.category for r in corpus["train"]}
  assert cats == set(fed_lexicon.CATEGORIES)
  # every emotion is the dominant one of many prompts
  dom = np.bincount([int(np.argmax(r.intensities)) for r in corpus["train"]], minlength=8)
  assert dom.min() > 1000


def test_deterministic_from_seed_and_seed_changes_it():
  a = fed.generate(400, seed=3)
  b = fed.generate(400, seed=3)
  c = fed.generate(400, seed=4)
  for s in fed.ALL_SPLITS:
    assert _key(a[s]) == _key(b[s])
    assert _key(a[s]) != _key(c[s])
  # the held-out vocabulary is part of FED, not of the seed
  assert fed.split_pools() is fed.split_pools()


def test_heldout_terms_and_frames_never_in_train(corpus):
  pools = fed.split_pools()
  train = corpus["train"]
  train_terms = {t for r in train for t in r.terms}
  train_frames = {f for r in train for f in r.frame.split("+")}
  for split in ("validation", "test"):
    held_terms = {t.id for t in fed.heldout_terms(split)}
    held_frames = (
      {f.id for fs in pools[split].frames.values() for f in fs}
      | {f.id for f in pools[split].mixtures}
      | {f.id for f in pools[split].negations}
      | {f.id for f in pools[split].content_free}
    )
    assert held_terms and held_frames
    assert not held_terms & train_terms
    assert not held_frames & train_frames
    # each held-out record uses only its own split's vocabulary and frames
    for r in corpus[split]:
      assert set(r.terms) <= held_terms, r
      assert set(r.frame.split("+")) <= held_frames, r
  # every emotion has held-out synonyms in test
  per_emotion = {EMOTION_INDEX[t.id.split(":")[0]] for t in fed.heldout_terms("test")}
  assert per_emotion == set(range(8))
  # and as text: no held-out word / phrase occurs in any train prompt
  text = "\n".join(r.prompt.lower() for r in train)
  for t in fed.heldout_terms("test") + fed.heldout_terms("validation"):
    forms = {t.surface(p).lower() for p in ("her", "his", "their", "its")}
    for f in forms:
      assert not re.search(rf"\b{re.escape(f)}\b", text), (t.id, f)
  # the diagnostic split: train words in test frames
  for r in corpus["test_frames"]:
    assert set(r.terms) <= train_terms | {t.id for t in fed.TERMS if t.pin}
    assert not set(r.frame.split("+")) & train_frames


def test_label_invariants(corpus):
  for s in fed.ALL_SPLITS:
    for r in corpus[s]:
      v = r.intensities
      assert v.shape == (8,) and v.dtype == np.float32
      assert np.all((v >= 0) & (v <= 1)), r
      assert r.n_emotions == int((v > 0).sum()) >= 1
      assert r.is_mixed == (r.n_emotions >= 2)
      if r.order:  # worded order: "mostly X, a little Y" -> X > Y (> Z)
        assert all(v[a] > v[b] for a, b in zip(r.order, r.order[1:])), r
      for k in r.negated:
        assert v[k] == 0.0, r
      if r.category == "negation":
        assert v[0] == fed.NEUTRAL_DEFAULT and r.n_emotions == 1
      if r.category == "content_free":
        assert v[0] == fed.NEUTRAL_DEFAULT and r.n_emotions == 1 and not r.terms
      if r.category == "proportion":
        assert abs(float(v.sum()) - 1.0) < 2e-3, r


def test_label_rules_on_worded_examples(corpus):
  recs = {r.prompt.lower().rstrip("."): r for s in fed_lexicon.SPLITS for r in corpus[s]}
  found = 0
  for p, r in recs.items():
    m = re.fullmatch(r"mostly (\w+), (a little|slightly) (\w+)", p)
    if m:  # "mostly X, a little Y": X = 0.8, Y = 0.3
      found += 1
      assert np.sort(r.intensities[r.intensities > 0]) == pytest.approx([0.3, 0.8]), r
      assert r.intensities[r.order[0]] == pytest.approx(0.8)
    m = re.fullmatch(r"(slightly|extremely|very) (angry|happy|sad|surprised)", p)
    if m:  # canonical words: s = d
      found += 1
      want = {"slightly": 0.3, "very": 0.8, "extremely": 0.95}[m.group(1)]
      assert r.intensities[EMOTION_INDEX[m.group(2)]] == pytest.approx(want)
    m = re.fullmatch(r"not at all (\w+)", p)
    if m:
      found += 1
      assert r.intensities[0] == pytest.approx(fed.NEUTRAL_DEFAULT) and r.n_emotions == 1
    m = re.fullmatch(r"equal parts (\w+) and (\w+)", p)
    if m:
      found += 1
      assert r.intensities[r.intensities > 0] == pytest.approx([0.5, 0.5])
  assert found >= 10
  # the strength rule: s = min(1, w * d / 0.7)
  furious = next(t for t in fed.TERMS if t.text == "furious")
  annoyed = next(t for t in fed.TERMS if t.text == "annoyed")
  assert fed.term_intensity(furious, 0.3) == pytest.approx(0.3 / 0.7)
  assert fed.term_intensity(furious, 0.95) == 1.0
  assert fed.term_intensity(annoyed, None) == pytest.approx(0.4)


def test_describe_matches_the_vector():
  rng = np.random.default_rng(0)
  for s in (
    [0, 0, 0, 0, 0, 0.7, 0, 0],
    [0, 0.3, 0, 0, 0, 0, 0.8, 0],
    [0, 0, 0, 0, 1 / 3, 0, 0, 0],
    [0, 0, 0.5, 0, 0, 0, 0, 0.25],
    [0] * 8,
  ):
    r = fed.describe(np.array(s, np.float32), rng)
    want = np.array(s, np.float32)
    if not want.any():
      assert r.category == "content_free" and r.intensities[0] == fed.NEUTRAL_DEFAULT
      continue
    assert np.abs(r.intensities - want).max() <= 0.05 + 1e-6, (s, r)
    assert set(np.flatnonzero(r.intensities)) == set(np.flatnonzero(want))
  with pytest.raises(ValueError, match="8 finite"):
    fed.describe(np.zeros(5), rng)


def test_contains_emotion_word():
  assert fed.contains_emotion_word("brows knitted, lips pressed")
  assert fed.contains_emotion_word("She is over the moon!")
  assert fed.contains_emotion_word("a livid stare")  # held-out words count too
  assert not fed.contains_emotion_word("the cat sat on the mat")
  assert not fed.contains_emotion_word("asdf qwerty")


def test_fed_command_writes_tfds_and_jsonl(tmp_path, capsys):
  from emotalker_jax.cli import main
  from input_pipeline import fed_tfds

  out = tmp_path / "fed"
  assert main(["fed", "--out", str(out), "--size", "60", "--seed", "5"]) == 0
  summary = json.loads(capsys.readouterr().out)
  assert summary["splits"] == {"train": 48, "validation": 6, "test": 6, "test_frames": 6}
  want = fed.generate(60, seed=5)
  lines = (out / "fed.jsonl").read_text(encoding="utf-8").splitlines()
  got = [fed.FedRecord.from_json(json.loads(x)) for x in lines]
  assert _key(got) == _key([r for s in want for r in want[s]])
  src = fed_tfds.data_source(str(out), "test", size=60, seed=5)
  assert len(src) == 6
  by_prompt = {r.prompt: r for r in want["test"]}
  for i in range(len(src)):
    ex = src[i]
    r = by_prompt[ex["prompt"].decode("utf-8")]
    np.testing.assert_array_equal(ex["intensities"], r.intensities)
    assert fed_lexicon.CATEGORIES[ex["category"]] == r.category
    assert ex["n_emotions"] == r.n_emotions and ex["is_mixed"] == int(r.is_mixed)
  # bad input
  assert main(["fed", "--out", str(out), "--size", "2"]) == 2
  assert "too small" in capsys.readouterr().err


def test_emotion_names_cover_all():
  assert {t.emotion for t in fed.TERMS} == set(range(len(EMOTIONS)))
