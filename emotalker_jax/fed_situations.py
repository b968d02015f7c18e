"""FED 2's building blocks beyond emotion words: situations, everyday facial actions, idioms,
hedges, concealment / contrast mixtures and multi-clause prompts (package data
``data/fed_situations.json``), their fixed train / validation / test partition
(``extra_pools``), the NRC Emotion Lexicon reader (``nrc_terms``) and the generators of the
new categories (``Extra``, used by ``fed._Gen``). Label rules: docs/FED.md, "FED 2".

Label rules of the new categories, in short (s: the (8,) intensity vector):

* situation: the event type's appraisal emotion at the filler's severity ("losing her
  goldfish" sad 0.45, "losing her dog" sad 0.9); routine events are neutral 0.6-0.75;
* facial_action: one emotion's 1-3 everyday actions with one degree word:
  s = min(1, max_i(w_i * d / 0.7 for graded, w_i for fixed) + 0.05 * (k - 1)); two
  emotions' actions ("{F1}, but {F2}") each keep their own value;
* idiom: the idiom's fixed strength w;
* hedge: s = min(1, w * h / 0.7) with the hedge's value h in 0.1-0.25 ("the ghost of a
  smile" happy 0.15): low, but the only (dominant) emotion;
* concealment / contrast_mix: the template states both values; slot 1 (the felt emotion
  in concealment, the first-worded or "underneath" one in a contrast) dominates;
* multi_clause: a situation plus a described reaction; same emotion: the larger of the
  severity and the reaction's value; different: the reaction keeps its value (>= 0.5) and
  the situation's emotion gets min(severity, 0.4).

The NRC Emotion Lexicon (Mohammad & Turney 2013, "Crowdsourcing a word-emotion association
lexicon", Computational Intelligence 29(3); NRC's terms: research use) is read from the
``nrclex`` package's data file (MIT code); only reviewed person-state adjectives it
associates with exactly one of anger / disgust / fear / joy / sadness / surprise are used.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import importlib.util
import json
import os
import re

import numpy as np

from emotalker_jax.emotions import EMOTION_INDEX, EMOTIONS, NUM_EMOTIONS
from emotalker_jax.fed_lexicon import (
  BARE,
  CONTENT_FREE,
  FRAMES,
  PEOPLE,
  SPLITS,
  SUBJECTS,
  TERMS,
  Degree,
  Frame,
  Term,
  _group_seed,
  _partition,
)

NRC_INSTALL_HINT = "pip install --no-deps nrclex==4.1.0"
NRC_EMOTIONS = {
  "anger": "angry",
  "disgust": "disgusted",
  "fear": "fear",
  "joy": "happy",
  "sadness": "sad",
  "surprise": "surprised",
}
NRC_W = 0.6  # bare strength of an NRC word: an association, not a graded rating
FACE_STEP = 0.05  # each further facial action of the same emotion adds this much
MULTI_OTHER = 0.4  # cap of the situation's emotion when the reaction is another one
MULTI_MIN_REACTION = 0.5
EXTRA_KINDS = ("face", "idiom_adj", "idiom_verb", "expr", "adverb", "display", "nrc")
_PRONOUN_OBJECT = {"she": "her", "he": "him", "they": "them", "it": "it"}

_FILE = importlib.resources.files("emotalker_jax") / "data" / "fed_situations.json"
_T = json.loads(_FILE.read_text(encoding="utf-8"))


@dataclasses.dataclass(frozen=True)
class Event:
  """A situation type: forms c (past clause), p (past perfect clause), g (gerund phrase),
  each with "{x}" for the filler; fillers: ((text, severity), ...). id "<emotion>:event:<id>"."""

  emotion: int
  name: str
  forms: tuple
  fillers: tuple
  pin: bool = False  # always in train

  @property
  def id(self) -> str:
    return f"{EMOTIONS[self.emotion]}:event:{self.name}"

  def render(self, form: str, filler: str, ctx: dict, just: bool = False) -> str:
    text = self.forms["cpg".index(form)].replace("{x}", filler)
    pro = ctx["P"]
    values = {"Poss": ctx["Poss"], "P": pro, "O": _PRONOUN_OBJECT.get(pro, "them")}
    values.update({"is": ctx["P_is"], "was": ctx["P_was"], "just": "just " if just else ""})
    return text.format(**values)

  def surfaces(self) -> list[str]:
    """Every form with every filler (her/she): for the held-out text checks."""
    ctx = {"P": "she", "Poss": "her", "P_is": "is", "P_was": "was"}
    return [self.render(f, x, ctx) for f in "cpg" for x, _ in self.fillers]


def _parse_events() -> list[Event]:
  out = []
  for emo, lines in _T["events"].items():
    for line in lines:
      parts = [p.strip() for p in line.split("::")]
      head = parts[0].split()
      forms = tuple(p.strip() for p in parts[1].split("|"))
      if len(parts) > 2:
        fillers = []
        for f in parts[2].split(";"):
          text, sev = f.strip().rsplit(" ", 1)
          fillers.append((text, float(sev)))
      else:
        fillers = [("", float(head[1]))]
      out.append(Event(EMOTION_INDEX[emo], head[0], forms, tuple(fillers), "pin" in head))
  return out


def _parse_terms() -> list[Term]:
  out = []
  for line in _T["face"]:
    p = [x.strip() for x in line.split("|")]
    w = float(p[3]) if len(p) > 3 else BARE
    out.append(Term(EMOTION_INDEX[p[0]], "face", f"{p[1]} | {p[2]}", w, False, "fixed" in p))
  for line in _T["idiom"]:
    emo, form, text, w = [x.strip() for x in line.split("|")]
    out.append(Term(EMOTION_INDEX[emo], f"idiom_{form}", text, float(w), False, True))
  for line in _T["expr"]:
    p = [x.strip() for x in line.split("|")]
    out.append(Term(EMOTION_INDEX[p[0]], "expr", p[1], float(p[2]), "pin" in p, False))
  for table in ("adverb", "display"):
    for line in _T[table]:
      p = [x.strip() for x in line.split("|")]
      out.append(Term(EMOTION_INDEX[p[0]], table, p[1], BARE, "pin" in p, True))
  return out


def _parse_hedges() -> list[Degree]:
  out = []
  for line in _T["hedge"]:
    p = [x.strip() for x in line.split("|")]
    kind, value, text = p[0].split(" ", 2)
    out.append(Degree(f"h_{kind}", float(value), text, "pin" in p))
  return out


def _parse_frames() -> tuple[list[Frame], dict]:
  """Frames of the new categories and {frame id: (type, values)} for the two-slot ones."""
  frames, values = [], {}
  kinds = {"hframe": "hedge", "fframe": "face", "fmix": "facemix", "mframe": "multi"}
  for table, kind in kinds.items():
    for line in _T[table]:
      head, tmpl = [x.strip() for x in line.split("::", 1)]
      toks = head.split()
      frames.append(Frame(toks[0], kind, tmpl, "pin" in toks, frozenset(toks[1:])))
  for table, prefix in (("iframe", "idiom_"), ("sframe", "sit_")):
    for line in _T[table]:
      head, tmpl = [x.strip() for x in line.split("::", 1)]
      toks = head.split()
      frames.append(Frame(toks[0], prefix + toks[1], tmpl, "pin" in toks, frozenset(toks[2:])))
  for line in _T["conceal"]:
    head, tmpl = [x.strip() for x in line.split("::", 1)]
    toks = head.split()
    ftype = toks[1]
    if ftype == "fixed":
      vals = tuple(
        (EMOTION_INDEX[k], float(v)) for k, v in (x.split(":") for x in toks[2].split(","))
      )
      pin = "pin" in toks[3:]
    else:
      vals = (float(toks[2]), float(toks[3]))
      pin = "pin" in toks[4:]
    frames.append(Frame(toks[0], "conceal", tmpl, pin, frozenset({ftype})))
    values[toks[0]] = (ftype, vals)
  for line in _T["contrastmix"]:
    head, tmpl = [x.strip() for x in line.split("::", 1)]
    toks = head.split()
    frames.append(Frame(toks[0], "contrastmix", tmpl, "pin" in toks, frozenset({"two"})))
    values[toks[0]] = ("two", (float(toks[1]), float(toks[2])))
  return frames, values


EVENTS: tuple[Event, ...] = tuple(_parse_events())
EXTRA_TERMS: tuple[Term, ...] = tuple(_parse_terms())
HEDGES: tuple[Degree, ...] = tuple(_parse_hedges())
_FRAMES, FRAME_VALUES = _parse_frames()
EXTRA_FRAMES: tuple[Frame, ...] = tuple(_FRAMES)


# ----------------------------------------------------------------------------------------
# The NRC Emotion Lexicon (from the nrclex package).
# ----------------------------------------------------------------------------------------


def nrc_lexicon_path() -> str:
  """Path of nrclex's data/nrc_en.json. Raises FileNotFoundError naming the pip line."""
  spec = importlib.util.find_spec("nrclex")
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(
      "FED reads the NRC Emotion Lexicon from the 'nrclex' package, which is not installed; "
      f"install it with: {NRC_INSTALL_HINT}"
    )
  for root in spec.submodule_search_locations:
    path = os.path.join(root, "data", "nrc_en.json")
    if os.path.isfile(path):
      return path
  raise FileNotFoundError(
    f"nrc_en.json is missing from nrclex at {list(spec.submodule_search_locations)}; "
    f"reinstall it: {NRC_INSTALL_HINT}"
  )


