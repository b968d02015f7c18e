"""FED's vocabulary: the lexicon of emotion terms, degree words, sentence frames,
connectives and content-free sentences (package data ``data/fed_lexicon.json``) parsed into
tables, and their fixed partition into train / validation / test pools (``split_pools``).
The corpus generator built on them and the label rules: ``emotalker_jax/fed.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses
import functools
import importlib.resources
import json
import re
import zlib

import numpy as np

from emotalker_jax.emotions import EMOTION_INDEX, EMOTIONS, NUM_EMOTIONS

SPLITS = ("train", "validation", "test")
# Diagnostic split: the test split's held-out frames, connectives and content-free
# sentences filled with the *train* vocabulary, so unseen phrasing and unseen words can
# be told apart. Same size as test.
DIAGNOSTIC_SPLITS = ("test_frames",)
ALL_SPLITS = SPLITS + DIAGNOSTIC_SPLITS
SPLIT_SEED = 401_08049  # fixes which terms / frames are held out (FED 1 and 2)
SPLIT_FRACTIONS = {"train": 0.8, "validation": 0.1, "test": 0.1}
DEFAULT_SIZE = 60_000  # records over all three splits
BARE = 0.7  # degree of a term with no degree word
NEUTRAL_DEFAULT = BARE  # label of "no emotion content" / a negated-only prompt
PRIMARY = 0.8  # degree of the primary emotion in "mostly X, ..." phrases
P_CANONICAL = 0.2  # chance a train phrase uses a pinned (canonical) term
CATEGORIES = (
  "single",
  "mixture",
  "proportion",
  "negation",
  "contrast",
  "content_free",
  # FED 2 (emotalker_jax/fed_situations.py)
  "situation",
  "facial_action",
  "idiom",
  "hedge",
  "concealment",
  "contrast_mix",
  "multi_clause",
)
KINDS = ("adj", "noun", "verb", "facs")
FED_VERSION = "2.0.0"


# ----------------------------------------------------------------------------------------
# The lexicon, degree words, sentence frames, connectives and content-free sentences: one
# line per entry in the package data file data/fed_lexicon.json (its keys below). Formats:
#
# lexicon (per emotion): "<kind> <text> [<w>] [pin] [fixed]".
#   kind: adj | noun | verb (-ing phrase) | facs ("<part> | <participle>")
#   w: bare strength (default 0.7); pin: always in train; fixed: takes no degree word
#   (idioms, multi-word phrases). "{Poss}" is the subject's possessive (her/his/their).
# degrees: "<kind> <value> <text> [pin]". kind adj: pre-modifier ("slightly X"); noun:
#   quantifier ("a hint of X"); nounq: adjectival quantifier ("deep X"); verb: "<text>"
#   with "~" marking where the verb goes ("~ slightly", "barely ~"); facs: participle
#   modifier ("brows slightly knitted").
# degree_holdout: the degree words held out of train (and of the other held-out split).
# frames: "<id> <kind> [flags] :: <template>". Flags: pin (always train), attr (the slot
#   is attributive: "a {A} face" — plain one-word terms only), nodet (no determiner
#   phrases such as "a hint of" in the slot). Slots: {A} adj phrase, {N} noun phrase, {V}
#   -ing phrase, {F} facial-action phrase; {a_A} = the adj phrase with its article.
# mixtures: "<id> <outer kind> <type> <n> [pin] :: <template>". type: sym (each component
#   keeps its own degree), role (primary marker "mostly" = 0.8, then minor components;
#   ordered as worded), prop (shares sum to 1), more ("more X than Y": X bare, Y 0.4).
#   Slots: {A1} adj phrase with any degree; {A1+} adj phrase with a degree >= 0.55; {a1}
#   bare adj; {N1}/{N1+}/{n1} the same for nouns; {V1}/{V1+} -ing phrases; {m2} a minor
#   adj degree (0.3-0.45), {m3} a trace degree (0.1-0.25); {q2}/{q3} the same for noun
#   quantifiers; {p1}.. percentages.
# negations: "<id> <type> [pin] :: template". type neg: only {x} (bare adj) / {xn} (noun)
#   negated -> neutral; contrast: {x}/{xn} negated and {A}/{a}/{N} asserted.
# content_free: "<id> [pin] :: template", descriptions with no emotion content (label:
#   neutral = NEUTRAL_DEFAULT).
# subjects: (subject, object, possessive, pronoun, plural) of {S} {O} {Poss} {P}; people:
#   {person}; conjugations: verb slot -> (singular, plural); colours: {colour}.
# ----------------------------------------------------------------------------------------
_LEXICON_FILE = importlib.resources.files("emotalker_jax") / "data" / "fed_lexicon.json"
_TABLES = json.loads(_LEXICON_FILE.read_text(encoding="utf-8"))
_DEGREE_HOLDOUT = {split: frozenset(words) for split, words in _TABLES["degree_holdout"].items()}
SUBJECTS = tuple(tuple(s) for s in _TABLES["subjects"])
PEOPLE = tuple(_TABLES["people"])
CONJUGATIONS = {verb: tuple(forms) for verb, forms in _TABLES["conjugations"].items()}
COLOURS = tuple(_TABLES["colours"])


# ----------------------------------------------------------------------------------------
# Parsed tables.
# ----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Term:
  """One emotion word or phrase. id = "<emotion>:<kind>:<text>"."""

  emotion: int
  kind: str  # adj | noun | verb | facs
  text: str  # for facs: "<part> | <participle>"
  w: float  # bare strength
  pin: bool
  fixed: bool  # takes no degree word

  @property
  def id(self) -> str:
    return f"{EMOTIONS[self.emotion]}:{self.kind}:{self.text}"

  def surface(self, poss: str = "her") -> str:
    if self.kind in ("facs", "face"):  # "<part> | <state>"
      part, participle = [s.strip() for s in self.text.split("|")]
      return f"{part} {participle}".replace("{Poss}", poss)
    return self.text.replace("{Poss}", poss)


@dataclasses.dataclass(frozen=True)
class Degree:
  kind: str  # adj | noun | nounq | verb | facs
  value: float
  text: str
  pin: bool


@dataclasses.dataclass(frozen=True)
class Frame:
  id: str
  kind: str
  template: str
  pin: bool
  flags: frozenset = frozenset()
  n: int = 1


def _parse_lexicon() -> list[Term]:
  terms, seen = [], set()
  for emo, lines in _TABLES["lexicon"].items():
    for line in lines:
      kind, rest = line.split(" ", 1)
      if kind == "facs":
        parts = [p.strip() for p in rest.split("|")]
        flags = set(parts[2:])
        text = f"{parts[0]} | {parts[1]}"
        w = BARE
      else:
        toks = rest.split(" ")
        flags = set()
        w = BARE
        while toks and (toks[-1] in ("pin", "fixed") or re.fullmatch(r"\d\.\d+", toks[-1])):
          t = toks.pop()
          if t in ("pin", "fixed"):
            flags.add(t)
          else:
            w = float(t)
        text = " ".join(toks)
      term = Term(EMOTION_INDEX[emo], kind, text, w, "pin" in flags, "fixed" in flags)
      key = term.surface().lower()
      if key in seen:
        raise AssertionError(f"duplicate FED term {key!r}")
      seen.add(key)
      terms.append(term)
  return terms


def _parse_degrees() -> list[Degree]:
  out = []
  for line in _TABLES["degrees"]:
    kind, value, rest = line.split(" ", 2)
    pin = rest.endswith(" pin")
    text = rest[:-4] if pin else rest
    out.append(Degree(kind, float(value), text, pin))
  return out


def _parse_frames(lines: Sequence[str], typed: bool | str) -> list[Frame]:
  out = []
  for line in lines:
    head, template = line.split("::", 1)
    toks = head.split()
    fid = toks[0]
    if typed == "mix":
      kind, ftype, n = toks[1], toks[2], int(toks[3])
      flags = frozenset(toks[4:]) | {ftype}
    elif typed == "neg":
      kind, n = toks[1], 1
      flags = frozenset(toks[1:])
    elif typed == "free":
      kind, n = "free", 1
      flags = frozenset(toks[1:])
    else:
      kind, n = toks[1], 1
      flags = frozenset(toks[2:])
    out.append(Frame(fid, kind, template.strip(), "pin" in flags, flags, n))
  return out


TERMS: tuple[Term, ...] = tuple(_parse_lexicon())
DEGREES: tuple[Degree, ...] = tuple(_parse_degrees())
FRAMES: tuple[Frame, ...] = tuple(_parse_frames(_TABLES["frames"], False))
MIXTURES: tuple[Frame, ...] = tuple(_parse_frames(_TABLES["mixtures"], "mix"))
NEGATIONS: tuple[Frame, ...] = tuple(_parse_frames(_TABLES["negations"], "neg"))
CONTENT_FREE: tuple[Frame, ...] = tuple(_parse_frames(_TABLES["content_free"], "free"))


def _partition(items: Sequence, rng: np.random.Generator) -> dict[str, list]:
  """Splits the unpinned items into train / validation / test: ~20% test (at least one
  when 2+ are free), ~15% validation (at least one when 3+ are free), the rest train."""
  pinned = [x for x in items if x.pin]
  free = [x for x in items if not x.pin]
  order = rng.permutation(len(free))
  free = [free[i] for i in order]
  n = len(free)
  n_test = max(int(round(0.2 * n)), 1) if n >= 2 else 0
  n_val = max(int(round(0.15 * n)), 1) if n >= 3 else 0
  return {
    "test": free[:n_test],
    "validation": free[n_test : n_test + n_val],
    "train": pinned + free[n_test + n_val :],
  }


def _group_seed(*names: str) -> np.random.Generator:
  return np.random.default_rng([SPLIT_SEED, zlib.crc32("/".join(names).encode())])


@dataclasses.dataclass
class Pools:
  """The vocabulary one split may use."""

  terms: dict  # (emotion, kind) -> list[Term]
  degrees: dict  # kind -> list[Degree]
  frames: dict  # kind -> list[Frame]
  mixtures: list
  negations: list
  content_free: list


@functools.lru_cache(maxsize=1)
def split_pools() -> dict[str, Pools]:
  """The fixed train / validation / test partition of terms, frames and connectives
  (plus the diagnostic 'test_frames': train terms and degrees, test frames). Read-only."""
  pools = {s: Pools({}, {}, {}, [], [], []) for s in SPLITS}
  for e in range(NUM_EMOTIONS):
    for kind in KINDS:
      group = [t for t in TERMS if t.emotion == e and t.kind == kind]
      parts = _partition(group, _group_seed("term", EMOTIONS[e], kind))
      for s in SPLITS:
        pools[s].terms[(e, kind)] = parts[s]
  for kind in KINDS:
    group = [f for f in FRAMES if f.kind == kind]
    parts = _partition(group, _group_seed("frame", kind))
    for s in SPLITS:
      pools[s].frames[kind] = parts[s]
  for name, table in (
    ("mixtures", MIXTURES),
    ("negations", NEGATIONS),
    ("content_free", CONTENT_FREE),
  ):
    # Partition within each (type, n) group so every split has every mixture type.
    groups: dict = {}
    for f in table:
      key = (tuple(sorted(f.flags & {"sym", "role", "prop", "more", "neg", "contrast"})), f.n)
      groups.setdefault(key, []).append(f)
    for gk, group in sorted(groups.items(), key=lambda kv: str(kv[0])):
      parts = _partition(group, _group_seed(name, str(gk)))
      for s in SPLITS:
        getattr(pools[s], name).extend(parts[s])
  held = set().union(*_DEGREE_HOLDOUT.values())
  for s in SPLITS:
    for kind in ("adj", "noun", "nounq", "verb", "facs"):
      pools[s].degrees[kind] = [
        d
        for d in DEGREES
        if d.kind == kind and (d.text not in held or d.text in _DEGREE_HOLDOUT.get(s, ()))
      ]
  tr, te = pools["train"], pools["test"]
  pools["test_frames"] = Pools(
    terms=tr.terms,
    degrees=tr.degrees,
    frames=te.frames,
    mixtures=te.mixtures,
    negations=te.negations,
    content_free=te.content_free,
  )
  return pools
