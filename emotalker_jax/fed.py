"""FED: a procedurally generated corpus of free-text emotion descriptions with labels.

Every record pairs a prompt ("mostly happy, a little surprised", "brows knitted, lips
pressed", "not angry, just tired") with an intensity vector s in [0, 1]^8 in MEAD order
(neutral, angry, contempt, disgusted, fear, happy, sad, surprised). The label rules are
documented in docs/FED.md; in short:

* a *term* (adjective, noun, -ing verb phrase, idiom, or FACS-like facial action) names
  one emotion and has a bare strength ``w`` (0.7 for plain words such as "angry"; 1.0
  for "furious"; 0.4 for "annoyed"; fixed for idioms);
* a *degree word* ("barely" 0.1 ... "slightly" 0.3 ... "very" 0.8 ... "utterly" 1.0)
  sets ``d`` (0.7 when absent); the intensity is ``s = min(1, w * d / 0.7)``;
* mixtures keep each component's own intensity (no normalisation), except *proportion*
  phrases ("equal parts X and Y", "70% X, 30% Y") whose shares sum to 1, and *role*
  phrases ("mostly X, a little Y") whose primary gets d = 0.8;
* negated emotions are 0; a prompt whose only emotion is negated, and a description
  with no emotion content, is neutral at 0.7 (the label of the bare word "neutral");
* neutral is an emotion like the others (graded by degree words); it is 0 whenever the
  prompt names another emotion and no neutral word.

Splits: terms (per emotion and kind), sentence frames, mixture / negation connectives
and content-free sentences are partitioned once, by a fixed ``SPLIT_SEED``, into
train / validation / test pools; the canonical words ("angry", "anger", ...) and the
phrasings quoted in the design ("not at all X", "mostly X, a little Y", ...) are pinned
to train. A validation or test prompt is built only from its own split's terms and
frames, so test accuracy measures generalisation to unseen synonyms and sentence frames.
Degree words are shared, except a few held out for validation and test.

FED 2 adds situations (appraised events, no emotion word), everyday facial actions,
idioms, hedged low intensities, concealment / contrast mixtures, multi-clause prompts and
NRC Emotion Lexicon adjectives: ``emotalker_jax/fed_situations.py`` (rules there and in
docs/FED.md); ``SHARES`` below sets how often each category is drawn.

Everything is deterministic given ``seed`` (numpy PCG64 streams per split).
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses
import functools
import json
import re

import numpy as np

from emotalker_jax.emotions import EMOTION_INDEX, EMOTIONS, NUM_EMOTIONS
from emotalker_jax.fed_lexicon import (
  ALL_SPLITS,
  BARE,
  COLOURS,
  CONJUGATIONS,
  DEFAULT_SIZE,
  NEUTRAL_DEFAULT,
  P_CANONICAL,
  PEOPLE,
  PRIMARY,
  SPLIT_FRACTIONS,
  SUBJECTS,
  TERMS,
  Degree,
  Frame,
  Pools,
  Term,
  split_pools,
)
from emotalker_jax.fed_situations import EXTRA_TERMS, Extra, extra_pools, nrc_terms

# ----------------------------------------------------------------------------------------
# Records and labels.
# ----------------------------------------------------------------------------------------


@dataclasses.dataclass
class FedRecord:
  """One FED pair. intensities: (8,) float32 in [0, 1], MEAD order."""

  prompt: str
  intensities: np.ndarray
  split: str
  category: str  # one of CATEGORIES
  n_emotions: int  # number of emotions with intensity > 0
  is_mixed: bool  # n_emotions >= 2
  is_negated: bool
  order: tuple = ()  # emotions in worded dominance order (role/prop/more phrases)
  terms: tuple = ()  # ids of the terms used
  frame: str = ""  # frame / connective ids, '+'-joined
  negated: tuple = ()  # emotions that were negated

  def to_json(self) -> dict:
    return {
      "prompt": self.prompt,
      "intensities": [round(float(x), 4) for x in self.intensities],
      "split": self.split,
      "category": self.category,
      "n_emotions": self.n_emotions,
      "is_mixed": self.is_mixed,
      "is_negated": self.is_negated,
      "order": [EMOTIONS[i] for i in self.order],
      "terms": list(self.terms),
      "frame": self.frame,
      "negated": [EMOTIONS[i] for i in self.negated],
    }

  @staticmethod
  def from_json(d: dict) -> FedRecord:
    return FedRecord(
      prompt=d["prompt"],
      intensities=np.asarray(d["intensities"], np.float32),
      split=d["split"],
      category=d["category"],
      n_emotions=int(d["n_emotions"]),
      is_mixed=bool(d["is_mixed"]),
      is_negated=bool(d["is_negated"]),
      order=tuple(EMOTION_INDEX[e] for e in d.get("order", ())),
      terms=tuple(d.get("terms", ())),
      frame=d.get("frame", ""),
      negated=tuple(EMOTION_INDEX[e] for e in d.get("negated", ())),
    )


def term_intensity(term: Term, degree: float | None) -> float:
  """s = min(1, w * d / 0.7) for a graded term (d = 0.7 when no degree word); w if fixed."""
  if term.fixed or degree is None:
    return float(term.w)
  return float(min(1.0, term.w * degree / BARE))


class _NoCandidate(Exception):
  """The split's pools have no term for a requested (emotion, kind): resample."""


