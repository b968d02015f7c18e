"""Metrics (emotalker_jax.evaluation.metrics) against hand-computed references."""

import math

import numpy as np
import pytest
from scipy import stats

from emotalker_jax.audio import frame_rms_envelope
from emotalker_jax.emotions import EMOTIONS
from emotalker_jax.evaluation import metrics


def _onehot(k, v=1.0):
  s = np.zeros(8, np.float32)
  s[k] = v
  return s


def test_emotion_accuracy_constructed_confusion():
  # Single rows: neutral (right), angry (right), angry predicted sad (wrong), happy (right).
  # Mixed rows: happy+sad predicted {sad, happy} (right), fear+surprised predicted
  # {fear, angry} (wrong). One all-zero row is ignored.
  target = np.stack(
    [
      _onehot(0),
      _onehot(1, 0.33),
      _onehot(1, 1.0),
      _onehot(5, 0.66),
      _onehot(5, 0.5) + _onehot(6, 1.0),
      _onehot(4, 1.0) + _onehot(7, 0.5),
      np.zeros(8, np.float32),
    ]
  )
  pred = np.full((7, 8), 0.05)
  pred[0, 0] = 0.9
  pred[1, 1] = 0.4
  pred[2, 6] = 0.8
  pred[2, 1] = 0.7
  pred[3, 5] = 0.6
  pred[4, [5, 6]] = [0.5, 0.9]
  pred[5, [4, 1, 7]] = [0.9, 0.6, 0.5]
  r = metrics.emotion_accuracy(pred, target)
  assert r["n_single"] == 4 and r["n_mixed"] == 2
  assert r["top1"] == pytest.approx(3 / 4)
  assert r["top2_mixed"] == pytest.approx(1 / 2)
  assert r["overall"] == pytest.approx(4 / 6)
  conf = np.array(r["confusion"])
  expected = np.zeros((8, 8), int)
  expected[0, 0] = 1
  expected[1, 1] = 1
  expected[1, 6] = 1
  expected[5, 5] = 1
  np.testing.assert_array_equal(conf, expected)
  assert r["per_emotion"]["angry"] == pytest.approx(0.5)
  assert r["per_emotion"]["neutral"] == 1.0 and r["per_emotion"]["happy"] == 1.0
  assert r["per_emotion"]["sad"] is None  # no single sad rows
  with pytest.raises(ValueError, match="emotion_accuracy"):
    metrics.emotion_accuracy(pred[:, :7], target[:, :7])


def test_emotion_accuracy_mixture_ties_count_either():
  # Target ties at the second place (0.5, 0.5): predicting either tied emotion is right.
  target = (_onehot(1, 1.0) + _onehot(2, 0.5) + _onehot(3, 0.5))[None].repeat(2, 0)
  pred = np.zeros((2, 8))
  pred[0, [1, 2]] = [0.9, 0.8]
  pred[1, [1, 3]] = [0.9, 0.8]
  assert metrics.emotion_accuracy(pred, target)["top2_mixed"] == 1.0


def _sweep(values_fn, strengths, emotions=(1, 2, 3), frames=3, seed=0):
  rng = np.random.default_rng(seed)
  x, e, p = [], [], []
  for k in emotions:
    for s in strengths:
      for _ in range(frames):
        x.append(s)
        e.append(k)
        p.append(values_fn(k, s) + 1e-3 * rng.standard_normal())
  return np.array(x), np.array(e), np.array(p)


