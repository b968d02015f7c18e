"""The challenging identities (input_pipeline/synthetic/challenging.py): each factor lies
outside what the training identities show, draws only what it says, and keeps every
ground truth (labels, landmarks, face mask) of the ordinary rendering."""

import colorsys
import dataclasses

import numpy as np
import pytest

from input_pipeline.synthetic import challenging as ch
from input_pipeline.synthetic import clips, face_model, sizes

NEUTRAL = np.eye(8, dtype=np.float32)[0]
HAPPY = np.eye(8, dtype=np.float32)[5]
ALL_IDS = [i for split in ch.SPLITS for i in ch.split_identities(split)]


def _render(u, emotion=HAPPY, size=64, frames=3, identity=10000):
  spec = clips.ClipSpec(identity, 0, emotion, True)
  return clips.render_clip(spec, u, size, frames, 0)


def _without(u, *names):
  """u with the named challenge factors switched off."""
  u = np.array(u)
  for n in names:
    u[face_model.NUM_IDENTITY_PARAMS + ch.CHALLENGE_PARAM_NAMES.index(n)] = 0.0
  return u


def _ids_with(factor):
  return [i for i in ALL_IDS if factor in ch.sample_challenging(i)[1]]


@pytest.fixture(scope="module")
def training_colours():
  """Skin and hair colours of 3000 ordinary identities (the training distribution)."""
  igs = [face_model.identity_geometry(face_model.sample_identity(i)) for i in range(3000)]
  return np.stack([g.skin for g in igs]), np.stack([g.hair for g in igs])


def test_splits_are_disjoint_from_every_benchmark_size_and_cover_every_factor():
  dev, rep = (set(ch.split_identities(s)) for s in ("challenging_dev", "challenging"))
  assert len(dev) == len(rep) == 8 and not dev & rep
  largest = max(v["num_identities"] for v in sizes.SIZES.values())
  assert min(dev | rep) >= 10 * largest  # never an identity of a built benchmark
  for split in (dev, rep):
    seen = set()
    for i in split:
      u, factors = ch.sample_challenging(i)
      assert len(factors) == ch.FACTORS_PER_IDENTITY == len(set(factors))
      assert u.shape == (face_model.NUM_IDENTITY_PARAMS + ch.NUM_CHALLENGE_PARAMS,)
      seen |= set(factors)
    assert seen == set(ch.CHALLENGE_FACTORS)
  with pytest.raises(ValueError, match="unknown challenging split 'hard'"):
    ch.split_identities("hard")


def test_skin_and_hair_colours_lie_outside_the_training_colours(training_colours):
  skins, hairs = training_colours
  for i in _ids_with("skin"):
    skin = ch.geometry(ch.sample_challenging(i)[0]).skin
    # Farther from every training skin colour than neighbouring training colours are apart.
    assert np.min(np.linalg.norm(skins - skin, axis=1)) > 0.05, i
  for i in _ids_with("hair"):
    hair = ch.geometry(ch.sample_challenging(i)[0]).hair
    assert np.min(np.linalg.norm(hairs - hair, axis=1)) > 0.1, i
    h, s, v = colorsys.rgb_to_hsv(*hair)
    assert (s > 0.5 and not 0.0 < h < 0.15) or (s < 0.05 and v > 0.9), i  # no brown or blond


def test_face_shapes_lie_outside_the_training_ranges():
  for i in _ids_with("face_shape"):
    ig = ch.geometry(ch.sample_challenging(i)[0])
    assert not 0.46 <= ig.face_a <= 0.58 or not 0.60 <= ig.face_b <= 0.70, i


