"""``emotalker report``: docs/RESULTS.md and the README's results table, written from the
JSON files of a demo run (never by hand).

  emotalker report [--demo demo_out] [--results docs/results] [--out docs/RESULTS.md] \\
      [--readme README.md]

With ``--demo DIR`` the run's files (metrics.json, summary.json, eval.md, ablations.json,
the PNG figures) are first copied into ``--results`` (files of an earlier run there that
this run did not write are removed). Then RESULTS.md is written from
``results/metrics.json`` + ``results/summary.json`` (+ ``ablations.json`` when present),
and the block between ``<!-- results:begin -->`` and ``<!-- results:end -->`` in the
README is replaced by the headline table. Every number in both comes from those files.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil

BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
RUN_FILES = (
  "metrics.json",
  "summary.json",
  "eval.md",
  "ablations.json",
  "tradeoff.png",
  "fig2_emotions.png",
  "fig3_strength.png",
  "fig_mixed.png",
)
# Published by `emotalker eval --split challenging(_dev)` runs, not by the demo: kept when a
# demo is published, and rendered into RESULTS.md when present.
KEPT_FILES = (
  "metrics_challenging.json",
  # The test split judged by metrics_challenging.json's judge (`emotalker eval --judge J`),
  # so that the in-distribution column is the same measure; without it, metrics.json.
  "metrics_challenging_in_distribution.json",
  "constraint_sweep_challenging_dev.json",
  "constraint_sweep_challenging.json",
  "mixtures_ablation.json",
  # `emotalker eval --ablations` rows of those two runs (the Z_T / z_hat_t halves included)
  "ablations_challenging.json",
  "ablations_challenging_in_distribution.json",
)
STAGES = (
  ("synth", "synthetic benchmark (`emotalker synth`)"),
  ("eib", "EIB on FED (`emotalker eib-train`)"),
  ("judge", "judge (`emotalker judge train`)"),
  ("autoencoder", "autoencoder (`emotalker train --stage autoencoder`)"),
  ("train", "EmoTalker (`emotalker train`)"),
  ("calibrate", "intensity calibration (`--calibrate` only)"),
  ("figures", "figures for a held-out identity"),
  ("eval", "evaluation on all held-out identities (`emotalker eval`'s protocol)"),
)


def add_arguments(p: argparse.ArgumentParser) -> None:
  p.add_argument(
    "--demo",
    default=None,
    help="a finished `emotalker demo --out` folder to publish into --results first",
  )
  p.add_argument("--results", default="docs/results", help="folder with the run's JSON files")
  p.add_argument("--out", default="docs/RESULTS.md", help="the results page to write")
  p.add_argument(
    "--readme",
    default="README.md",
    help=f"README whose {BEGIN} ... {END} block gets the headline table ('' to leave it)",
  )


def publish(demo: str, results: str) -> list[str]:
  """Copies RUN_FILES of ``demo`` into ``results``; removes stale files there. Returns the
  names copied. Raises FileNotFoundError when the demo has no metrics.json / summary.json."""
  for need in ("metrics.json", "summary.json"):
    if not os.path.isfile(os.path.join(demo, need)):
      raise FileNotFoundError(
        f"{os.path.join(demo, need)} not found: run `make demo` (or "
        f"`emotalker demo --out {demo}`) to the end first"
      )
  os.makedirs(results, exist_ok=True)
  for name in os.listdir(results):
    path = os.path.join(results, name)
    if name in KEPT_FILES:
      continue
    if os.path.isfile(path) and not os.path.isfile(os.path.join(demo, name)):
      os.remove(path)
  copied = []
  for name in RUN_FILES:
    if os.path.isfile(os.path.join(demo, name)):
      shutil.copyfile(os.path.join(demo, name), os.path.join(results, name))
      copied.append(name)
  return copied


def _fmt_s(v) -> str:
  if v is None:
    return "not recorded"
  return f"{v:.0f} s ({v / 60:.1f} min)"


def results_markdown(metrics: dict, summary: dict, ablations: list | None) -> str:
  """The whole of docs/RESULTS.md from the run's JSON."""
  from emotalker_jax.evaluation import results

  meta = metrics.get("meta", {})
  machine = summary.get("machine", {})
  commit = summary.get("commit") or "unknown"
  lines = [
    "# Results: EmoTalker on the synthetic talking-face benchmark",
    "",
    "Written by `emotalker report` from `docs/results/metrics.json` and "
    "`docs/results/summary.json` (do not edit by hand: rerun `make demo`, then "
    "`emotalker report --demo demo_out`). Every figure is judged by the judge network "
    "(`emotalker_jax/evaluation/judge.py`) on identities the generator never saw.",
    "",
    "## The run",
    "",
    f"- `emotalker demo --mode {summary.get('mode', '?')}` (what `make demo` runs) at "
    f"commit `{commit}`"
    + (" with uncommitted changes" if summary.get("uncommitted_changes") else "")
    + f", seed {summary.get('seed', 0)}, intensity "
    f"calibration {'on' if summary.get('calibrate') else 'off'} (gamma "
    f"{metrics.get('intensity_gamma', 1.0):g}).",
    f"- Machine: {machine.get('cpus', '?')} CPUs, {machine.get('platform', '?')}, "
    f"Python {machine.get('python', '?')}, JAX {machine.get('jax', '?')} "
    f"({machine.get('backend', '?')}).",
    f"- Checkpoint step {summary.get('checkpoint_step')}, DDIM steps "
    f"{meta.get('steps')}, guidance {meta.get('guidance')}, constraint "
    f"{json.dumps(meta.get('constraint'))}, mask {meta.get('mask')}.",
    f"- Evaluation: {metrics['n_identities']} held-out identities "
    f"({', '.join(str(i) for i in metrics.get('identities', []))}), "
    f"{metrics['settings']['frames']} frames per condition, "
    f"{metrics['settings']['lip_frames']} per lip-sync clip, {metrics['n_frames']} "
    f"generated frames; {metrics.get('seconds')} s.",
    "",
    "| stage | wall time |",
    "|---|---|",
  ]
  st = summary.get("stage_seconds", {})
  reused = set(summary.get("reused_stages", []))
  for key, name in STAGES:
    if key in st:
      lines.append(
        f"| {name} | {_fmt_s(st[key])}"
        + (" (from the run that built it; reused)" if key in reused else "")
        + " |"
      )
  total = summary.get("demo_seconds", sum(v or 0.0 for v in st.values()))
  lines += [
    f"| **all stages** (the venv setup of `make` not included) | **{_fmt_s(total)}** |",
    "",
    "## Headline figures",
    "",
    "95 % intervals: percentile bootstrap over (identity, prompt) units, identities "
    "redrawn within each prompt. The ceiling is the same measure on the benchmark's "
    "ground truth (for emotion accuracy: the judge on the autoencoder's round trip of "
    "real test frames). `identity_similarity_constraint_gain` is identity with minus "
    "without the constraint on paired units; the identity target needs its interval "
    "above 0. For `mixed_intensity_error` and `flicker` lower is better.",
    "",
  ]
  lines += results.headline_table(metrics)
  undefined = {k: v for k, v in metrics.get("n_undefined", {}).items() if v}
  lines += [
    "",
    "Undefined units left out: "
    + (", ".join(f"{k} {v}" for k, v in undefined.items()) or "none")
    + ".",
  ]
  met = {k: results.target_met(metrics, k) for k in results.TARGETS}
  lines += [
    "",
    "Targets met: "
    + ", ".join(k for k, v in met.items() if v)
    + "; not met: "
    + (", ".join(k for k, v in met.items() if not v) or "none")
    + ".",
    "",
  ]
  lines += ["## Details", "", "From `docs/results/eval.md` (the same metrics.json):", ""]
  body = results.markdown(metrics, ablations, meta).split("\n")
  # skip eval.md's title, meta lines and its copy of the headline table
  start = next(i for i, line in enumerate(body) if line.startswith("| other figure"))
  lines += body[start:]
  lines += [
    "",
    "## Figures",
    "",
    "One held-out portrait under the 8 one-word prompts (first cell: the portrait):",
    "",
    "![fig2](results/fig2_emotions.png)",
    "",
    "'happy' at increasing strengths:",
    "",
    "![fig3](results/fig3_strength.png)",
    "",
    "Mixed prompts " + "; ".join(summary.get("mixed_prompts", [])) + ":",
    "",
    "![mixed](results/fig_mixed.png)",
  ]
  if summary.get("eib_test"):
    e = summary["eib_test"]
    lines += [
      "",
      "## EIB on FED's held-out test split (stage 2)",
      "",
      "| top-1 | mixed top-2 | MAE |",
      "|---|---|---|",
      f"| {e.get('top1', float('nan')):.3f} | {e.get('top2_mixed', float('nan')):.3f} | "
      f"{e.get('mae', float('nan')):.3f} |",
    ]
  return (
    "\n".join(line.replace("](tradeoff.png)", "](results/tradeoff.png)") for line in lines) + "\n"
  )