@functools.lru_cache(maxsize=1)
def nrc_lexicon() -> dict:
  """{word: [NRC affect labels]} (anger, anticipation, disgust, fear, joy, negative, ...)."""
  with open(nrc_lexicon_path(), encoding="utf-8") as f:
    return json.load(f)


@functools.lru_cache(maxsize=1)
def nrc_terms() -> tuple[Term, ...]:
  """The reviewed NRC words (``nrc_keep``) that NRC associates with exactly one of its six
  basic emotions, that emotion being the one they were reviewed under, and that FED's own
  lexicon does not already hold: Terms of kind "nrc", graded, bare strength NRC_W."""
  lex = nrc_lexicon()
  own = {t.text.lower() for t in TERMS} | {t.text.lower() for t in EXTRA_TERMS}
  out = []
  for nrc_emo, words in _T["nrc_keep"].items():
    for word in words:
      labels = [x for x in lex.get(word, ()) if x in NRC_EMOTIONS]
      if labels != [nrc_emo] or word in own:
        continue
      out.append(Term(EMOTION_INDEX[NRC_EMOTIONS[nrc_emo]], "nrc", word, NRC_W, False, False))
  return tuple(out)


# ----------------------------------------------------------------------------------------
# The partition into train / validation / test pools.
# ----------------------------------------------------------------------------------------