class _Gen:
  """Builds records of one split from its pools with one numpy Generator."""

  def __init__(self, pools: Pools, rng: np.random.Generator, split: str):
    self.p, self.rng, self.split = pools, rng, split
    xpools = extra_pools()[split]
    self.terms = {**pools.terms, **xpools.terms}  # FED 1 kinds + FED 2 kinds ("nrc", ...)
    self.x = Extra(self, xpools)

  # -- small helpers ----------------------------------------------------------------------
  def choice(self, seq):
    if not seq:
      raise _NoCandidate()
    return seq[int(self.rng.integers(len(seq)))]

  def subject(self):
    s, o, poss, pro, plural = self.choice(SUBJECTS)
    ctx = {
      "S": s,
      "O": o,
      "Poss": poss,
      "P": pro,
      "person": self.choice(PEOPLE),
      "colour": self.choice(COLOURS),
    }
    for k, (sg, pl) in CONJUGATIONS.items():
      ctx[k] = pl if plural else sg
      ctx["P_" + k] = pl if pro == "they" else sg  # the pronoun's own agreement
    return ctx

  def term(self, emotion: int, kind: str, *, graded_only=False, plain_only=False, w_range=None):
    cands = self.terms.get((emotion, kind), [])
    if graded_only:
      cands = [t for t in cands if not t.fixed]
    if plain_only:  # a single word-like adjective usable attributively / after "more"
      cands = [t for t in cands if not t.fixed and "{" not in t.text]
    if w_range is not None:
      cands = [t for t in cands if w_range[0] <= t.w <= w_range[1]]
    pinned = [t for t in cands if t.pin]
    if pinned and self.rng.random() < P_CANONICAL:  # the emotion's own name, more often
      return self.choice(pinned)
    return self.choice(cands) if cands else None

  def degree(self, kind: str, lo=0.0, hi=1.0, p_bare=0.25, allow_bare=True):
    """A degree word of `kind` with value in [lo, hi] or None (bare, value 0.7)."""
    if allow_bare and lo <= BARE <= hi and self.rng.random() < p_bare:
      return None
    cands = [d for d in self.p.degrees[kind] if lo <= d.value <= hi]
    return self.choice(cands)

  def emotions(self, n: int, allow_neutral: bool) -> list[int]:
    pool = list(range(NUM_EMOTIONS)) if allow_neutral else list(range(1, NUM_EMOTIONS))
    return [int(i) for i in self.rng.choice(pool, size=n, replace=False)]

  # -- phrases ----------------------------------------------------------------------------
  def adj_phrase(self, term: Term, deg: Degree | None, ctx) -> str:
    t = term.surface(ctx["Poss"])
    return t if deg is None else f"{deg.text} {t}"

  def noun_phrase(self, term: Term, deg: Degree | None, ctx) -> str:
    t = term.surface(ctx["Poss"])
    return t if deg is None else f"{deg.text} {t}"

  def verb_phrase(self, term: Term, deg: Degree | None, ctx) -> str:
    t = term.surface(ctx["Poss"])
    return t if deg is None else deg.text.replace("~", t)

  def facs_phrase(self, terms: Sequence[Term], deg: Degree | None) -> str:
    acts = []
    for t in terms:
      part, participle = [s.strip() for s in t.text.split("|")]
      acts.append(f"{part} {participle}" if deg is None else f"{part} {deg.text} {participle}")
    if len(acts) == 1:
      return acts[0]
    if self.rng.random() < 0.5:
      return ", ".join(acts)
    return ", ".join(acts[:-1]) + " and " + acts[-1]

  def graded_phrase(
    self,
    emotion: int,
    kind: str,
    ctx,
    lo=0.0,
    hi=1.0,
    p_bare=0.25,
    w_range=None,
    graded_only=False,
    plain_only=False,
  ):
    """(text, intensity, term ids, degree or None, first term) for one emotion."""
    if kind == "facs":
      pool = self.p.terms[(emotion, "facs")]
      k = min(len(pool), int(self.rng.integers(1, 4)))
      idx = self.rng.choice(len(pool), size=k, replace=False)
      terms = [pool[int(i)] for i in sorted(idx)]
      fixed = all(t.fixed for t in terms)
      deg = None if fixed else self.degree("facs", lo, hi, p_bare)
      s = term_intensity(terms[0], None if deg is None else deg.value)
      return self.facs_phrase(terms, deg), s, tuple(t.id for t in terms), deg, terms[0]
    term = self.term(
      emotion,
      kind,
      graded_only=graded_only or lo > 0.0 or hi < 1.0,
      plain_only=plain_only,
      w_range=w_range,
    )
    if term is None:
      term = self.term(emotion, kind, plain_only=plain_only) or self.choice([])
    dkind = "adj" if kind == "nrc" else kind
    if kind == "noun":
      dkind = "noun" if self.rng.random() < 0.5 else "nounq"
    deg = None if term.fixed else self.degree(dkind, lo, hi, p_bare)
    if kind == "noun" and deg is not None and not self._has(dkind, lo, hi):
      deg = None
    s = term_intensity(term, None if deg is None else deg.value)
    render = {"adj": self.adj_phrase, "nrc": self.adj_phrase, "noun": self.noun_phrase}.get(
      kind, self.verb_phrase
    )
    return render(term, deg, ctx), s, (term.id,), deg, term

  def _has(self, kind, lo, hi):
    return any(lo <= d.value <= hi for d in self.p.degrees[kind])

  def fill(self, frame: Frame, ctx, **slots) -> str:
    text = frame.template
    values = dict(ctx)
    values.update(slots)
    if "{a_A}" in text:
      a = slots["A"]
      values["a_A"] = ("an " if a[0].lower() in "aeiou" else "a ") + a
    return text.format(**values)

  def finish(self, text: str) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    r = self.rng.random()
    if r < 0.3:
      text = text[0].upper() + text[1:]
    if self.rng.random() < 0.15:
      text += "."
    return text

  def outer_frame(self, kind: str, *, phrase_is_plain: bool, has_det: bool) -> Frame:
    cands = [
      f
      for f in self.p.frames[kind]
      if (phrase_is_plain or "attr" not in f.flags) and (not has_det or "nodet" not in f.flags)
    ]
    return self.choice(cands)

  # -- categories -------------------------------------------------------------------------
  def single(self) -> FedRecord:
    ctx = self.subject()
    e = int(self.rng.integers(NUM_EMOTIONS))
    kind = self.choice(("adj", "adj", "adj", "noun", "noun", "verb", "verb", "facs"))
    if kind == "adj" and self.terms.get((e, "nrc")) and self.rng.random() < 0.25:
      kind = "nrc"  # an NRC Emotion Lexicon adjective, graded like FED's own
    phrase, s, tids, deg, term = self.graded_phrase(e, kind, ctx, p_bare=0.3)
    plain = kind in ("adj", "nrc") and not term.fixed and "{" not in term.text
    kind = "adj" if kind == "nrc" else kind
    has_det = deg is not None and deg.kind == "noun"
    frame = self.outer_frame(kind, phrase_is_plain=plain, has_det=has_det)
    slot = {"adj": "A", "noun": "N", "verb": "V", "facs": "F"}[kind]
    text = self.fill(frame, ctx, **{slot: phrase})
    vec = np.zeros(NUM_EMOTIONS, np.float32)
    vec[e] = s
    return self.record(text, vec, "single", terms=tids, frame=frame.id)

  def mixture(self, n: int) -> FedRecord:
    ctx = self.subject()
    cands = [m for m in self.p.mixtures if m.n == n]
    mix = self.choice(cands)
    ftype = next(f for f in ("sym", "role", "prop", "more") if f in mix.flags)
    emos = self.emotions(n, allow_neutral=(n == 2 and self.rng.random() < 0.15))
    vec = np.zeros(NUM_EMOTIONS, np.float32)
    slots, tids = {}, []
    mid = (0.55, 0.85)  # bare-slot terms: plain mid-strength words
    strong = (0.6, 1.0)  # "{A1+}" primaries: w >= 0.6 and d >= 0.65 -> s >= 0.557
    # Proportions (prop): shares from the template.
    shares = None
    if ftype == "prop":
      if "{p1}" in mix.template:
        if n == 2:
          p1 = int(self.rng.choice(np.arange(50, 95, 5)))
          shares = [p1, 100 - p1]
        else:
          while True:
            p = sorted(self.rng.choice(np.arange(10, 75, 5), size=2, replace=False))
            shares = sorted([p[0], p[1] - p[0], 100 - p[1]], reverse=True)
            if shares[2] >= 10 and len(set(shares)) == 3:
              break
        for i, p in enumerate(shares):
          slots[f"p{i + 1}"] = str(p)
        shares = [p / 100 for p in shares]
      elif "two parts" in mix.template:
        shares = [2 / 3, 1 / 3]
      elif "{p" not in mix.template:
        shares = [1 / n] * n
    for i, e in enumerate(emos, start=1):
      tmpl = mix.template
      if f"{{A{i}}}" in tmpl:
        ph, s, ti, _, _ = self.graded_phrase(e, "adj", ctx, p_bare=0.3)
        slots[f"A{i}"] = ph
      elif f"{{A{i}+}}" in tmpl:
        ph, s, ti, _, _ = self.graded_phrase(
          e, "adj", ctx, lo=0.65, hi=1.0, w_range=strong, p_bare=0.4
        )
        slots[f"A{i}+"] = ph
      elif f"{{N{i}}}" in tmpl:
        ph, s, ti, _, _ = self.graded_phrase(e, "noun", ctx, p_bare=0.3)
        slots[f"N{i}"] = ph
      elif f"{{N{i}+}}" in tmpl:
        ph, s, ti, _, _ = self.graded_phrase(
          e, "noun", ctx, lo=0.65, hi=1.0, w_range=strong, p_bare=0.4
        )
        slots[f"N{i}+"] = ph
      elif f"{{V{i}}}" in tmpl:
        ph, s, ti, _, _ = self.graded_phrase(e, "verb", ctx, p_bare=0.3)
        slots[f"V{i}"] = ph
      elif f"{{V{i}+}}" in tmpl:
        ph, s, ti, _, _ = self.graded_phrase(
          e, "verb", ctx, lo=0.65, hi=1.0, w_range=strong, p_bare=0.4
        )
        slots[f"V{i}+"] = ph
      else:
        # bare term, minor degree word in front ({m2}/{q2}) or a share / role marker.
        noun = f"{{n{i}}}" in tmpl
        kind = "noun" if noun else "adj"
        t = (
          self.term(e, kind, plain_only=not noun, w_range=mid)
          or self.term(e, kind, plain_only=not noun)
          or self.choice([])
        )
        slots[f"{kind[0]}{i}"] = t.surface(ctx["Poss"])
        ti = (t.id,)
        d = None
        if f"{{m{i}}}" in tmpl or f"{{q{i}}}" in tmpl:
          lo, hi = (0.3, 0.45) if i == 2 else (0.1, 0.25)
          dk = "noun" if f"{{q{i}}}" in tmpl else "adj"
          deg = self.degree(dk, lo, hi, allow_bare=False)
          slots[f"{'q' if dk == 'noun' else 'm'}{i}"] = deg.text
          d = deg.value
        elif ftype == "role" and i == 1:
          d = PRIMARY
        elif ftype == "role" and "tinged with" in tmpl:
          d = 0.25
        elif ftype == "more":
          d = BARE if i == 1 else 0.4
        if shares is not None:
          s = float(shares[i - 1])  # proportions: the stated share
        elif d is not None:
          s = float(d)  # role / more phrases: the marker's value
        else:
          s = term_intensity(t, None)  # "both X and Y": each at its bare strength
      vec[e] = max(vec[e], s)
      tids.extend(ti)
    phrase = self.fill(mix, ctx, **slots)
    outer = self.outer_frame(mix.kind, phrase_is_plain=False, has_det=True)
    slot = {"adj": "A", "noun": "N", "verb": "V"}[mix.kind]
    text = self.fill(outer, ctx, **{slot: phrase})
    order = (
      tuple(emos)
      if ftype in ("role", "more") or (shares is not None and len(set(shares)) == n)
      else ()
    )
    cat = "proportion" if ftype == "prop" else "mixture"
    return self.record(text, vec, cat, terms=tuple(tids), frame=f"{mix.id}+{outer.id}", order=order)

  def negation(self, contrast: bool) -> FedRecord:
    ctx = self.subject()
    cands = [f for f in self.p.negations if ("contrast" in f.flags) == contrast]
    fr = self.choice(cands)
    x = self.emotions(1, allow_neutral=False)[0] if not contrast else None
    vec = np.zeros(NUM_EMOTIONS, np.float32)
    slots, tids = {}, []
    if contrast:
      x, y = self.emotions(2, allow_neutral=False)
      if self.rng.random() < 0.2:  # "not angry, just tired": the asserted state is neutral
        y = 0
      if "{A}" in fr.template:
        ph, s, ti, _, _ = self.graded_phrase(y, "adj", ctx, p_bare=0.35)
        slots["A"] = ph
      elif "{a}" in fr.template:
        t = self.term(y, "adj", plain_only=True) or self.choice([])
        slots["a"] = t.surface(ctx["Poss"])
        s, ti = term_intensity(t, None), (t.id,)
      else:
        ph, s, ti, _, _ = self.graded_phrase(y, "noun", ctx, p_bare=0.35)
        slots["N"] = ph
      vec[y] = s
      tids.extend(ti)
    if "{xn}" in fr.template:
      t = self.term(x, "noun", graded_only=True) or self.choice([])
      slots["xn"] = t.surface(ctx["Poss"])
    else:
      t = self.term(x, "adj", plain_only=True) or self.choice([])
      slots["x"] = t.surface(ctx["Poss"])
    tids.insert(0, t.id)
    if not contrast:
      vec[0] = NEUTRAL_DEFAULT
    text = self.fill(fr, ctx, **slots)
    return self.record(
      text,
      vec,
      "contrast" if contrast else "negation",
      terms=tuple(tids),
      frame=fr.id,
      negated=(x,),
    )

  def content_free(self) -> FedRecord:
    ctx = self.subject()
    fr = self.choice(self.p.content_free)
    vec = np.zeros(NUM_EMOTIONS, np.float32)
    vec[0] = NEUTRAL_DEFAULT
    return self.record(self.fill(fr, ctx), vec, "content_free", frame=fr.id)

  def record(self, text, vec, category, *, terms=(), frame="", order=(), negated=()):
    vec = np.round(np.clip(vec, 0.0, 1.0), 4).astype(np.float32)
    n = int((vec > 0).sum())
    return FedRecord(
      self.finish(text),
      vec,
      self.split,
      category,
      n,
      n >= 2,
      bool(negated),
      tuple(order),
      tuple(terms),
      frame,
      tuple(negated),
    )

  def sample(self) -> FedRecord:
    while True:
      try:
        return self._sample()
      except _NoCandidate:
        continue

  def _sample(self) -> FedRecord:
    r = self.rng.random()
    for p, make in zip(np.cumsum(SHARES), self._makers):
      if r < p:
        return make()
    return self.mixture(2)

  @property
  def _makers(self):
    x = self.x
    return (
      self.single,
      lambda: self.mixture(2),
      lambda: self.mixture(3),
      lambda: self.negation(contrast=False),
      lambda: self.negation(contrast=True),
      self.content_free,
      x.situation,
      x.facial_action,
      x.idiom,
      x.hedge,
      x.concealment,
      lambda: x.concealment("contrast_mix"),
      x.multi_clause,
    )