def _load(results: str, name: str):
  path = os.path.join(results, name)
  if not os.path.isfile(path):
    return None
  with open(path) as fh:
    return json.load(fh)


CHALLENGING_ROWS = (
  ("identity_similarity", "identity, default constraint"),
  ("identity_similarity_no_constraint", "identity, constraint off"),
  ("identity_similarity_constraint_gain", "constraint gain (paired)"),
  ("identity_similarity_ground_truth", "identity of the ground truth (ceiling)"),
  (
    "identity_similarity_expression_drawn",
    "identity, frames read as the asked emotion (non-neutral prompts)",
  ),
  ("identity_similarity_expression_missed", "identity, the other frames (non-neutral prompts)"),
  (
    "identity_similarity_expression_drawn_no_constraint",
    "identity, frames read as the asked emotion, constraint off",
  ),
  (
    "identity_similarity_expression_missed_no_constraint",
    "identity, the other frames, constraint off",
  ),
  ("emotion_accuracy_no_constraint", "emotion accuracy, constraint off"),
  ("emotion_accuracy", "emotion accuracy"),
  ("ceiling_emotion_accuracy_ground_truth", "emotion accuracy of the ground truth (ceiling)"),
  ("ceiling_emotion_accuracy_autoencoder", "emotion accuracy after the autoencoder (ceiling)"),
  ("mixed_top2_accuracy", "mixed top-2"),
  ("lip_sync_correlation", "lip sync"),
)


