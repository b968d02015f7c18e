"""The headline figures' ceilings (``CEILINGS``: the same measure on ground truth beside
each) and their 95 % bootstrap intervals over (identity, prompt) units (``CI_KEYS``,
``intervals``), for ``evaluation/evaluate.py``'s metrics.json.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from emotalker_jax.evaluation import metrics

# Headline figures and the figure each is read against (the same measure on ground truth,
# or the autoencoder's round trip for emotion accuracy): the report's ceiling column.
CEILINGS = {
  "emotion_accuracy": "ceiling_emotion_accuracy_autoencoder",
  "mixed_top2_accuracy": "ceiling_mixed_top2_labels",
  "mixed_intensity_error": "mixed_intensity_error_ground_truth",
  "intensity_spearman": "intensity_spearman_ground_truth",
  "intensity_spearman_frames": "intensity_spearman_frames_ground_truth",
  "identity_similarity": "identity_similarity_ground_truth",
  "identity_similarity_no_constraint": "identity_similarity_ground_truth",
  "lip_sync_correlation": "lip_sync_ground_truth_frames",
  "flicker": "flicker_ground_truth",
  "paraphrase_emotion_accuracy": "ceiling_emotion_accuracy_autoencoder",
  "mixed_top2_accuracy_explicit": "ceiling_mixed_top2_labels",
}
CEILING_KEYS = tuple(dict.fromkeys(CEILINGS.values()))
# The keys with a 95 % bootstrap interval ``<key>_ci`` (over (identity, prompt) units).
CI_KEYS = (
  "emotion_accuracy",
  "emotion_accuracy_no_constraint",
  "mixed_top2_accuracy",
  "mixed_intensity_error",
  "mixed_intensity_error_ground_truth",
  "intensity_spearman",
  "intensity_spearman_frames",
  "intensity_spearman_ground_truth",
  "intensity_spearman_frames_ground_truth",
  "identity_similarity",
  "identity_similarity_no_constraint",
  "identity_similarity_ground_truth",
  "identity_similarity_constraint_gain",
  "identity_similarity_expression_drawn",
  "identity_similarity_expression_missed",
  "identity_similarity_expression_drawn_no_constraint",
  "identity_similarity_expression_missed_no_constraint",
  "lip_sync_correlation",
  "lip_sync_ground_truth_frames",
  "flicker",
  "flicker_ground_truth",
  "paraphrase_emotion_accuracy",
  "mixed_top2_accuracy_explicit",
  "mixed_top2_accuracy_uncalibrated",
  "ceiling_mixed_top2_labels",
)


def intervals(parts: dict, strengths: Sequence[float], n_boot: int, seed: int) -> dict:
  """``<key>_ci`` for every CI_KEYS figure from the (identity, prompt) units of its part
  (``parts``: ``evaluate``'s per-part results; ``strengths``: the sweep's strengths)."""
  u = lambda part, key: np.asarray(parts[part]["units"][key], np.float64)  # noqa: E731
  units = {
    "emotion_accuracy": u("single", "emotion_accuracy"),
    "emotion_accuracy_no_constraint": u("single_no_constraint", "emotion_accuracy"),
    "identity_similarity": u("single", "identity_similarity"),
    "identity_similarity_ground_truth": u("single", "identity_similarity_ground_truth"),
    "identity_similarity_no_constraint": u("single_no_constraint", "identity_similarity"),
    # paired: the same (identity, prompt) units with and without the constraint
    "identity_similarity_constraint_gain": u("single", "identity_similarity")
    - u("single_no_constraint", "identity_similarity"),
    "identity_similarity_expression_drawn": u("single", "identity_similarity_expression_drawn"),
    "identity_similarity_expression_missed": u("single", "identity_similarity_expression_missed"),
    "identity_similarity_expression_drawn_no_constraint": u(
      "single_no_constraint", "identity_similarity_expression_drawn"
    ),
    "identity_similarity_expression_missed_no_constraint": u(
      "single_no_constraint", "identity_similarity_expression_missed"
    ),
    "mixed_top2_accuracy": u("mixed", "mixed_top2_accuracy"),
    "mixed_intensity_error": u("mixed", "mixed_intensity_error"),
    "mixed_intensity_error_ground_truth": u("mixed", "mixed_intensity_error_ground_truth"),
    "mixed_top2_accuracy_explicit": u("mixed_explicit", "mixed_top2_accuracy"),
    "mixed_top2_accuracy_uncalibrated": u(
      "mixed_uncalibrated" if "mixed_uncalibrated" in parts else "mixed", "mixed_top2_accuracy"
    ),
    "paraphrase_emotion_accuracy": u("paraphrases", "emotion_accuracy"),
    "ceiling_mixed_top2_labels": u("ceiling_labels", "mixed_top2"),
  }
  for key in (
    "lip_sync_correlation",
    "lip_sync_ground_truth_frames",
    "flicker",
    "flicker_ground_truth",
  ):
    units[key] = u("lip", key)
  out = {f"{k}_ci": metrics.bootstrap_ci(v, n_boot=n_boot, seed=seed) for k, v in units.items()}
  sw = parts["sweep"]
  for name, key in (("", "readings"), ("_ground_truth", "readings_ground_truth")):
    r = np.asarray(sw[key], np.float64)  # (I, E, A, F)
    for red, suffix in (("mean", ""), ("none", "_frames")):

      def stat(idx, r=r, red=red):
        # column e of idx: the identities drawn for emotion e
        return metrics.sweep_spearman(
          np.stack([r[idx[:, e], e] for e in range(r.shape[1])], 1), strengths, reduce=red
        )[0]

      out[f"intensity_spearman{suffix}{name}_ci"] = metrics.bootstrap_ci(
        statistic=stat, shape=(r.shape[0], r.shape[1]), n_boot=n_boot, seed=seed
      )
  return out
