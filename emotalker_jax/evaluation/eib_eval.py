"""The EIB on a hand-written, human-style prompt set (``tests/data/eib_human.jsonl``).

The set (its rules: ``tests/data/eib_human.md``) labels each prompt with its dominant
emotion, the two strongest emotions of a mixture, or its strength rank within a ladder of the
same emotion. Figures, each with a percentile-bootstrap 95% interval over its units (rows;
ladders for ``order``; ``metrics.bootstrap_ci``):

* ``top1``: over rows with a ``dominant``: argmax of s_hat == dominant;
* ``top2_mixed``: over rows with ``top2``: the set of the two largest predicted intensities
  == the labelled pair;
* ``order``: over ladders: the predicted intensity of the ladder's emotion strictly increases
  with ``level``.

Summary figures and their targets: ``single_top1`` (rows of the single-label categories with
a dominant) >= 0.92, ``mixed_top2`` >= 0.85, ``ladder_order`` >= 0.95.

``keyword_baseline`` is the reference a learned EIB must beat: it knows only the short word
list ``KEYWORDS`` below (written for this module, not FED's vocabulary).
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses
import json
import re

import numpy as np

from emotalker_jax.emotions import EMOTION_INDEX, EMOTIONS, NUM_EMOTIONS
from emotalker_jax.evaluation.metrics import bootstrap_ci

SINGLE_CATEGORIES = (
  "plain",
  "situation",
  "facial_action",
  "idiom",
  "hedge",
  "negation",
  "ladder",
  "no_content",
)
MIXED_CATEGORIES = ("contrast", "mixture2", "mixture3")
CATEGORIES = SINGLE_CATEGORIES + MIXED_CATEGORIES
HALVES = ("dev", "test")
REQUIRED_FIELDS = ("id", "prompt", "category", "half", "dominant", "top2", "ladder", "level")
OPTIONAL_FIELDS = ("emotions", "note")
MIN_LADDER_LEVELS = 3
TARGETS = {"single_top1": 0.92, "mixed_top2": 0.85, "ladder_order": 0.95}

# The keyword baseline's whole vocabulary: emotion names and their everyday adjectives and
# nouns. Degree words, negation and word order are ignored on purpose.
KEYWORDS: dict[str, tuple[str, ...]] = {
  "neutral": ("neutral", "calm", "expressionless", "blank"),
  "angry": (
    "angry",
    "anger",
    "mad",
    "furious",
    "fury",
    "rage",
    "annoyed",
    "annoyance",
    "irritated",
    "irritation",
    "livid",
  ),
  "contempt": ("contempt", "contemptuous", "scorn", "scornful", "disdain", "disdainful"),
  "disgusted": ("disgust", "disgusted", "disgusting", "revolted", "revolting", "gross"),
  "fear": (
    "fear",
    "afraid",
    "scared",
    "frightened",
    "terrified",
    "terror",
    "nervous",
    "anxious",
    "worried",
    "panic",
  ),
  "happy": ("happy", "happiness", "joy", "glad", "delighted", "cheerful", "pleased"),
  "sad": ("sad", "sadness", "unhappy", "miserable", "sorrow", "grief"),
  "surprised": ("surprise", "surprised", "astonished", "amazed", "shocked", "stunned"),
}
KEYWORD_HIT = 0.5  # intensity added per keyword hit of an emotion (capped at 1)
KEYWORD_NEUTRAL = 0.7  # neutral's intensity when no keyword matches
_WORD = re.compile(r"[a-z]+")
_KEYWORD_EMOTION = {w: e for e, words in KEYWORDS.items() for w in words}


@dataclasses.dataclass(frozen=True)
class HumanRow:
  """One labelled prompt of the human set (fields as in ``eib_human.md``)."""

  id: str
  prompt: str
  category: str
  half: str
  dominant: str | None
  top2: tuple[str, str] | None
  ladder: str | None
  level: int | None
  emotions: tuple[str, ...] | None = None
  note: str | None = None
  line: int = 0


def _emotion(value, where: str, field: str) -> str:
  if not isinstance(value, str) or value not in EMOTION_INDEX:
    raise ValueError(
      f"{where}: {field} {value!r} is not an emotion name; use one of {', '.join(EMOTIONS)}"
    )
  return value


def _emotion_list(value, n: int | None, where: str, field: str) -> tuple[str, ...]:
  if not isinstance(value, list) or (n is not None and len(value) != n):
    raise ValueError(f"{where}: {field} must be a list of {n} emotion names, got {value!r}")
  names = tuple(_emotion(v, where, field) for v in value)
  if len(set(names)) != len(names):
    raise ValueError(f"{where}: {field} {value!r} repeats an emotion")
  return names


def _parse_row(obj, where: str, line: int) -> HumanRow:
  if not isinstance(obj, dict):
    raise ValueError(f"{where}: expected a JSON object, got {type(obj).__name__}")
  missing = [k for k in REQUIRED_FIELDS if k not in obj]
  if missing:
    raise ValueError(f"{where}: missing field(s) {', '.join(missing)}")
  unknown = sorted(set(obj) - set(REQUIRED_FIELDS) - set(OPTIONAL_FIELDS))
  if unknown:
    raise ValueError(
      f"{where}: unknown field(s) {', '.join(unknown)}; allowed: "
      f"{', '.join(REQUIRED_FIELDS + OPTIONAL_FIELDS)}"
    )
  if not isinstance(obj["id"], str) or not obj["id"]:
    raise ValueError(f"{where}: id must be a non-empty string")
  if not isinstance(obj["prompt"], str) or not obj["prompt"].strip():
    raise ValueError(f"{where}: prompt must be a non-empty string")
  cat = obj["category"]
  if cat not in CATEGORIES:
    raise ValueError(f"{where}: unknown category {cat!r}; use one of {', '.join(CATEGORIES)}")
  if obj["half"] not in HALVES:
    raise ValueError(f"{where}: half must be 'dev' or 'test', got {obj['half']!r}")
  dom = None if obj["dominant"] is None else _emotion(obj["dominant"], where, "dominant")
  top2 = None if obj["top2"] is None else _emotion_list(obj["top2"], 2, where, "top2")
  emotions = obj.get("emotions")
  emotions = None if emotions is None else _emotion_list(emotions, None, where, "emotions")
  mixed = cat in MIXED_CATEGORIES
  if mixed and top2 is None:
    raise ValueError(f"{where}: a {cat} row needs top2 (its two strongest emotions)")
  if not mixed and (top2 is not None or dom is None):
    raise ValueError(f"{where}: a {cat} row needs a dominant emotion and top2 null")
  if dom is not None and top2 is not None and dom not in top2:
    raise ValueError(f"{where}: dominant {dom!r} is not one of top2 {list(top2)}")
  if cat == "mixture3":
    if emotions is None or len(emotions) != 3 or not set(top2) <= set(emotions):
      raise ValueError(f"{where}: a mixture3 row needs emotions: its 3 emotions, top2 among them")
  elif emotions is not None:
    raise ValueError(f"{where}: emotions is only for mixture3 rows")
  ladder, level = obj["ladder"], obj["level"]
  if cat == "ladder":
    if not isinstance(ladder, str) or not ladder:
      raise ValueError(f"{where}: a ladder row needs a ladder id")
    if isinstance(level, bool) or not isinstance(level, int) or level < 0:
      raise ValueError(f"{where}: a ladder row needs level: an integer >= 0, got {level!r}")
  elif ladder is not None or level is not None:
    raise ValueError(f"{where}: ladder and level must be null outside the ladder category")
  note = obj.get("note")
  if note is not None and not isinstance(note, str):
    raise ValueError(f"{where}: note must be a string")
  return HumanRow(
    obj["id"], obj["prompt"], cat, obj["half"], dom, top2, ladder, level, emotions, note, line
  )


def _check_ladders(rows: list[HumanRow], path: str) -> None:
  ladders: dict[str, list[HumanRow]] = {}
  for r in rows:
    if r.ladder is not None:
      ladders.setdefault(r.ladder, []).append(r)
  for lid, members in ladders.items():
    where = f"{path}: ladder {lid!r} (line {members[0].line})"
    levels = sorted(r.level for r in members)
    if len(members) < MIN_LADDER_LEVELS:
      raise ValueError(
        f"{where} has {len(members)} level(s); a ladder needs >= {MIN_LADDER_LEVELS}"
      )
    if levels != list(range(len(members))):
      raise ValueError(f"{where}: levels must be 0, 1, ..., {len(members) - 1}, got {levels}")
    if len({r.dominant for r in members}) != 1 or len({r.half for r in members}) != 1:
      raise ValueError(f"{where}: all its rows need the same dominant emotion and half")


def read_human_set(path: str, half: str | None = None) -> list[HumanRow]:
  """Rows of a human-set JSONL file, in file order; ``half`` 'dev' / 'test' keeps that half
  (None or 'all': every row). Raises FileNotFoundError, or ValueError naming the file and
  line for bad UTF-8 / JSON, missing or unknown fields, unknown emotion names or categories,
  inconsistent labels, duplicate ids, and ladders with < 3 levels."""
  if half not in (None, "all") + HALVES:
    raise ValueError(f"half must be dev, test or all, got {half!r}")
  try:
    with open(path, "rb") as f:
      raw = f.read()
  except FileNotFoundError:
    raise FileNotFoundError(f"human prompt set {path!r} not found") from None
  except IsADirectoryError:
    raise ValueError(f"human prompt set {path!r} is a folder; give the .jsonl file") from None
  rows: list[HumanRow] = []
  seen: dict[str, int] = {}
  for i, bline in enumerate(raw.split(b"\n"), start=1):
    where = f"{path}: line {i}"
    try:
      text = bline.decode("utf-8")
    except UnicodeDecodeError:
      raise ValueError(f"{where} is not valid UTF-8; save the file as UTF-8") from None
    if not text.strip():
      continue
    try:
      obj = json.loads(text)
    except json.JSONDecodeError as e:
      raise ValueError(f"{where} is not JSON ({e.msg}); write one object per line") from None
    row = _parse_row(obj, where, i)
    if row.id in seen:
      raise ValueError(f"{where}: id {row.id!r} already used on line {seen[row.id]}")
    seen[row.id] = i
    rows.append(row)
  if not rows:
    raise ValueError(f"human prompt set {path!r} has no rows")
  _check_ladders(rows, path)
  if half in HALVES:
    rows = [r for r in rows if r.half == half]
  return rows


def keyword_baseline(prompts: Sequence[str]) -> np.ndarray:
  """prompts -> (N, 8) float32 intensities in [0, 1] from ``KEYWORDS`` alone: each word of a
  prompt (lower case, letters only) that is a keyword adds ``KEYWORD_HIT`` to its emotion,
  capped at 1; a prompt with no keyword gets neutral ``KEYWORD_NEUTRAL``, the rest 0."""
  out = np.zeros((len(prompts), NUM_EMOTIONS), np.float32)
  for i, p in enumerate(prompts):
    for w in _WORD.findall(p.lower()):
      e = _KEYWORD_EMOTION.get(w)
      if e is not None:
        out[i, EMOTION_INDEX[e]] += KEYWORD_HIT
    if not out[i].any():
      out[i, EMOTION_INDEX["neutral"]] = KEYWORD_NEUTRAL
  return np.minimum(out, 1.0)


def _normalise(text: str) -> str:
  return " ".join(_WORD.findall(text.lower()))


def seen_in_corpus(prompts: Sequence[str], corpus: Sequence[str]) -> np.ndarray:
  """(N,) bool: prompt i occurs, as whole words (lower case, letters only), inside some
  corpus prompt. Marks human-set rows an EIB may have met verbatim in training (a fixed
  idiom, a bare emotion word, a phrase both the set and FED took from the same source), so
  figures can be given without them."""
  joined = "|" + "|".join(f" {_normalise(c)} " for c in corpus) + "|"
  return np.array([f" {_normalise(p)} " in joined for p in prompts], bool)


def unseen_summary(rows: Sequence[HumanRow], s_hat, seen: np.ndarray, **kw) -> dict:
  """The summary figures over the rows not ``seen`` in training, with the seen rows' ids.
  A ladder keeps its order check only if at least two of its rows are unseen."""
  keep = [i for i in range(len(rows)) if not seen[i]]
  s_hat = np.asarray(s_hat)
  out = score_human_set([rows[i] for i in keep], s_hat[keep], **kw) if keep else None
  return {
    "n": len(keep),
    "seen_ids": [rows[i].id for i in range(len(rows)) if seen[i]],
    "summary": out["summary"] if out else None,
    "categories": out["categories"] if out else None,
  }


def _top(s: np.ndarray, k: int = 3) -> list[list]:
  """The k largest predicted intensities as [[emotion, value], ...], largest first (a stable
  sort: ties go to the earlier emotion in MEAD order, as argmax does)."""
  order = np.argsort(-s, kind="stable")[:k]
  return [[EMOTIONS[j], round(float(s[j]), 4)] for j in order]


def _figure(values: list[float], n_boot: int, seed: int) -> dict:
  """{'value', 'ci', 'n'} of the mean of 0/1 unit values (None / None / 0 when there are none)."""
  if not values:
    return {"value": None, "ci": None, "n": 0}
  v = np.asarray(values, np.float64)
  return {"value": float(v.mean()), "ci": bootstrap_ci(v, n_boot=n_boot, seed=seed), "n": len(v)}


def _ladder_results(rows: list[HumanRow], s: np.ndarray) -> dict[str, dict]:
  ladders: dict[str, list[int]] = {}
  for i, r in enumerate(rows):
    if r.ladder is not None:
      ladders.setdefault(r.ladder, []).append(i)
  out = {}
  for lid, idx in ladders.items():
    if len(idx) < 2:  # a ladder cut by the row selection has no order to test
      continue
    idx = sorted(idx, key=lambda i: rows[i].level)
    e = EMOTION_INDEX[rows[idx[0]].dominant]
    vals = [float(s[i, e]) for i in idx]
    out[lid] = {
      "ok": bool(np.all(np.diff(vals) > 0)),
      "category": rows[idx[0]].category,
      "emotion": rows[idx[0]].dominant,
      "prompts": [rows[i].prompt for i in idx],
      "predicted": [round(v, 4) for v in vals],
    }
  return out


def score_human_set(rows: Sequence[HumanRow], s_hat, *, n_boot: int = 2000, seed: int = 0) -> dict:
  """Figures of predictions s_hat (N, 8) (intensities in [0, 1], MEAD order, row i for
  rows[i]) on the human set; JSON-ready.

  Returns {'n', 'categories': {category: {'n', 'top1', 'top2_mixed', 'order'}}, 'overall':
  {same}, 'summary': {'single_top1' | 'mixed_top2' | 'ladder_order': {'value', 'ci', 'n',
  'target', 'passes'}}, 'missed': {'top1' | 'top2_mixed': [{'id', 'category', 'prompt',
  'expected', 'predicted': [[emotion, intensity], ...top 3]}], 'order': [{'ladder',
  'emotion', 'prompts', 'predicted'}]}}. Each figure is {'value', 'ci' (bootstrap 95%
  interval over its rows, or ladders for 'order'), 'n'}; value and ci are None when n is 0.
  """
  rows = list(rows)
  s = np.asarray(s_hat, np.float64)
  if s.shape != (len(rows), NUM_EMOTIONS):
    raise ValueError(f"s_hat must have shape ({len(rows)}, {NUM_EMOTIONS}), got {s.shape}")
  if not np.isfinite(s).all():
    raise ValueError("s_hat has non-finite values")
  top1_ok = [None] * len(rows)
  top2_ok = [None] * len(rows)
  missed = {"top1": [], "top2_mixed": [], "order": []}
  for i, r in enumerate(rows):
    pred = np.argsort(-s[i], kind="stable")
    if r.dominant is not None:
      top1_ok[i] = float(pred[0] == EMOTION_INDEX[r.dominant])
    if r.top2 is not None:
      top2_ok[i] = float({EMOTIONS[j] for j in pred[:2]} == set(r.top2))
    for key, ok, expected in (
      ("top1", top1_ok[i], r.dominant),
      ("top2_mixed", top2_ok[i], list(r.top2) if r.top2 else None),
    ):
      if ok == 0.0:
        missed[key].append(
          {
            "id": r.id,
            "category": r.category,
            "prompt": r.prompt,
            "expected": expected,
            "predicted": _top(s[i]),
          }
        )
  ladders = _ladder_results(rows, s)
  for lid, lr in ladders.items():
    if not lr["ok"]:
      missed["order"].append(
        {"ladder": lid, **{k: lr[k] for k in ("emotion", "prompts", "predicted")}}
      )

  def figures(sel) -> dict:
    lad = [float(lr["ok"]) for lr in ladders.values() if sel(lr["category"])]
    return {
      "n": sum(1 for r in rows if sel(r.category)),
      "top1": _figure(
        [v for r, v in zip(rows, top1_ok) if v is not None and sel(r.category)], n_boot, seed
      ),
      "top2_mixed": _figure(
        [v for r, v in zip(rows, top2_ok) if v is not None and sel(r.category)], n_boot, seed
      ),
      "order": _figure(lad, n_boot, seed),
    }

  present = [c for c in CATEGORIES if any(r.category == c for r in rows)]
  cats = {c: figures(lambda x, c=c: x == c) for c in present}
  overall = figures(lambda x: True)
  single = figures(lambda x: x in SINGLE_CATEGORIES)["top1"]
  summary = {"single_top1": single, "mixed_top2": overall["top2_mixed"]}
  summary["ladder_order"] = overall["order"]
  for k, fig in summary.items():
    v = fig["value"]
    fig["target"] = TARGETS[k]
    fig["passes"] = None if v is None else bool(v >= TARGETS[k])
  return {
    "n": len(rows),
    "categories": cats,
    "overall": overall,
    "summary": summary,
    "missed": missed,
  }


def _cell(fig: dict) -> str:
  if fig["n"] == 0:
    return "-"
  lo, hi = fig["ci"]
  return f"{fig['value']:.2f} [{lo:.2f}, {hi:.2f}] n={fig['n']}"


def format_table(scores: dict) -> str:
  """The per-category table and the summary figures against their targets, as text."""
  head = f"{'category':<14} {'n':>4}  {'top-1':<26} {'top-2 (mixed)':<26} {'order':<26}"
  lines = [head, "-" * len(head)]
  for name, figs in list(scores["categories"].items()) + [("overall", scores["overall"])]:
    lines.append(
      f"{name:<14} {figs['n']:>4}  {_cell(figs['top1']):<26} "
      f"{_cell(figs['top2_mixed']):<26} {_cell(figs['order']):<26}"
    )
  lines.append("")
  for k, fig in scores["summary"].items():
    verdict = {True: "PASS", False: "FAIL", None: "n/a"}[fig["passes"]]
    value = "-" if fig["value"] is None else _cell(fig)
    lines.append(f"{k:<13} {value:<30} target >= {fig['target']:.2f}  {verdict}")
  return "\n".join(lines)