def _no_constraint_at_all_lines(results: str, metrics: dict, ch: dict | None) -> list[str]:
  """The drop and its recovery under the other reading of "without the constraint":
  neither half (fresh noise, strength 0), from the published challenging ablation row."""
  from emotalker_jax.evaluation.evaluate import NO_CONSTRAINT_AT_ALL
  from emotalker_jax.evaluation.results import ablation_cell

  rows = {r["variant"]: r for r in _load(results, "ablations_challenging.json") or []}
  off, default = rows.get(NO_CONSTRAINT_AT_ALL), rows.get("default")
  if ch is None or off is None or default is None:
    return []
  drop = metrics.get("identity_similarity", float("nan")) - off["identity_similarity"]
  gain = -off["identity_change_vs_default"]
  lo, hi = off["identity_change_vs_default_ci"]
  cost = off["emotion_accuracy"] - default["emotion_accuracy"]  # > 0: the constraint costs
  same = {
    r["variant"]: r for r in _load(results, "ablations_challenging_in_distribution.json") or []
  }
  in_dist = (
    " In distribution the same reading gives "
    + ablation_cell(same[NO_CONSTRAINT_AT_ALL], "identity_similarity")
    + "."
    if NO_CONSTRAINT_AT_ALL in same
    else ""
  )
  verdict = (
    f"the default constraint recovers {gain:.4f} [{-hi:.4f}, {-lo:.4f}] (paired), "
    f"{gain / drop:.0%} of it"
    if drop > 0
    else "no drop"
  )
  return [
    "",
    f"Without either half of the constraint ({NO_CONSTRAINT_AT_ALL}) the challenging identity "
    f"is {ablation_cell(off, 'identity_similarity')}: "
    f"{drop:.4f} below the in-distribution figure; {verdict}; its emotion accuracy is "
    f"{ablation_cell(off, 'emotion_accuracy')} against the default's "
    f"{ablation_cell(default, 'emotion_accuracy')} (the constraint's emotion cost: {cost:+.3f})."
    + in_dist,
  ]