# Draw probabilities of _Gen._makers: single, 2- and 3-emotion mixtures (proportions are
# a quarter of the mixture connectives), negation, contrast, content-free, then FED 2's
# situation, facial_action, idiom, hedge, concealment, contrast_mix, multi_clause.
SHARES = (0.24, 0.13, 0.05, 0.04, 0.07, 0.03, 0.14, 0.06, 0.05, 0.04, 0.04, 0.03, 0.08)


def split_sizes(size: int, diagnostic: bool = True) -> dict[str, int]:
  """{split: records}: train / validation / test = 80 / 10 / 10 % of size (+ test_frames,
  the size of test, when diagnostic)."""
  n_val = int(round(size * SPLIT_FRACTIONS["validation"]))
  n_test = int(round(size * SPLIT_FRACTIONS["test"]))
  out = {"train": size - n_val - n_test, "validation": n_val, "test": n_test}
  if diagnostic:
    out["test_frames"] = n_test
  return out


def generate_split(split: str, n: int, seed: int = 0) -> list[FedRecord]:
  """n unique records of one split, deterministic in (seed, split)."""
  if split not in ALL_SPLITS:
    raise ValueError(f"unknown FED split {split!r}; use one of {ALL_SPLITS}")
  if n < 0:
    raise ValueError(f"FED split size must be >= 0, got {n}")
  pools = split_pools()[split]
  rng = np.random.default_rng([int(seed), ALL_SPLITS.index(split)])
  gen = _Gen(pools, rng, split)
  out, seen = [], set()
  attempts = 0
  while len(out) < n:
    attempts += 1
    if attempts > 50 * n + 1000:
      raise ValueError(f"FED split {split!r} cannot hold {n} unique prompts; lower --size")
    rec = gen.sample()
    key = rec.prompt.lower().rstrip(".")
    if key in seen:
      continue
    seen.add(key)
    out.append(rec)
  return out