def test_intensity_spearman_monotone_and_not_against_scipy():
  strengths = [0.2, 0.4, 0.6, 0.8, 1.0]
  # Emotion 1: monotone increasing; 2: reversed; 3: a fixed non-monotone pattern.
  pattern = {0.2: 0.3, 0.4: 0.1, 0.6: 0.5, 0.8: 0.4, 1.0: 0.9}
  fn = {1: lambda s: s**2, 2: lambda s: 1 - s, 3: lambda s: pattern[s]}
  x, e, p = _sweep(lambda k, s: fn[k](s), strengths)
  r = metrics.intensity_spearman(x, p, e)
  assert r["per_emotion"]["angry"] == pytest.approx(1.0)
  assert r["per_emotion"]["contempt"] == pytest.approx(-1.0)
  ref3 = stats.spearmanr(strengths, [pattern[s] for s in strengths]).statistic
  assert r["per_emotion"]["disgusted"] == pytest.approx(ref3)  # by hand: sum d^2 = 4
  assert ref3 == pytest.approx(1 - 6 * 4 / (5 * 24))
  assert r["mean"] == pytest.approx((1 - 1 + ref3) / 3)
  assert r["num_strengths"] == {"angry": 5, "contempt": 5, "disgusted": 5}
  # Frame level: scipy on the raw frames, ties in the strengths included.
  rf = metrics.intensity_spearman(x, p, e, reduce="none")
  sel = e == 3
  assert rf["per_emotion"]["disgusted"] == pytest.approx(stats.spearmanr(x[sel], p[sel]).statistic)
  assert rf["per_emotion"]["angry"] < 1.0  # tied strengths cap frame-level rho
  # (N, 8) predictions: the swept emotion's column is used.
  full = np.zeros((len(p), 8))
  full[np.arange(len(p)), e] = p
  full[:, 0] = np.random.default_rng(1).random(len(p))  # other columns are ignored
  assert metrics.intensity_spearman(x, full, e)["mean"] == pytest.approx(r["mean"])


def test_intensity_spearman_needs_five_strengths():
  x, e, p = _sweep(lambda k, s: s, [0.25, 0.5, 0.75, 1.0])
  with pytest.raises(ValueError, match=">= 5"):
    metrics.intensity_spearman(x, p, e)


def test_identity_similarity_cosines():
  a = np.array([3.0, 4.0, 0.0])
  assert metrics.identity_similarity(a[None] * 7.0, a) == pytest.approx(1.0)
  assert metrics.identity_similarity(np.array([[0.0, 0.0, 2.0]]), a) == pytest.approx(0.0)
  assert metrics.identity_similarity(-a, a) == pytest.approx(-1.0)
  g = np.array([[3.0, 4.0, 0.0], [0.0, 0.0, 1.0], [4.0, 3.0, 0.0]])
  # cosines 1, 0, 24/25 -> mean
  assert metrics.identity_similarity(g, a) == pytest.approx((1 + 0 + 24 / 25) / 3)
  # one source per frame
  assert metrics.identity_similarity(g, g) == pytest.approx(1.0)
  with pytest.raises(ValueError, match="embedding sizes"):
    metrics.identity_similarity(g, np.ones(4))


def test_psnr_of_known_mse_and_ssim():
  rng = np.random.default_rng(0)
  ref = rng.uniform(0.2, 0.8, (2, 32, 32, 3)).astype(np.float32)
  gen = ref + 0.1  # MSE = 0.01 -> PSNR = 10 log10(1 / 0.01) = 20 dB
  r = metrics.psnr_ssim(gen, ref)
  assert r["psnr"] == pytest.approx(20.0, abs=1e-3)
  same = metrics.psnr_ssim(ref, ref)
  assert same["ssim"] == pytest.approx(1.0, abs=1e-5)
  assert math.isinf(same["psnr"])
  noisy = np.clip(ref + 0.1 * rng.standard_normal(ref.shape), 0, 1).astype(np.float32)
  rn = metrics.psnr_ssim(noisy, ref)
  assert rn["ssim"] < 0.9
  mse = np.mean((noisy - ref) ** 2, axis=(1, 2, 3))
  np.testing.assert_allclose(rn["psnr_per_image"], 10 * np.log10(1 / mse), rtol=1e-4)
  with pytest.raises(ValueError, match=r"\[0, 1\]"):
    metrics.psnr_ssim(ref * 255, ref * 255)