def challenging_markdown(results: str, metrics: dict) -> str:
  """RESULTS.md's section on the challenging identities, from metrics_challenging.json and
  the constraint sweeps (empty when none was published)."""
  from emotalker_jax.evaluation import constraint_sweep as cs
  from emotalker_jax.evaluation.results import ablation_cell, ablations_table

  ch = _load(results, "metrics_challenging.json")
  same_judge = _load(results, "metrics_challenging_in_distribution.json")
  if ch is not None and same_judge is not None:
    if same_judge.get("meta", {}).get("judge") != ch.get("meta", {}).get("judge"):
      raise ValueError(
        "docs/results/metrics_challenging_in_distribution.json was judged by "
        f"{same_judge.get('meta', {}).get('judge')!r}, metrics_challenging.json by "
        f"{ch.get('meta', {}).get('judge')!r}: rerun one with the other's --judge"
      )
    metrics = same_judge
  sweeps = [
    (name, _load(results, f"constraint_sweep_{name}.json"))
    for name in ("challenging_dev", "challenging")
  ]
  variants = _load(results, "mixtures_ablation.json")
  lines = []
  if variants:
    from emotalker_jax.evaluation.results import variants_markdown

    lines += [
      "",
      "## Mixed emotions: the variants tried",
      "",
      "Each row is one `emotalker eval --record-variant NAME` run on the held-out identities "
      "(docs/results/mixtures_ablation.json); intervals are 95 % bootstrap intervals over "
      "(identity, prompt) units; the floor of the mixed intensity error is the benchmark's "
      "own rendering against the labels.",
      "",
      *variants_markdown(variants),
    ]
  if ch is None and not any(d for _, d in sweeps):
    return "\n".join(lines) + "\n" if lines else ""
  lines += ["", "## Challenging identities: the identity constraint", ""]
  if ch is not None:
    meta = ch.get("meta", {})
    factors = meta.get("challenge_factors", {})
    lines += [
      "`emotalker eval --split challenging` (written to `docs/results/metrics_challenging.json`): "
      f"{ch['n_identities']} identities outside the training distribution "
      "(input_pipeline/synthetic/challenging.py; docs/SYNTHETIC.md), constraint "
      f"{json.dumps(meta.get('constraint', {}), sort_keys=True)}, judge `{meta.get('judge')}` "
      + (
        "(the in-distribution column: the test split with the same judge, "
        "metrics_challenging_in_distribution.json)"
        if same_judge is not None
        else "(the in-distribution column: the demo's metrics.json)"
      )
      + ". Factors per identity: "
      + "; ".join(f"{i}: {', '.join(f)}" for i, f in factors.items())
      + ".",
      "",
      "| figure | in distribution (test split) | challenging |",
      "|---|---|---|",
    ]
    lines += [
      f"| {label} | {ablation_cell(metrics, k)} | {ablation_cell(ch, k)} |"
      for k, label in CHALLENGING_ROWS
    ]
    drop = metrics.get("identity_similarity", float("nan")) - ch.get(
      "identity_similarity_no_constraint", float("nan")
    )
    gain = ch.get("identity_similarity_constraint_gain", float("nan"))
    lines += [
      "",
      f"Drop without the constraint (in-distribution identity minus challenging identity "
      f"with the constraint off): {drop:.4f}; the default constraint recovers {gain:.4f}, "
      f"{gain / drop:.0%} of it."
      if drop > 0
      else "No drop: the challenging identity without the constraint ("
      + ablation_cell(ch, "identity_similarity_no_constraint")
      + ") is not below the in-distribution figure.",
    ]
  lines += _no_constraint_at_all_lines(results, metrics, ch)
  for name, title in (
    ("ablations_challenging_in_distribution.json", "in distribution (test split)"),
    ("ablations_challenging.json", "challenging"),
  ):
    rows = _load(results, name)
    if rows:
      lines += [
        "",
        f"### Ablations, {title} (`emotalker eval --ablations`, docs/results/{name})",
        "",
        *ablations_table(rows),
      ]
  for name, d in sweeps:
    if d is None:
      continue
    lines += [
      "",
      cs.markdown(
        d["rows"], f"Constraint sweep on `{name}` ({len(d['identities'])} identities)"
      ).rstrip(),
    ]
    if name == "challenging_dev":
      c = d["chosen"]
      lines += [
        "",
        f"Chosen on this split: init_noise {c.get('init_noise', 0.0):g}, strength "
        f"{c['strength']:g}, m_face {c['m_face']:g} ({c['rule']})."
        if c.get("strength") is not None
        else f"No setting chosen on this split ({c['rule']}): the default stays.",
      ]
  return "\n".join(lines) + "\n"