def generate(
  size: int = DEFAULT_SIZE, seed: int = 0, diagnostic: bool = True
) -> dict[str, list[FedRecord]]:
  """The corpus: {split: records}, train/validation/test = 80/10/10 of ``size`` (plus the
  diagnostic test_frames split when ``diagnostic``); deterministic in seed."""
  if size < 3:
    raise ValueError(f"FED --size must be >= 3 (one record per split), got {size}")
  return {s: generate_split(s, n, seed) for s, n in split_sizes(size, diagnostic).items()}


# ----------------------------------------------------------------------------------------
# Describing a given intensity vector (for the training pipeline: a prompt for s).
# ----------------------------------------------------------------------------------------


def describe(s, rng: np.random.Generator, split: str = "train") -> FedRecord:
  """A FED prompt for the emotion state s (8,), with the label FED's rules give it.

  Up to three emotions with s_k >= 0.05 are named (largest first) by a plain graded term
  (bare strength 0.7) and the degree word whose value is closest to s_k; an all-zero or
  neutral-only s gives a neutral description. The returned label is the prompt's own FED
  label, i.e. s rounded to the degree grid.
  """
  s = np.asarray(s, np.float32).reshape(-1)
  if s.shape[0] != NUM_EMOTIONS or not np.all(np.isfinite(s)):
    raise ValueError(f"describe: expected {NUM_EMOTIONS} finite intensities, got {s}")
  s = np.clip(s, 0.0, 1.0)
  pools = split_pools()[split]
  gen = _Gen(pools, rng, split)
  ctx = gen.subject()
  comps = [int(i) for i in np.argsort(-s, kind="stable") if s[i] >= 0.05][:3]
  if not comps:
    return gen.content_free()
  vec = np.zeros(NUM_EMOTIONS, np.float32)
  phrases, tids = [], []
  for e in comps:
    cands = [
      t for t in pools.terms[(e, "adj")] if not t.fixed and t.w == BARE and "{" not in t.text
    ] or [t for t in pools.terms[(e, "adj")] if not t.fixed]
    t = gen.choice(cands)
    grid = [None] + [d for d in pools.degrees["adj"]]
    vals = np.array([BARE if d is None else d.value for d in grid])
    best = np.flatnonzero(
      np.abs(vals - s[e] * BARE / t.w) == np.abs(vals - s[e] * BARE / t.w).min()
    )
    deg = grid[int(gen.rng.choice(best))]
    phrases.append(gen.adj_phrase(t, deg, ctx))
    vec[e] = term_intensity(t, None if deg is None else deg.value)
    tids.append(t.id)
  if len(phrases) == 1:
    phrase = phrases[0]
  elif len(phrases) == 2:
    phrase = f"{phrases[0]} and {phrases[1]}"
  else:
    phrase = f"{phrases[0]}, {phrases[1]} and {phrases[2]}"
  frame = gen.outer_frame("adj", phrase_is_plain=False, has_det=True)
  return gen.record(
    gen.fill(frame, ctx, A=phrase),
    vec,
    "single" if len(comps) == 1 else "mixture",
    terms=tuple(tids),
    frame=frame.id,
  )