def _speech_like(rng, frames, sr=16000, fps=25):
  """Noise with a random per-frame loudness: a clip whose envelope varies."""
  n = frames * sr // fps
  loud = np.repeat(rng.uniform(0, 1, frames) ** 2, sr // fps)
  return (loud * rng.standard_normal(n)).astype(np.float32)


def test_lip_sync_correlation_affine_and_shuffled():
  rng = np.random.default_rng(0)
  audios = [_speech_like(rng, 200) for _ in range(6)]
  envs = [frame_rms_envelope(a, 200, 25, 16000) for a in audios]
  affine = [0.5 + 3.0 * e for e in envs]
  r = metrics.lip_sync_correlation(affine, audios, fps=25, sr=16000)
  assert r["mean"] == pytest.approx(1.0, abs=1e-6)
  assert r["num_clips"] == 6 and r["num_undefined"] == 0
  neg = metrics.lip_sync_correlation([1.0 - e for e in envs], audios, fps=25, sr=16000)
  assert neg["mean"] == pytest.approx(-1.0, abs=1e-6)
  shuffled = [rng.permutation(e) for e in envs]
  rs = metrics.lip_sync_correlation(shuffled, audios, fps=25, sr=16000)
  assert abs(rs["mean"]) < 0.1
  # A single clip (1-D arrays) works too; a constant mouth is undefined (nan, excluded).
  one = metrics.lip_sync_correlation(affine[0], audios[0])
  assert one["mean"] == pytest.approx(1.0, abs=1e-6)
  const = metrics.lip_sync_correlation([np.zeros(200), affine[1]], audios[:2])
  assert const["num_undefined"] == 1 and const["mean"] == pytest.approx(1.0, abs=1e-6)
  with pytest.raises(ValueError, match="audio tracks"):
    metrics.lip_sync_correlation(affine, audios[:2])


def test_pearson_reference():
  rng = np.random.default_rng(3)
  a, b = rng.standard_normal(50), rng.standard_normal(50)
  assert metrics.pearson(a, b) == pytest.approx(stats.pearsonr(a, b).statistic)
  assert math.isnan(metrics.pearson(np.ones(5), a[:5]))


def test_metrics_table_markdown():
  md = metrics.metrics_table_markdown(
    {"emotion": {"top1": 0.98765, "confusion": [[1]]}, "n": 3, "x": None},
    meta={"checkpoint": "ckpt/1", "seed": 0},
    title="held-out",
  )
  lines = md.splitlines()
  assert lines[0] == "### held-out"
  assert "- checkpoint: ckpt/1" in lines and "- seed: 0" in lines
  assert "| emotion.top1 | 0.9877 |" in lines
  assert "| n | 3 |" in lines and "| x | - |" in lines
  assert not any("confusion" in l for l in lines)  # lists are left out
  conf = metrics.confusion_markdown(np.eye(8, dtype=int))
  assert conf.splitlines()[2] == "| neutral | 1 | 0 | 0 | 0 | 0 | 0 | 0 | 0 |"
  assert len(conf.splitlines()) == 2 + len(EMOTIONS)


# ---- intensity error, flicker, bootstrap intervals ----------------------------------------


def _vec(**kv):
  from emotalker_jax.emotions import EMOTION_INDEX

  v = np.zeros(8)
  for k, x in kv.items():
    v[EMOTION_INDEX[k]] = x
  return v


def test_intensity_error_sees_a_secondary_emotion_drawn_too_strong():
  """'mostly happy, a bit surprised' (happy 0.8, surprised 0.3): a generator drawing the
  label faithfully and one drawing surprise at twice its strength both get top-2 1.0, but
  the exaggerating one has the larger intensity error (hand-computed: |0.6 - 0.3| / 2)."""
  label = _vec(happy=0.8, surprised=0.3)
  rendering = np.repeat(label[None], 4, 0)  # the judge's reading of the truth
  faithful = np.repeat(label[None], 4, 0)
  doubled = np.repeat(_vec(happy=0.8, surprised=0.6)[None], 4, 0)
  for pred in (faithful, doubled):
    assert metrics.emotion_accuracy(pred, rendering)["top2_mixed"] == 1.0
  assert metrics.intensity_error(faithful, rendering, label) == 0.0
  assert metrics.intensity_error(doubled, rendering, label) == pytest.approx(0.15)
  # Only the label's emotions count: noise on an absent emotion is not an intensity error.
  noisy = doubled + _vec(sad=0.5)[None]
  assert metrics.intensity_error(noisy, rendering, label) == pytest.approx(0.15)
  # Against the label itself (the ground truth's floor): |0.7 - 0.8| and |0.2 - 0.3| -> 0.1
  read = np.array([_vec(happy=0.7, surprised=0.2), _vec(happy=0.9, surprised=0.4)])
  assert metrics.intensity_error(read, label, label) == pytest.approx(0.1)
  with pytest.raises(ValueError, match="no emotion above 0"):
    metrics.intensity_error(read, label, np.zeros(8))


def test_flicker_by_hand_and_a_jittering_clip_scores_worse_than_the_truth():
  # Two 2x2 grey frames: pixel (0, 0) goes 0 -> 51 (0.2), the others stay: 0.2 / 4 = 0.05.
  x = np.zeros((2, 2, 2, 3), np.uint8)
  x[1, 0, 0] = 51
  assert metrics.flicker(x) == pytest.approx(0.05)
  box = np.zeros((2, 2))
  box[0, 0] = 1  # the change is inside the mouth
  assert metrics.flicker(x, box) == 0.0
  assert metrics.flicker(np.repeat(x[:1], 5, 0)) == 0.0  # a still clip
  # A smooth clip (a slowly moving gradient) against the same clip shifted by a random
  # pixel every frame: the jitter is far above the truth's own motion.
  t = np.arange(12)[:, None, None]
  yy, xx = np.mgrid[:32, :32]
  truth = 127 + 100 * np.sin((xx[None] + 0.2 * t) / 5.0) * np.cos(yy[None] / 7.0)
  truth = np.repeat(truth[..., None], 3, -1).astype(np.uint8)
  rng = np.random.default_rng(0)
  jitter = np.stack([np.roll(f, tuple(rng.integers(-2, 3, 2)), axis=(0, 1)) for f in truth])
  mouth = np.zeros((32, 32))
  mouth[20:28, 10:22] = 1
  assert metrics.flicker(jitter, mouth) > 3 * metrics.flicker(truth, mouth) > 0
  with pytest.raises(ValueError, match="T >= 2"):
    metrics.flicker(truth[:1])


def test_bootstrap_interval_of_a_constant_metric_is_a_point():
  assert metrics.bootstrap_ci(np.full((8, 4), 0.75)) == [0.75, 0.75]
  assert metrics.bootstrap_ci(np.ones((3, 2)), n_boot=50) == [1.0, 1.0]


def test_bootstrap_interval_by_hand():
  """Two identities, one prompt, values 0 and 1: a replicate's mean is 0, 0.5 or 1 with
  probabilities 1/4, 1/2, 1/4, so the 95 % interval is [0, 1]; with 5 prompts (stratified
  draws) the replicate mean is (number of 1s among 10 fair draws) / 10, whose 2.5 % and
  97.5 % points are 0.2 and 0.8."""
  assert metrics.bootstrap_ci(np.array([[0.0], [1.0]]), n_boot=4000) == [0.0, 1.0]
  lo, hi = metrics.bootstrap_ci(np.repeat(np.array([[0.0], [1.0]]), 5, 1), n_boot=4000)
  assert (lo, hi) == (pytest.approx(0.2), pytest.approx(0.8))
  # nan units (undefined) are left out of each replicate's mean, like the figure itself.
  v = np.array([[0.5, np.nan], [0.5, 0.5]])
  assert metrics.bootstrap_ci(v) == [0.5, 0.5]
  # A statistic of the drawn identities: the identity draw (arange) gives the figure.
  vals = np.random.default_rng(1).uniform(size=(6, 3))
  seen = []

  def stat(idx):
    seen.append(idx.copy())
    return float(vals[idx, np.arange(3)[None]].mean())

  ci_stat = metrics.bootstrap_ci(statistic=stat, shape=vals.shape, n_boot=300, seed=3)
  assert ci_stat == metrics.bootstrap_ci(vals, n_boot=300, seed=3)  # same draws, same figure
  assert all(i.shape == (6, 3) and i.min() >= 0 and i.max() < 6 for i in seen)
  assert ci_stat[0] < vals.mean() < ci_stat[1]
  with pytest.raises(ValueError, match="give unit_values or statistic"):
    metrics.bootstrap_ci()