def readme_block(metrics: dict, summary: dict) -> str:
  from emotalker_jax.evaluation import results

  return "\n".join(
    [
      BEGIN,
      f"`make demo` at commit `{summary.get('commit') or 'unknown'}`, "
      f"{metrics['n_identities']} held-out identities, "
      f"{summary.get('demo_seconds', 0) / 60:.1f} min of stages on "
      f"{summary.get('machine', {}).get('cpus', '?')} CPUs (written by "
      "`emotalker report` from docs/results/metrics.json; details: "
      "[docs/RESULTS.md](docs/RESULTS.md)):",
      "",
    ]
    + results.headline_table(
      metrics,
      (
        "emotion_accuracy",
        "mixed_top2_accuracy",
        "mixed_intensity_error",
        "intensity_spearman",
        "identity_similarity",
        "identity_similarity_constraint_gain",
        "lip_sync_correlation",
        "flicker",
      ),
    )
    + ["", END]
  )


def replace_block(text: str, block: str, path: str) -> str:
  if BEGIN not in text or END not in text:
    raise ValueError(f"{path} has no {BEGIN} ... {END} block to replace")
  a, b = text.index(BEGIN), text.index(END) + len(END)
  return text[:a] + block + text[b:]


def run(args) -> int:
  from emotalker_jax.checkpoints import atomic_output

  if args.demo:
    copied = publish(args.demo, args.results)
    print(f"[report] copied {', '.join(copied)} from {args.demo} to {args.results}")
  paths = {k: os.path.join(args.results, f"{k}.json") for k in ("metrics", "summary")}
  for p in paths.values():
    if not os.path.isfile(p):
      raise FileNotFoundError(f"{p} not found: give --demo DIR of a finished `make demo`")
  with open(paths["metrics"]) as fh:
    metrics = json.load(fh)
  with open(paths["summary"]) as fh:
    summary = json.load(fh)
  abl_path = os.path.join(args.results, "ablations.json")
  ablations = json.load(open(abl_path)) if os.path.isfile(abl_path) else None
  text = results_markdown(metrics, summary, ablations) + challenging_markdown(args.results, metrics)
  with atomic_output(args.out) as tmp:
    with open(tmp, "w") as fh:
      fh.write(text)
  print(f"[report] wrote {args.out}")
  if args.readme:
    with open(args.readme) as fh:
      text = fh.read()
    text = replace_block(text, readme_block(metrics, summary), args.readme)
    with atomic_output(args.readme) as tmp:
      with open(tmp, "w") as fh:
        fh.write(text)
    print(f"[report] updated the results table in {args.readme}")
  return 0