# ----------------------------------------------------------------------------------------
# Vocabulary queries (tests, the `emotion` command's no-content check).
# ----------------------------------------------------------------------------------------


def heldout_terms(split: str) -> list[Term]:
  """Terms of the validation or test pool (never used by train), FED 1 and FED 2 kinds
  (everyday facial actions, idioms, expressions, adverbs, displays, NRC words)."""
  pools = split_pools()[split]
  extra = extra_pools()[split]
  return [t for d in (pools.terms, extra.terms) for group in d.values() for t in group]


def heldout_frame_ids(split: str) -> set[str]:
  """Ids of every frame, connective and template of a split's pools (FED 1 and 2)."""
  p, x = split_pools()[split], extra_pools()[split]
  ids = {f.id for fs in p.frames.values() for f in fs}
  ids |= {f.id for f in p.mixtures + p.negations + p.content_free}
  return ids | {f.id for fs in x.frames.values() for f in fs}


def heldout_hedges(split: str) -> list[str]:
  """Hedge words ("the ghost of", "a flicker of") of a split: held out like degree words."""
  return [h.text for hs in extra_pools()[split].hedges.values() for h in hs]


def heldout_events(split: str) -> list:
  """Situation types (fed_situations.Event) of the validation or test pool."""
  return [ev for group in extra_pools()[split].events.values() for ev in group]