@dataclasses.dataclass
class ExtraPools:
  """What one split may use of the FED 2 blocks."""

  terms: dict  # (emotion, kind) -> list[Term]
  events: dict  # emotion -> list[Event]
  hedges: dict  # "h_of" | "h_adj" -> list[Degree]
  frames: dict  # kind -> list[Frame]


@functools.lru_cache(maxsize=1)
def extra_pools() -> dict[str, ExtraPools]:
  """Fixed partition (fed_lexicon.SPLIT_SEED) of whole event types, terms, hedges and
  frames into train / validation / test, plus test_frames (train material, test frames)."""
  pools = {s: ExtraPools({}, {}, {}, {}) for s in SPLITS}
  terms = EXTRA_TERMS + nrc_terms()
  for e in range(NUM_EMOTIONS):
    for kind in EXTRA_KINDS:
      group = [t for t in terms if t.emotion == e and t.kind == kind]
      parts = _partition(group, _group_seed("xterm", EMOTIONS[e], kind))
      for s in SPLITS:
        pools[s].terms[(e, kind)] = parts[s]
    group = [ev for ev in EVENTS if ev.emotion == e]
    parts = _partition(group, _group_seed("event", EMOTIONS[e]))
    for s in SPLITS:
      pools[s].events[e] = parts[s]
  for kind in ("h_of", "h_adj"):
    parts = _partition([h for h in HEDGES if h.kind == kind], _group_seed("hedge", kind))
    for s in SPLITS:
      pools[s].hedges[kind] = parts[s]
  for kind in sorted({f.kind for f in EXTRA_FRAMES}):
    groups: dict = {}
    for f in EXTRA_FRAMES:
      if f.kind == kind:
        groups.setdefault(tuple(sorted(f.flags - {"pin"})), []).append(f)
    for gk, group in sorted(groups.items()):
      parts = _partition(group, _group_seed("xframe", kind, str(gk)))
      for s in SPLITS:
        pools[s].frames.setdefault(kind, []).extend(parts[s])
  tr, te = pools["train"], pools["test"]
  pools["test_frames"] = ExtraPools(tr.terms, tr.events, tr.hedges, te.frames)
  return pools