def test_accessories_and_lighting_keep_the_ground_truth_and_change_only_their_region():
  for factor, names in (
    ("glasses", ("glasses_on",)),
    ("beard", ("beard_on",)),
    ("lighting", ("light_on",)),
  ):
    i = _ids_with(factor)[0]
    u = ch.sample_challenging(i)[0]
    # The other factors stay on in both renderings: the difference is this factor alone.
    a, b = _render(u, identity=i), _render(_without(u, *names), identity=i)
    np.testing.assert_array_equal(a["face_mask"], b["face_mask"])
    np.testing.assert_array_equal(a["landmarks"], b["landmarks"])
    np.testing.assert_array_equal(a["emotion"], b["emotion"])
    diff = np.any(a["frames"] != b["frames"], axis=-1)  # (T, S, S)
    assert diff.any(), factor
    lm = a["landmarks"]
    if factor == "glasses":
      # Within the eye band: from above the brows (landmarks 17-26) to below the eyes.
      top = lm[:, 17:27, 1].min(1) - 4
      bottom = lm[:, 36:48, 1].max(1) + 5
      rows = np.arange(64)[None, :]
      band = (rows >= top[:, None]) & (rows <= bottom[:, None])
      assert not (diff & ~band[:, :, None]).any()
    elif factor == "beard":
      # On the face (its mask grown by the one pixel of anti-aliasing), below the nose
      # tip (landmark 33).
      from scipy import ndimage

      rows = np.arange(64)[None, :, None]
      below = rows >= lm[:, 33, 1][:, None, None]
      face = ndimage.binary_dilation(a["face_mask"] > 0, structure=np.ones((1, 3, 3)))
      assert not (diff & ~(below & face)).any()
    else:
      # A multiplicative light field: with = round(without * gain(x) * cast) up to the two
      # roundings, wherever neither rendering is clipped.
      ex = ch.geometry(u).extras
      x = (np.arange(64) + 0.5) / 32.0 - 1.0
      field = (1.0 + ex.light_gain * x)[None, None, :, None] * ex.light_cast
      expect = b["frames"].astype(np.float64) * field
      ok = (expect < 250) & (b["frames"] > 5)
      err = np.abs(a["frames"] - expect)[ok]
      assert err.max() <= 0.5 + 0.5 * field.max() + 1e-6


def test_expression_and_speech_are_those_of_the_ordinary_identity():
  """Accessories, colours and light change no geometry: without its shape factor a
  challenging identity has the landmarks and audio of its ordinary vector u[:26]."""
  i = next(i for i in ALL_IDS if "face_shape" not in ch.sample_challenging(i)[1])
  u = ch.sample_challenging(i)[0]
  for emo in (NEUTRAL, HAPPY, np.eye(8, dtype=np.float32)[7]):
    a, b = _render(u, emo, 32, 2, i), _render(u[: face_model.NUM_IDENTITY_PARAMS], emo, 32, 2, i)
    np.testing.assert_array_equal(a["landmarks"], b["landmarks"])
    np.testing.assert_array_equal(a["face_mask"], b["face_mask"])
    np.testing.assert_array_equal(a["audio"], b["audio"])
    assert np.any(a["frames"] != b["frames"])


def test_ordinary_vectors_draw_nothing_extra():
  u = face_model.sample_identity(3)
  a, b = ch.geometry(u), face_model.identity_geometry(u)
  assert a.extras is None
  for f in dataclasses.fields(a):
    np.testing.assert_array_equal(getattr(a, f.name), getattr(b, f.name))
  with pytest.raises(ValueError, match="challenging identity vector has 40 entries"):
    ch.challenging_geometry(np.zeros(30))


def test_heldout_sources_of_the_challenging_split_re_render_their_reference_clip():
  from emotalker_jax.evaluation import evaluate as ev

  srcs, where = ev.heldout_sources("tiny", None, 2, 0, "challenging")
  assert "challenging split (in-process)" in where
  assert [s.identity for s in srcs] == ch.split_identities("challenging")[:2]
  for s in srcs:
    np.testing.assert_array_equal(s.identity_params, ch.sample_challenging(s.identity)[0])
    np.testing.assert_array_equal(s.portrait, s.truth[0])
    # The re-rendering the ceilings use reproduces the split's own reference clip.
    np.testing.assert_array_equal(ev.render_reference_clip(s, NEUTRAL, 5), s.truth[:5])
    plan = [c.emotion for c in clips.clip_plan(s.identity)]
    assert {tuple(r) for r in s.clip_emotions} == {tuple(e) for e in plan}
  with pytest.raises(ValueError, match="unknown synthetic split 'train'"):
    ev.heldout_sources("tiny", None, 2, 0, "train")