_WORD = re.compile(r"[a-z][a-z'-]*")


@functools.lru_cache(maxsize=1)
def emotion_vocabulary() -> tuple[frozenset, tuple]:
  """(words, phrases) that carry emotion content in FED, over all splits: the emotion
  names, every one-word term, every multi-word term (as a phrase, "{Poss}" as her / his /
  their / its) and the participle of every facial action. Used only for the `emotion`
  command's "no emotion content" warning, never for the intensities."""
  words = set(EMOTIONS) | {"contemptuous", "fearful", "emotion", "emotional", "expression"}
  phrases = set()
  for t in TERMS + EXTRA_TERMS + _nrc_terms_if_installed():
    if t.kind in ("facs", "face"):
      part, participle = [x.strip() for x in t.text.split("|")]
      for poss in ("her", "his", "their", "its"):
        phrases.add(f"{part} {participle}".lower().replace("{poss}", poss))
      first = participle.split()[0]
      if t.kind == "facs" and first not in ("at", "one", "in", "and"):
        words.add(first)
      continue
    if " " not in t.text:
      words.add(t.text.lower())
    else:
      for poss in ("her", "his", "their", "its", "my", "your"):
        phrases.add(t.text.lower().replace("{poss}", poss))
  return frozenset(words), tuple(sorted(phrases))


def _nrc_terms_if_installed() -> tuple:
  try:
    return nrc_terms()
  except FileNotFoundError:  # the warning works without nrclex; generating FED needs it
    return ()


def contains_emotion_word(prompt: str) -> bool:
  """True when the prompt contains a FED emotion word or phrase (see emotion_vocabulary)."""
  words, phrases = emotion_vocabulary()
  low = " ".join(_WORD.findall(prompt.lower()))
  if any(w in words for w in low.split()):
    return True
  return any(re.search(rf"\b{re.escape(p)}\b", low) for p in phrases)


def write_jsonl(records: Sequence[FedRecord], path: str) -> None:
  with open(path, "w", encoding="utf-8") as f:
    for r in records:
      f.write(json.dumps(r.to_json(), ensure_ascii=False) + "\n")


def read_jsonl(path: str) -> list[FedRecord]:
  out = []
  with open(path, encoding="utf-8") as f:
    for line in f:
      if line.strip():
        out.append(FedRecord.from_json(json.loads(line)))
  return out