# ----------------------------------------------------------------------------------------
# Generators of the new categories (driven by fed._Gen: its rng, subject, phrases, record).
# ----------------------------------------------------------------------------------------


class Extra:
  """The FED 2 categories of one split. g: the fed._Gen; x: that split's ExtraPools."""

  def __init__(self, g, x: ExtraPools):
    self.g, self.x = g, x

  def _event(self, e: int, ctx, form: str | None = None):
    g = self.g
    ev = g.choice(self.x.events[e])
    text, sev = ev.fillers[int(g.rng.integers(len(ev.fillers)))]
    form = form or g.choice("cpg")
    phrase = ev.render(form, text, ctx, just=form == "c" and g.rng.random() < 0.35)
    return ev, form, phrase, sev

  def situation(self):
    g = self.g
    ctx = g.subject()
    e = int(g.rng.integers(NUM_EMOTIONS))
    ev, form, phrase, sev = self._event(e, ctx)
    fr = g.choice(self.x.frames["sit_" + form])
    vec = np.zeros(NUM_EMOTIONS, np.float32)
    vec[e] = sev
    text = g.fill(fr, ctx, **{form: phrase})
    return g.record(text, vec, "situation", terms=(ev.id,), frame=fr.id)

  def face_phrase(self, e: int, ctx, k: int | None = None, lo=0.0, hi=1.0):
    """(text, value, term ids) for 1-3 everyday facial actions of emotion e."""
    g = self.g
    pool = self.x.terms[(e, "face")]
    if not pool:
      g.choice([])
    k = min(len(pool), k or int(g.rng.integers(1, 4)))
    acts = [pool[int(i)] for i in sorted(g.rng.choice(len(pool), size=k, replace=False))]
    graded = [t for t in acts if not t.fixed]
    deg = g.degree("facs", lo, hi, p_bare=0.3) if graded else None
    d = BARE if deg is None else deg.value
    vals = [t.w if t.fixed else t.w * d / BARE for t in acts]
    parts = []
    for t in acts:
      part, state = [x.strip() for x in t.text.replace("{Poss}", ctx["Poss"]).split("|")]
      mod = f" {deg.text}" if deg is not None and not t.fixed else ""
      parts.append(f"{part}{mod} {state}")
    if len(parts) == 1 or g.rng.random() < 0.5:
      text = ", ".join(parts)
    else:
      text = ", ".join(parts[:-1]) + " and " + parts[-1]
    value = min(1.0, max(vals) + FACE_STEP * (k - 1))
    return text, value, tuple(t.id for t in acts)

  def facial_action(self):
    g = self.g
    ctx = g.subject()
    vec = np.zeros(NUM_EMOTIONS, np.float32)
    if g.rng.random() < 0.25:
      e1, e2 = g.emotions(2, allow_neutral=True)
      t1, s1, i1 = self.face_phrase(e1, ctx, k=int(g.rng.integers(1, 3)))
      t2, s2, i2 = self.face_phrase(e2, ctx, k=int(g.rng.integers(1, 3)))
      fr = g.choice(self.x.frames["facemix"])
      vec[e1], vec[e2] = s1, s2
      text = g.fill(fr, ctx, F1=t1, F2=t2)
      return g.record(text, vec, "facial_action", terms=i1 + i2, frame=fr.id)
    e = int(g.rng.integers(NUM_EMOTIONS))
    t, s, ids = self.face_phrase(e, ctx)
    fr = g.choice(self.x.frames["face"])
    vec[e] = s
    return g.record(g.fill(fr, ctx, F=t), vec, "facial_action", terms=ids, frame=fr.id)

  def idiom(self):
    g = self.g
    ctx = g.subject()
    e = int(g.rng.integers(NUM_EMOTIONS))
    kind = g.choice(("idiom_adj", "idiom_verb"))
    t = g.choice(self.x.terms[(e, kind)])
    fr = g.choice(self.x.frames[kind])
    vec = np.zeros(NUM_EMOTIONS, np.float32)
    vec[e] = t.w
    text = g.fill(fr, ctx, I=t.surface(ctx["Poss"]))
    return g.record(text, vec, "idiom", terms=(t.id,), frame=fr.id)

  def hedge(self):
    g = self.g
    ctx = g.subject()
    e = int(g.rng.integers(1, NUM_EMOTIONS))
    kind = "h_of" if g.rng.random() < 0.65 else "h_adj"
    h = g.choice(self.x.hedges[kind])
    exprs = self.x.terms[(e, "expr")]
    if kind == "h_of" and (not exprs or g.rng.random() < 0.5):
      t = g.choice([t for t in g.terms.get((e, "noun"), ()) if not t.fixed])
      phrase = f"{h.text} {t.surface(ctx['Poss'])}"
    else:
      t = g.choice(exprs)
      noun = t.surface(ctx["Poss"])
      if kind == "h_of":
        phrase = f"{h.text} {_article(noun)} {noun}"
      else:
        phrase = f"{_article(h.text)} {h.text} {noun}"
    fr = g.choice(self.x.frames["hedge"])
    vec = np.zeros(NUM_EMOTIONS, np.float32)
    vec[e] = min(1.0, t.w * h.value / BARE)
    text = g.fill(fr, ctx, H=phrase)
    return g.record(text, vec, "hedge", terms=(t.id,), frame=fr.id)

  def _slot(self, tmpl: str, i: int, e: int, ctx, slots: dict, ids: list):
    """Fills {n<i>} / {a<i>} / {v<i>} / {d<i>} / {D<i>} with a bare term of emotion e."""
    g = self.g
    if f"{{n{i}}}" in tmpl:
      t = g.choice([t for t in g.terms.get((e, "noun"), ()) if not t.fixed])
      key = f"n{i}"
    elif f"{{a{i}}}" in tmpl:
      t = g.term(e, "adj", plain_only=True) or g.choice([])
      key = f"a{i}"
    elif f"{{v{i}}}" in tmpl:
      t = g.choice([t for t in g.terms.get((e, "verb"), ()) if not t.fixed])
      key = f"v{i}"
    elif f"{{d{i}}}" in tmpl:
      t, key = g.choice(self.x.terms[(e, "adverb")]), f"d{i}"
    else:
      t, key = g.choice(self.x.terms[(e, "display")]), f"D{i}"
    slots[key] = t.surface(ctx["Poss"])
    ids.append(t.id)

  def concealment(self, category: str = "concealment"):
    g = self.g
    ctx = g.subject()
    fr = g.choice(self.x.frames["conceal" if category == "concealment" else "contrastmix"])
    ftype, vals = FRAME_VALUES[fr.id]
    vec = np.zeros(NUM_EMOTIONS, np.float32)
    slots, ids = {}, []
    if ftype == "fixed":
      for e, v in vals:
        vec[e] = v
      order = tuple(e for e, _ in vals)
    elif ftype == "hide1":
      e = int(g.rng.integers(1, NUM_EMOTIONS))
      self._slot(fr.template, 1, e, ctx, slots, ids)
      vec[e], order = vals[0], ()
    else:
      e1, e2 = g.emotions(2, allow_neutral=ftype in ("two", "hide"))
      if ftype != "two" and e1 == 0:
        e1, e2 = e2, e1
      self._slot(fr.template, 1, e1, ctx, slots, ids)
      self._slot(fr.template, 2, e2, ctx, slots, ids)
      vec[e1], vec[e2] = vals
      order = (e1, e2)
    text = g.fill(fr, ctx, **slots)
    return g.record(text, vec, category, terms=tuple(ids), frame=fr.id, order=order)

  def multi_clause(self):
    g = self.g
    ctx = g.subject()
    fr = g.choice(self.x.frames["multi"])
    tmpl = fr.template
    es = int(g.rng.integers(NUM_EMOTIONS))
    er = es if g.rng.random() < 0.7 else g.emotions(1, allow_neutral=True)[0]
    form = next(f for f in "cpg" if "{" + f + "}" in tmpl)
    ev, _, phrase, sev = self._event(es, ctx, form)
    slots, ids, vals = {form: phrase}, [ev.id], []
    if "{R}" in tmpl:
      ph, s, ti, _, _ = g.graded_phrase(er, "adj", ctx, lo=0.55, w_range=(0.6, 1.0), p_bare=0.4)
      slots["R"], vals, ids = ph, vals + [s], ids + list(ti)
    for key in ("F", "F3"):
      if "{" + key + "}" in tmpl:
        ph, s, ti = self.face_phrase(er, ctx, k=int(g.rng.integers(1, 3)), lo=0.55)
        slots[key], vals, ids = ph, vals + [s], ids + list(ti)
    if "{I}" in tmpl:
      t = g.choice([t for t in self.x.terms[(er, "idiom_adj")] if t.w >= MULTI_MIN_REACTION])
      slots["I"], vals, ids = t.surface(ctx["Poss"]), vals + [t.w], ids + [t.id]
    sr = max(vals)
    vec = np.zeros(NUM_EMOTIONS, np.float32)
    order = ()
    if er == es:
      vec[er] = max(sr, sev)
    else:
      if sr < MULTI_MIN_REACTION:
        g.choice([])  # resample: the reaction must stay the dominant emotion
      vec[er], vec[es] = sr, min(sev, MULTI_OTHER)
      order = (er, es)
    text = g.fill(fr, ctx, **slots)
    return g.record(text, vec, "multi_clause", terms=tuple(ids), frame=fr.id, order=order)


