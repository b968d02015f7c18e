"""The written results of ``emotalker eval``: ``evaluate_and_write`` runs the protocol of
``evaluation.evaluate`` and writes metrics.json, ablations.json, the identity / emotion
trade-off plot and the markdown report (``write_outputs``), with the target each headline
metric is held to (``TARGETS``, ``headline_table``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import json
import math
import os
import time
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from emotalker_jax.checkpoints import atomic_output
from emotalker_jax.emotions import EMOTIONS, NUM_EMOTIONS
from emotalker_jax.evaluation.evaluate import (
  EvalSettings,
  Source,
  evaluate,
  run_ablations,
)
from emotalker_jax.evaluation.intervals import CEILINGS


def evaluate_and_write(
  gen,
  judge,
  sources: Sequence[Source],
  st: EvalSettings,
  out: str,
  meta: dict,
  ablations: bool = False,
  log: Callable[[str], None] = print,
) -> tuple[dict, dict]:
  """``evaluate`` (+ ``run_ablations``) and ``write_outputs`` into ``out``, with the
  sampler settings, checkpoint and wall time added to ``meta``. Returns (result, paths)."""
  t0 = time.perf_counter()
  result = evaluate(gen, judge, sources, st, log=log)
  rows = run_ablations(gen, judge, sources, st, log=log, result=result) if ablations else None
  sc = gen.config.sampler
  meta = {
    "checkpoint": gen.checkpoint_dir,
    "checkpoint_step": gen.step,
    "steps": st.steps or int(sc.steps),
    "guidance": float(sc.guidance if st.guidance is None else st.guidance),
    "constraint": dict(sc.constraint),
    "mask": str(gen.config.data.mask),
    "intensity_gamma": gen.intensity_gamma,
    **meta,
    "wall_seconds": round(time.perf_counter() - t0, 1),
  }
  return result, write_outputs(out, result, rows, meta)


def tradeoff_plot(rows: Sequence[dict], path: str, size: int = 480, legend_w: int = 300) -> None:
  """PNG scatter of identity similarity (x) against emotion accuracy (y): one numbered
  point per ablation row (legend on the right; the default in red); the constraint-strength
  rows are joined by a line in order of strength."""
  img = Image.new("RGB", (size + legend_w, size), "white")
  d = ImageDraw.Draw(img)
  m = 60
  xs = [r["identity_similarity"] for r in rows]
  lo, hi = min(min(xs) - 0.05, 0.0), max(max(xs) + 0.05, 1.0)

  def at(x, y):
    return (m + (x - lo) / (hi - lo) * (size - 2 * m), size - m - y * (size - 2 * m))

  d.rectangle([m, m, size - m, size - m], outline="black")
  for v in (0.0, 0.25, 0.5, 0.75, 1.0):
    d.text((m - 30, at(lo, v)[1] - 6), f"{v:.2f}", fill="black")
  for v in (lo, (lo + hi) / 2, hi):
    d.text((at(v, 0)[0] - 10, size - m + 6), f"{v:.2f}", fill="black")
  d.text((size // 2 - 60, size - 25), "identity similarity", fill="black")
  d.text((5, 20), "emotion accuracy (single prompts)", fill="black")
  line = sorted(
    (
      r for r in rows if r["variant"] == "default" or r["variant"].startswith("constraint strength")
    ),
    key=lambda r: r["constraint_strength"],
  )
  if len(line) > 1:
    d.line(
      [at(r["identity_similarity"], r["emotion_accuracy"]) for r in line], fill="blue", width=2
    )
  for k, r in enumerate(rows):
    x, y = at(r["identity_similarity"], r["emotion_accuracy"])
    colour = "red" if r["variant"] == "default" else "blue"
    d.ellipse([x - 4, y - 4, x + 4, y + 4], fill=colour)
    d.text((x + 6, y - 12 - 10 * (k % 2)), str(k + 1), fill=colour)
    d.text(
      (size + 5, m + 16 * k),
      f"{k + 1}. {r['variant']} ({r['identity_similarity']:.2f}, {r['emotion_accuracy']:.2f})",
      fill=colour,
    )
  img.save(path, format="PNG")


TARGETS = {
  "emotion_accuracy": ">= 0.90",
  "mixed_top2_accuracy": ">= 0.80",
  "intensity_spearman": ">= 0.8",
  "identity_similarity": ">= 0.9, gain over no constraint > 0 outside its interval",
  "lip_sync_correlation": ">= 0.5",
}
# The figures of the report's first table, in order (headline first).
REPORT_KEYS = (
  "emotion_accuracy",
  "mixed_top2_accuracy",
  "mixed_intensity_error",
  "intensity_spearman",
  "intensity_spearman_frames",
  "identity_similarity",
  "identity_similarity_no_constraint",
  "identity_similarity_constraint_gain",
  "lip_sync_correlation",
  "flicker",
  "paraphrase_emotion_accuracy",
  "mixed_top2_accuracy_explicit",
  "mixed_intensity_error_explicit",
)


def target_met(result: dict, key: str) -> bool | None:
  """Whether ``result`` meets TARGETS[key] (None: no target). Identity similarity needs
  >= 0.9 and a constraint gain whose whole 95 % interval is above 0."""
  v = result.get(key)
  if key not in TARGETS or v is None or (isinstance(v, float) and math.isnan(v)):
    return None if key not in TARGETS else False
  if key == "identity_similarity":
    lo = (result.get("identity_similarity_constraint_gain_ci") or [float("nan")])[0]
    return bool(v >= 0.9 and lo is not None and lo > 0)
  return bool(v >= float(TARGETS[key].split()[1]))


def ablation_cell(row: dict, key: str) -> str:
  """'0.912 [0.900, 0.925]' from a figure of ``row`` (an ablation row, a metrics.json) and
  its ``<key>_ci``: the figure alone without a defined interval, '-' where it is missing."""
  v, ci = row.get(key), row.get(f"{key}_ci")
  if v is None:
    return "-"
  if ci and None not in ci:
    return f"{v:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"
  return f"{v:.3f}"


def _fmt(v, digits: int = 3) -> str:
  if v is None or (isinstance(v, float) and math.isnan(v)):
    return "undefined"
  if isinstance(v, float):
    return f"{v:.{digits}f}"
  return str(v)


def headline_table(result: dict, keys: Sequence[str] = REPORT_KEYS) -> list[str]:
  """Markdown rows: figure, value, 95 % interval, ceiling (the same measure on ground
  truth), target and whether it is met."""
  lines = [
    "| metric | value | 95% interval | ceiling (ground truth) | target | met |",
    "|---|---|---|---|---|---|",
  ]
  for k in keys:
    if k not in result:
      continue
    ci = result.get(f"{k}_ci")
    ceil_key = CEILINGS.get(k)
    ceil = result.get(ceil_key) if ceil_key else None
    ceil_s = (
      ""
      if ceil_key is None
      else _fmt(ceil)
      + (
        f" [{_fmt(result[ceil_key + '_ci'][0])}, {_fmt(result[ceil_key + '_ci'][1])}]"
        if result.get(ceil_key + "_ci")
        else ""
      )
      + f" ({ceil_key})"
    )
    met = target_met(result, k)
    lines.append(
      f"| {k} | {_fmt(result[k])} | "
      + (f"[{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else "")
      + f" | {ceil_s} | "
      f"{TARGETS.get(k, '')} | {'' if met is None else ('yes' if met else 'no')} |"
    )
  return lines


def ablations_table(rows: Sequence[dict]) -> list[str]:
  """Markdown lines of the single-prompt ablation table (``evaluate.run_ablations`` rows):
  each figure with its 95 % interval, the identity change paired with the default."""
  lines = [
    "Intervals: 95 % bootstrap over (identity, prompt) units; the identity change is paired "
    "with the default on the same units; 'drawn': the frames the judge reads as the asked "
    "emotion (non-neutral prompts).",
    "",
    "| variant | emotion accuracy | identity similarity | identity change vs default "
    "| identity, drawn frames |",
    "|---|---|---|---|---|",
  ]
  keys = (
    "emotion_accuracy",
    "identity_similarity",
    "identity_change_vs_default",
    "identity_similarity_expression_drawn",
  )
  for r in rows:
    lines.append(f"| {r['variant']} | " + " | ".join(ablation_cell(r, k) for k in keys) + " |")
  return lines


def markdown(result: dict, ablations: Sequence[dict] | None, meta: dict) -> str:
  """The report: headline figures with their intervals, ceilings and targets, details,
  ablations."""
  lines = ["# EmoTalker evaluation", ""]
  lines += [f"- {k}: `{v}`" for k, v in meta.items()]
  lines += [
    "",
    f"{result['n_identities']} held-out identities, {result['n_frames']} generated "
    "frames. Intervals: 95 % percentile bootstrap over (identity, prompt) units, "
    "identities redrawn within each prompt. Undefined (left out): "
    + ", ".join(f"{k} {v}" for k, v in result.get("n_undefined", {}).items() if v)
    + (" none" if not any(result.get("n_undefined", {}).values()) else ""),
    "",
  ]
  lines += headline_table(result)
  lines += ["", "| other figure | value |", "|---|---|"]
  for k in (
    "lip_sync_ground_truth_frames",
    "psnr_vs_ground_truth",
    "ssim_vs_ground_truth",
    "emotion_accuracy_no_constraint",
    "intensity_gamma",
    "mixed_top2_accuracy_calibrated",
    "mixed_intensity_error_calibrated",
    "ceiling_emotion_accuracy_ground_truth",
    "ceiling_emotion_accuracy_autoencoder",
    "ceiling_mixed_top2_autoencoder",
    "ceiling_mixed_top2_labels",
  ):
    if k in result:
      lines.append(f"| {k} | {_fmt(result[k], 4)} |")
  single = result["details"]["single"]
  lines += [
    "",
    "Single prompts, top-1 per emotion: "
    + ", ".join(
      f"{k} {v:.2f}" if v is not None else f"{k} -" for k, v in single["per_emotion"].items()
    ),
  ]
  lines += [
    "",
    "Confusion (rows: prompted emotion, columns: the judge's top-1):",
    "",
    "| prompted \\ judged | " + " | ".join(EMOTIONS) + " |",
    "|---" * (NUM_EMOTIONS + 1) + "|",
  ]
  for e, row in zip(EMOTIONS, single["confusion"]):
    lines.append(f"| {e} | " + " | ".join(str(int(x)) for x in row) + " |")
  mixed = result["details"]["mixed"]
  ceil = result["details"]["ceiling_labels"]["per_prompt"]
  lines += [
    "",
    "Mixed prompts (uncalibrated unless intensity_gamma != 1 above):",
    "",
    "| prompt | top-2 | top-2 on the rendering (ceiling) | intensity error | "
    "rendering vs label (floor) |",
    "|---|---|---|---|---|",
  ]
  for k, v in mixed["per_prompt"].items():
    lines.append(
      f"| {k} | {v:.2f} | {ceil[k]:.2f} | {mixed['intensity_error_per_prompt'][k]:.3f}"
      f" | {mixed['intensity_error_ground_truth_per_prompt'][k]:.3f} |"
    )
  sw = result["details"]["sweep"]
  lines += [
    "",
    f"Strength sweep {sw['strengths']}, the judge's mean intensity per strength "
    "(Spearman on the means / over the frames; ground truth's in brackets):",
    "",
  ]
  for e, vals in sw["judge_intensity_means"].items():
    lines.append(
      f"- {e}: "
      + ", ".join(f"{v:.2f}" for v in vals)
      + f" ({_fmt(sw['per_emotion'][e], 2)} / {_fmt(sw['per_emotion_frames'][e], 2)};"
      f" [{_fmt(sw['per_emotion_ground_truth'][e], 2)} / "
      f"{_fmt(sw['per_emotion_frames_ground_truth'][e], 2)}])"
    )
  if ablations:
    lines += ["", "## Ablations (single prompts)", "", *ablations_table(ablations)]
    lines += ["", "![trade-off](tradeoff.png)"]
  return "\n".join(lines) + "\n"


def write_metrics_json(out: str, result: dict, meta: dict) -> str:
  """OUT/metrics.json: ``result`` with ``meta``, strict JSON (NaN / inf -> null), replaced
  atomically (the synthetic and the real-face eval). Returns its path."""
  os.makedirs(out, exist_ok=True)
  path = os.path.join(out, "metrics.json")
  with atomic_output(path) as tmp:
    with open(tmp, "w") as fh:
      json.dump(
        nan_to_none({**result, "meta": meta}), fh, indent=2, default=_json_default, allow_nan=False
      )
  return path


def write_outputs(out: str, result: dict, ablations, meta: dict) -> dict:
  """metrics.json (METRIC_KEYS first), ablations.json + tradeoff.png, report.md in ``out``.
  Files are replaced atomically. Returns {name: path}."""
  paths = {"metrics": write_metrics_json(out, result, meta)}
  paths["report"] = os.path.join(out, "eval.md")
  if ablations:
    paths["ablations"] = os.path.join(out, "ablations.json")
    with atomic_output(paths["ablations"]) as tmp:
      with open(tmp, "w") as fh:
        json.dump(nan_to_none(list(ablations)), fh, indent=2, allow_nan=False)
    paths["plot"] = os.path.join(out, "tradeoff.png")
    with atomic_output(paths["plot"]) as tmp:
      tradeoff_plot(ablations, tmp)
  with atomic_output(paths["report"]) as tmp:
    with open(tmp, "w") as fh:
      fh.write(markdown(result, ablations, meta))
  return paths


def nan_to_none(x: Any):
  """NaN (an undefined correlation) and inf (PSNR of identical frames) -> None, so the
  files are strict JSON (null)."""
  if isinstance(x, dict):
    return {k: nan_to_none(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [nan_to_none(v) for v in x]
  if isinstance(x, (float, np.floating)) and not math.isfinite(float(x)):
    return None
  return x


def _json_default(x: Any):
  if isinstance(x, (np.floating, np.integer)):
    return x.item()
  if isinstance(x, np.ndarray):
    return x.tolist()
  raise TypeError(f"not JSON serialisable: {type(x)}")


# The figures a variant row of an ablation file keeps (``record_variant``), with intervals.
VARIANT_KEYS = (
  "mixed_top2_accuracy",
  "mixed_intensity_error",
  "mixed_intensity_error_ground_truth",
  "ceiling_mixed_top2_labels",
  "mixed_top2_accuracy_explicit",
  "emotion_accuracy",
  "intensity_spearman",
  "identity_similarity",
  "lip_sync_correlation",
)


def record_variant(path: str, name: str, note: str, result: dict, meta: dict) -> dict:
  """Adds (or replaces, by name) one row to the JSON list at ``path``: the variant's
  ``VARIANT_KEYS`` figures and their ``_ci`` from an evaluation ``result``, the sampler
  settings from ``meta`` and ``note`` (what the variant is and what it shows). Returns
  the row."""
  row = {"variant": name, "note": note}
  for k in VARIANT_KEYS:
    row[k] = result.get(k)
    if f"{k}_ci" in result:
      row[f"{k}_ci"] = result[f"{k}_ci"]
  for k in ("checkpoint_step", "guidance", "guidance_mode", "constraint", "split"):
    if k in meta:
      row[k] = meta[k]
  row["generation_seconds"] = result.get("generation_seconds")
  rows = []
  if os.path.isfile(path):
    with open(path) as fh:
      rows = json.load(fh)
  rows = [r for r in rows if r.get("variant") != name] + [nan_to_none(row)]
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with atomic_output(path) as tmp:
    with open(tmp, "w") as fh:
      json.dump(rows, fh, indent=2, allow_nan=False)
  return row


def variants_markdown(rows: Sequence[dict]) -> list[str]:
  """Table lines of an ablation file's rows (``record_variant``)."""

  def v(r, k, digits=3):
    x, ci = r.get(k), r.get(f"{k}_ci")
    if x is None:
      return "-"
    return f"{x:.{digits}f}" + (f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else "")

  out = [
    "| variant | mixed top-2 | mixed intensity error (floor) | explicit top-2 | "
    "emotion accuracy | identity | lip sync | generation s | what it shows |",
    "|---|---|---|---|---|---|---|---|---|",
  ]
  for r in rows:
    floor = r.get("mixed_intensity_error_ground_truth")
    out.append(
      f"| {r['variant']} | {v(r, 'mixed_top2_accuracy')} | {v(r, 'mixed_intensity_error')}"
      + (f" ({floor:.3f})" if floor is not None else "")
      + f" | {v(r, 'mixed_top2_accuracy_explicit')} | {v(r, 'emotion_accuracy')} | "
      f"{v(r, 'identity_similarity')} | {v(r, 'lip_sync_correlation')} | "
      f"{r.get('generation_seconds') or '-'} | {r.get('note', '')} |"
    )
  return out
