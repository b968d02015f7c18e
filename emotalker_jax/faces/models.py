"""The packaged face models: where their files are and how they load.

dlib (the ``dlib-bin`` wheel, Boost Software License) runs them; the weights ship inside
``face-recognition-models`` (its author, Davis King, released the model files into the public
domain; the training data of one of them restricts its use, below):

  ``shape_predictor_68_face_landmarks.dat``    68 landmarks (iBUG 300-W markup). Its training
                                               data, iBUG 300-W, is licensed for
                                               non-commercial research only.
  ``shape_predictor_5_face_landmarks.dat``     5 landmarks (eye corners, nose); not used here.
  ``dlib_face_recognition_resnet_model_v1.dat`` ResNet 128-D face embedding.
  ``mmod_human_face_detector.dat``             the CNN face detector; not used (slow on CPU).

The HOG frontal-face detector is built into dlib itself. ``face_recognition_models`` is
located without importing it (its ``__init__`` needs ``pkg_resources``, gone from new
setuptools). Loaded models are cached per process.
"""

from __future__ import annotations

import functools
import importlib.util
import os

FACES_INSTALL_HINT = "pip install 'dlib-bin>=20,<21' 'face-recognition-models==0.3.0'"

LANDMARKS_68 = "shape_predictor_68_face_landmarks.dat"
FACE_EMBEDDING = "dlib_face_recognition_resnet_model_v1.dat"


def dlib_module():
  """Imports dlib, or raises ImportError naming the packages to install."""
  try:
    import dlib
  except ImportError as e:
    raise ImportError(
      f"the face detector and landmark models need dlib ({e}); install them with: "
      f"{FACES_INSTALL_HINT}"
    ) from None
  return dlib


def model_file(name: str) -> str:
  """Path of one of ``face_recognition_models``'s weight files (see the module docstring).

  Raises FileNotFoundError naming the package to install when it is missing.
  """
  spec = importlib.util.find_spec("face_recognition_models")
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(
      f"the face model weights ({name}) ship in the 'face-recognition-models' package, "
      f"which is not installed; install it with: {FACES_INSTALL_HINT}"
    )
  for root in spec.submodule_search_locations:
    path = os.path.join(root, "models", name)
    if os.path.isfile(path):
      return path
  raise FileNotFoundError(
    f"{name} is missing from face-recognition-models at "
    f"{list(spec.submodule_search_locations)}; reinstall it: {FACES_INSTALL_HINT}"
  )


@functools.cache
def frontal_face_detector():
  """dlib's HOG + linear SVM frontal-face detector (built into dlib)."""
  return dlib_module().get_frontal_face_detector()


@functools.cache
def landmark_predictor():
  """dlib's 68-point shape predictor (an ensemble of regression trees)."""
  return dlib_module().shape_predictor(model_file(LANDMARKS_68))


@functools.cache
def face_embedder():
  """dlib's ResNet face-recognition model: aligned 150x150 chip -> 128-D descriptor."""
  return dlib_module().face_recognition_model_v1(model_file(FACE_EMBEDDING))