def _article(word: str) -> str:
  return "an" if word[0].lower() in "aeiou" else "a"


_STOP = frozenset(
  "about after again against all also and another any around away back been before behind "
  "being by could does down each even every first for from had has have having her here him "
  "his home into just last like made make more most much never next night nobody once only "
  "other over own same second should some someone something still such than that their them "
  "then there these they third this those through time told took tried under until very "
  "want was were what when where which while whole will with without would your".split()
)


@functools.lru_cache(maxsize=1)
def situation_words() -> frozenset:
  """Content words of FED's situations (all splits; 4+ letters, no function words, none of
  the words of FED 1's content-free sentences and frames): "mould", "biopsy", "brakes" ...
  For the `emotion` command's "no emotion content" check: a prompt naming a situation has
  emotion content even without an emotion word."""
  neutral = {w for f in CONTENT_FREE + FRAMES for w in _words(f.template)}
  neutral |= {w for s in SUBJECTS for w in _words(" ".join(s[:4]))}
  neutral |= {w for p in PEOPLE for w in _words(p)}
  words = set()
  for ev in EVENTS:
    ws = {w for text in ev.surfaces() for w in _words(text)}
    if ev.emotion == EMOTION_INDEX["neutral"]:
      neutral |= ws  # routine events are what "no emotion content" means
    else:
      words |= {w for w in ws if len(w) >= 4}
  return frozenset(words - _STOP - neutral)


def contains_situation_word(prompt: str) -> bool:
  """True when the prompt contains a content word of an emotional FED situation."""
  return bool(set(_words(prompt)) & situation_words())


def _words(text: str) -> list[str]:
  return re.findall(r"[a-z][a-z'-]*", text.lower().replace("{", " ").replace("}", " "))
