"""BERT (MiniLM) and CLIP text towers in Flax linen, loaded from Hugging Face folders.

transformers 5 has no Flax classes, so the two towers are written here and read the
PyTorch checkpoints' ``model.safetensors`` with ``safetensors.numpy`` (no torch at run
time). A model folder holds ``config.json`` + ``model.safetensors`` (or a sharded
``model.safetensors.index.json``) + tokenizer files; a Stable Diffusion root folder
(``text_encoder/`` + ``tokenizer/``) is accepted too.

Shapes: ``input_ids`` and ``attention_mask`` are (B, L) int32, L = ``max_length`` (fixed,
so jitted shapes are static); hidden states are (B, L, D) with D = ``hidden_size``;
sentence embeddings are (B, D), unit L2 norm.

Parameter tree (ours, not HF's; ``load_text_encoder`` does the mapping and transposes
linear weights from torch's (out, in) to Flax's (in, out)):

BERT::

    embeddings/{word_embeddings,position_embeddings,token_type_embeddings}/embedding
    embeddings/layer_norm/{scale,bias}
    layer_{i}/attention/{query,key,value}/{kernel (D,H,Dh), bias (H,Dh)}
    layer_{i}/attention/out/{kernel (H,Dh,D), bias (D,)}
    layer_{i}/attention_norm, layer_{i}/mlp_in, layer_{i}/mlp_out, layer_{i}/mlp_norm

CLIP::

    embeddings/{token_embedding,position_embedding}/embedding
    layer_{i}/{norm1, attention/..., norm2, mlp_in, mlp_out}, final_norm

Logical axis names: ``vocab`` (token rows), ``embed``, ``heads``, ``kv``, ``mlp``,
``norm``; position / token-type rows are unnamed (None).

Dropout is not implemented (inference and dropout-free fine-tuning only); BERT's
pooler head is not used (sentence embeddings are mean-pooled, the sentence-transformers
recipe for all-MiniLM-L6-v2).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import dataclasses
import functools
import os
import shutil
from typing import Any, Literal

from flax import linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from safetensors.numpy import save_file

from emotalker_jax.models import layers
from emotalker_jax.models.hf_text import (
  _bert_spec,
  _clip_spec,
  convert_hf_tensors,
  default_minilm_path,
  load_safetensors_folder,
  load_tokenizer,
  read_json,
  resolve_folders,
)

Kind = Literal["minilm", "bert", "clip"]


# ----------------------------------------------------------------------------------------
# Configs (read from the folder's config.json)
# ----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BertConfig:
  """The subset of transformers' BertConfig the tower uses (defaults: bert-base)."""

  vocab_size: int = 30522
  hidden_size: int = 768
  num_hidden_layers: int = 12
  num_attention_heads: int = 12
  intermediate_size: int = 3072
  hidden_act: str = "gelu"
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12
  pad_token_id: int = 0

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_attention_heads


@dataclasses.dataclass(frozen=True)
class CLIPTextConfig:
  """The subset of transformers' CLIPTextConfig the tower uses (defaults: HF's)."""

  vocab_size: int = 49408
  hidden_size: int = 512
  num_hidden_layers: int = 12
  num_attention_heads: int = 8
  intermediate_size: int = 2048
  hidden_act: str = "quick_gelu"
  max_position_embeddings: int = 77
  layer_norm_eps: float = 1e-5
  bos_token_id: int = 49406
  eos_token_id: int = 49407
  pad_token_id: int = 1

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_attention_heads


def _config_from_dict(cls, d: dict, where: str):
  fields = {f.name for f in dataclasses.fields(cls)}
  kw = {k: d[k] for k in fields if k in d and d[k] is not None}
  if isinstance(kw.get("eos_token_id"), list):  # HF allows a list; the first is the EOS
    kw["eos_token_id"] = kw["eos_token_id"][0]
  cfg = cls(**kw)
  if cfg.hidden_size % cfg.num_attention_heads:
    raise ValueError(
      f"{where}: hidden_size={cfg.hidden_size} is not a multiple of "
      f"num_attention_heads={cfg.num_attention_heads}; fix config.json"
    )
  _activation(cfg.hidden_act, where)  # validate early
  return cfg


def _activation(name: str, where: str = "config.json") -> Callable[[jax.Array], jax.Array]:
  """HF's ACT2FN names -> JAX functions ('gelu' is the exact erf GELU, as in torch)."""
  acts = {
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
    "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
    "gelu_pytorch_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "gelu_fast": functools.partial(jax.nn.gelu, approximate=True),
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
  }
  if name not in acts:
    raise ValueError(f"{where}: hidden_act={name!r} is not supported; use one of {sorted(acts)}")
  return acts[name]


# ----------------------------------------------------------------------------------------
# Modules
# ----------------------------------------------------------------------------------------


def _dense_init():
  return nn.initializers.normal(0.02)


def _embed(num: int, features: int, row_name: str | None, dtype, name: str) -> nn.Embed:
  return nn.Embed(
    num,
    features,
    dtype=dtype,
    param_dtype=jnp.float32,
    name=name,
    embedding_init=nn.with_logical_partitioning(_dense_init(), (row_name, "embed")),
  )


def _layer_norm(eps: float, dtype, name: str) -> nn.LayerNorm:
  return layers.layer_norm(eps, dtype=dtype, param_dtype=jnp.float32, name=name)


def _dense(features: int, in_name: str, out_name: str, dtype, name: str) -> layers.Dense:
  """Linear (in, features) with kernel axes (in_name, out_name), HF's N(0, 0.02) init."""
  return layers.dense(
    features,
    (in_name, out_name),
    dtype=dtype,
    param_dtype=jnp.float32,
    kernel_init=_dense_init(),
    name=name,
  )


def _attention(c, causal: bool, dtype) -> layers.Attention:
  """HF self-attention: query/key/value/out with biases, (H, Dh) heads, N(0, 0.02) init."""
  return layers.Attention(
    heads=c.num_attention_heads,
    head_dim=c.head_dim,
    qkv_bias=True,
    causal=causal,
    proj_names=layers.BERT_QKV,
    kernel_init=_dense_init(),
    dtype=dtype,
    param_dtype=jnp.float32,
    name="attention",
  )


class BertLayer(nn.Module):
  """Post-LN transformer layer: x = LN(x + Attn(x)); x = LN(x + FFN(x)). (B, L, D)."""

  config: BertConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
    c = self.config
    h = _attention(c, False, self.dtype)(x, mask=mask)
    x = _layer_norm(c.layer_norm_eps, self.dtype, "attention_norm")(x + h)
    h = _dense(c.intermediate_size, "embed", "mlp", self.dtype, "mlp_in")(x)
    h = nn.with_logical_constraint(_activation(c.hidden_act)(h), ("batch", "length", "mlp"))
    h = _dense(c.hidden_size, "mlp", "embed", self.dtype, "mlp_out")(h)
    x = _layer_norm(c.layer_norm_eps, self.dtype, "mlp_norm")(x + h)
    return nn.with_logical_constraint(x, ("batch", "length", "embed"))


class BertEmbeddings(nn.Module):
  """word + position + token-type embeddings, then LayerNorm. ids (B, L) -> (B, L, D)."""

  config: BertConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, input_ids: jax.Array, token_type_ids: jax.Array) -> jax.Array:
    c = self.config
    length = input_ids.shape[-1]
    x = _embed(c.vocab_size, c.hidden_size, "vocab", self.dtype, "word_embeddings")(input_ids)
    pos = _embed(c.max_position_embeddings, c.hidden_size, None, self.dtype, "position_embeddings")(
      jnp.arange(length)[None, :]
    )
    typ = _embed(c.type_vocab_size, c.hidden_size, None, self.dtype, "token_type_embeddings")(
      token_type_ids
    )
    x = x + pos + typ
    x = _layer_norm(c.layer_norm_eps, self.dtype, "layer_norm")(x)
    return nn.with_logical_constraint(x, ("batch", "length", "embed"))


class BertTextModel(nn.Module):
  """BERT encoder (MiniLM is a 6-layer, 384-wide BERT).

  __call__(input_ids (B, L) int, attention_mask (B, L) int {0,1}, token_type_ids=None)
  -> last hidden states (B, L, D) in ``dtype``. Padding keys are masked out of attention;
  the states at padding positions are computed but meaningless (mask them when pooling).
  """

  config: BertConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(
    self,
    input_ids: jax.Array,
    attention_mask: jax.Array | None = None,
    token_type_ids: jax.Array | None = None,
  ) -> jax.Array:
    c = self.config
    if input_ids.shape[-1] > c.max_position_embeddings:
      raise ValueError(
        f"sequence length {input_ids.shape[-1]} exceeds max_position_embeddings="
        f"{c.max_position_embeddings}; lower max_length"
      )
    if attention_mask is None:
      attention_mask = jnp.ones_like(input_ids)
    if token_type_ids is None:
      token_type_ids = jnp.zeros_like(input_ids)
    x = BertEmbeddings(c, self.dtype, name="embeddings")(input_ids, token_type_ids)
    for i in range(c.num_hidden_layers):
      x = BertLayer(c, self.dtype, name=f"layer_{i}")(x, attention_mask)
    return x


class CLIPLayer(nn.Module):
  """Pre-LN transformer layer: x += Attn(LN(x)) (causal); x += MLP(LN(x)). (B, L, D)."""

  config: CLIPTextConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None) -> jax.Array:
    c = self.config
    h = _layer_norm(c.layer_norm_eps, self.dtype, "norm1")(x)
    x = x + _attention(c, True, self.dtype)(h, mask=mask)
    h = _layer_norm(c.layer_norm_eps, self.dtype, "norm2")(x)
    h = _dense(c.intermediate_size, "embed", "mlp", self.dtype, "mlp_in")(h)
    h = nn.with_logical_constraint(_activation(c.hidden_act)(h), ("batch", "length", "mlp"))
    x = x + _dense(c.hidden_size, "mlp", "embed", self.dtype, "mlp_out")(h)
    return nn.with_logical_constraint(x, ("batch", "length", "embed"))


class CLIPEmbeddings(nn.Module):
  """token + position embeddings. ids (B, L) -> (B, L, D)."""

  config: CLIPTextConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, input_ids: jax.Array) -> jax.Array:
    c = self.config
    x = _embed(c.vocab_size, c.hidden_size, "vocab", self.dtype, "token_embedding")(input_ids)
    x = x + _embed(
      c.max_position_embeddings, c.hidden_size, None, self.dtype, "position_embedding"
    )(jnp.arange(input_ids.shape[-1])[None, :])
    return nn.with_logical_constraint(x, ("batch", "length", "embed"))


class CLIPTextModel(nn.Module):
  """CLIP text transformer (as in transformers' CLIPTextModel, without the projection).

  __call__(input_ids (B, L) int, attention_mask (B, L) or None) ->
  (last hidden states (B, L, D) after the final LayerNorm, pooled (B, D)).
  pooled is the state at the EOS token: the argmax of input_ids when
  ``eos_token_id == 2`` (legacy configs such as SD-1.5's, where EOS is the largest id),
  else the first position whose id equals ``eos_token_id`` — transformers' rule.

  Attention is causal. ``use_padding_mask=False`` (default) ignores attention_mask in
  attention, as Stable Diffusion's text encoder is run (its UNet was trained on the
  states of the padding positions computed that way); True also masks padding keys,
  as transformers does when given an attention_mask. Real-token states are identical
  either way (causality); only the states at padding positions differ.
  """

  config: CLIPTextConfig
  dtype: Any = jnp.float32
  use_padding_mask: bool = False

  @nn.compact
  def __call__(
    self, input_ids: jax.Array, attention_mask: jax.Array | None = None
  ) -> tuple[jax.Array, jax.Array]:
    c = self.config
    length = input_ids.shape[-1]
    if length > c.max_position_embeddings:
      raise ValueError(
        f"sequence length {length} exceeds max_position_embeddings="
        f"{c.max_position_embeddings}; lower max_length"
      )
    x = CLIPEmbeddings(c, self.dtype, name="embeddings")(input_ids)
    mask = attention_mask if (self.use_padding_mask and attention_mask is not None) else None
    for i in range(c.num_hidden_layers):
      x = CLIPLayer(c, self.dtype, name=f"layer_{i}")(x, mask)
    x = _layer_norm(c.layer_norm_eps, self.dtype, "final_norm")(x)
    if c.eos_token_id == 2:
      eos_pos = jnp.argmax(input_ids, axis=-1)
    else:
      eos_pos = jnp.argmax((input_ids == c.eos_token_id).astype(jnp.int32), axis=-1)
    pooled = jnp.take_along_axis(x, eos_pos[:, None, None], axis=1)[:, 0]
    return x, pooled


# ----------------------------------------------------------------------------------------
# Pooling
# ----------------------------------------------------------------------------------------


def mean_pool(hidden: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean of hidden (B, L, D) over the positions where mask (B, L) is 1 -> (B, D).

  sentence-transformers' recipe: sum(h * m) / max(sum(m), 1e-9), computed in float32.
  """
  m = mask.astype(jnp.float32)[..., None]
  s = jnp.sum(hidden.astype(jnp.float32) * m, axis=-2)
  return s / jnp.maximum(jnp.sum(m, axis=-2), 1e-9)


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  """x / max(||x||_2, eps) along the last axis (torch.nn.functional.normalize)."""
  n = jnp.linalg.norm(x.astype(jnp.float32), axis=-1, keepdims=True)
  return x / jnp.maximum(n, eps)


# ----------------------------------------------------------------------------------------
# The holder
# ----------------------------------------------------------------------------------------


@dataclasses.dataclass
class TextEncoder:
  """A loaded text tower: module + params + tokenizer, with jitted helpers.

  ``module.apply({'params': params}, input_ids, attention_mask)`` returns hidden states
  (B, L, D) (BERT) or (hidden (B, L, D), pooled (B, D)) (CLIP); it can be called inside
  a larger jitted model.
  """

  module: nn.Module
  params: Any
  tokenizer: Any  # tokenizers.Tokenizer (no padding, no truncation)
  hidden_size: int
  kind: str  # 'minilm' | 'bert' | 'clip'
  max_length: int
  pad_id: int
  config: Any  # BertConfig | CLIPTextConfig
  path: str = ""
  _jit_apply: Any = dataclasses.field(default=None, repr=False)

  @property
  def family(self) -> str:
    return "clip" if self.kind == "clip" else "bert"

  def tokenize(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
    """Texts -> {'input_ids' (B, L) int32, 'attention_mask' (B, L) int32, 'truncated' (B,) bool}.

    L = max_length always (padded with the tokenizer's pad id), special tokens included
    ([CLS] ... [SEP] for BERT, BOS ... EOS for CLIP). A text longer than L tokens keeps
    its first tokens and its closing special token; 'truncated' flags it so callers can warn.
    """
    if isinstance(texts, str):
      raise ValueError("tokenize expects a list of strings, got one string; wrap it in a list")
    texts = list(texts)
    for i, t in enumerate(texts):
      if not isinstance(t, str):
        raise ValueError(f"text #{i} is {type(t).__name__}, not str; decode bytes first")
    L = self.max_length
    ids = np.full((len(texts), L), self.pad_id, np.int32)
    mask = np.zeros((len(texts), L), np.int32)
    truncated = np.zeros((len(texts),), bool)
    if not texts:
      return {"input_ids": ids, "attention_mask": mask, "truncated": truncated}
    self.tokenizer.enable_truncation(L)
    try:
      encs = self.tokenizer.encode_batch(texts)
    finally:
      self.tokenizer.no_truncation()
    for i, e in enumerate(encs):
      n = len(e.ids)
      ids[i, :n] = e.ids
      mask[i, :n] = 1
      truncated[i] = len(e.overflowing) > 0
    return {"input_ids": ids, "attention_mask": mask, "truncated": truncated}

  def _apply(self, params, input_ids, attention_mask):
    if self._jit_apply is None:
      self._jit_apply = jax.jit(self.module.apply)
    return self._jit_apply({"params": params}, input_ids, attention_mask)

  def encode(self, texts: Sequence[str]) -> tuple[jax.Array, jax.Array]:
    """Texts -> (hidden (B, L, D) float32, attention_mask (B, L) int32). Jitted apply."""
    tok = self.tokenize(texts)
    out = self._apply(
      self.params, jnp.asarray(tok["input_ids"]), jnp.asarray(tok["attention_mask"])
    )
    hidden = out[0] if isinstance(out, tuple) else out
    return hidden.astype(jnp.float32), jnp.asarray(tok["attention_mask"])

  def embed(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
    """Texts -> sentence embeddings (B, D) float32: mean pool over real tokens, L2-normalised.

    Texts are sorted by token count and run in chunks of ``batch_size``; each chunk is
    padded to a power of two (>= 8) rows and cut to the shortest multiple of 16 tokens
    (at most max_length) that holds its longest text, so a few compiled shapes serve
    every batch and short texts do not pay for max_length. Neither the padding nor the
    order changes the result (masked mean, absolute positions); rows come back in the
    input order.
    """
    texts = list(texts)
    if batch_size < 1:
      raise ValueError(f"batch_size={batch_size} must be >= 1")
    if not texts:
      return np.zeros((0, self.hidden_size), np.float32)
    if self._embed_fn is None:
      module = self.module

      def fn(params, ids, mask):
        out = module.apply({"params": params}, ids, mask)
        hidden = out[0] if isinstance(out, tuple) else out
        return l2_normalize(mean_pool(hidden, mask))

      self._embed_fn = jax.jit(fn)
    tok = self.tokenize(texts)
    lengths = tok["attention_mask"].sum(1)
    order = np.argsort(lengths, kind="stable")
    out = np.zeros((len(texts), self.hidden_size), np.float32)
    for s in range(0, len(texts), batch_size):
      rows = order[s : s + batch_size]
      n = len(rows)
      b = max(8, 1 << (n - 1).bit_length())
      length = min(self.max_length, -(-int(lengths[rows].max()) // 16) * 16)
      ids = np.full((b, length), self.pad_id, np.int32)
      mask = np.zeros((b, length), np.int32)
      ids[:n] = tok["input_ids"][rows, :length]
      mask[:n] = tok["attention_mask"][rows, :length]
      mask[n:, 0] = 1  # filler rows: one token, so no row is empty
      out[rows] = np.asarray(self._embed_fn(self.params, ids, mask))[:n]
    return out

  _embed_fn: Any = dataclasses.field(default=None, repr=False)


def read_text_config(path: str | None = None, kind: str | None = None):
  """(family 'bert'|'clip', BertConfig|CLIPTextConfig, model_dir, tokenizer_dir)."""
  if path is None or path == "":
    path = default_minilm_path()
  model_dir, tok_dir = resolve_folders(os.fspath(path))
  cfg_file = os.path.join(model_dir, "config.json")
  d = read_json(cfg_file)
  model_type = d.get("model_type", "")
  if model_type == "clip" and isinstance(d.get("text_config"), dict):  # full CLIPModel config
    d = d["text_config"]
    model_type = "clip_text_model"
  if model_type in ("bert",):
    family = "bert"
  elif model_type in ("clip_text_model", "clip"):
    family = "clip"
  else:
    raise ValueError(
      f"{cfg_file}: model_type={model_type!r} is not supported; the text "
      "encoder loads 'bert' (e.g. MiniLM) and 'clip_text_model' checkpoints"
    )
  if kind is not None:
    if kind not in ("minilm", "bert", "clip"):
      raise ValueError(f"text encoder kind {kind!r} is unknown; use 'minilm', 'bert' or 'clip'")
    if (kind == "clip") != (family == "clip"):
      raise ValueError(
        f"text encoder kind {kind!r} does not match {cfg_file} "
        f"(model_type={model_type!r}); set config.text.encoder to "
        f"{'clip' if family == 'clip' else 'minilm'} or pass the right folder"
      )
  cls = BertConfig if family == "bert" else CLIPTextConfig
  return family, _config_from_dict(cls, d, cfg_file), model_dir, tok_dir


def load_text_encoder(
  path: str | None = None,
  kind: Kind | None = None,
  max_length: int = 48,
  dtype: Any = jnp.float32,
  use_padding_mask: bool = False,
) -> TextEncoder:
  """Loads a BERT/MiniLM or CLIP text tower from a local Hugging Face folder.

  path: folder with config.json + model.safetensors + tokenizer files (an SD pipeline
  root with text_encoder/ and tokenizer/ works too); None or '' -> the packaged
  all-MiniLM-L6-v2. kind: 'minilm' | 'bert' | 'clip', or None to read config.json's
  model_type. max_length: fixed token length L (padding / truncation), at most the
  model's max_position_embeddings. dtype: compute dtype (params stay float32).
  use_padding_mask: CLIP only, see ``CLIPTextModel``.
  """
  family, cfg, model_dir, tok_dir = read_text_config(path, kind)
  if kind is None:
    kind = "minilm" if (path is None or path == "") else family
  max_length = int(max_length)
  if not 2 <= max_length <= cfg.max_position_embeddings:
    raise ValueError(
      f"max_length={max_length} must be in [2, {cfg.max_position_embeddings}] "
      f"(max_position_embeddings of {model_dir}/config.json)"
    )
  tensors = load_safetensors_folder(model_dir)
  source = os.path.join(model_dir, "model.safetensors")
  params = convert_hf_tensors(tensors, cfg, family, source)
  if family == "bert":
    module = BertTextModel(cfg, dtype=dtype)
  else:
    module = CLIPTextModel(cfg, dtype=dtype, use_padding_mask=use_padding_mask)
  _check_tree(module, params, max_length, source)
  tokenizer, pad_id = load_tokenizer(tok_dir, family)
  vocab = tokenizer.get_vocab_size(with_added_tokens=True)
  if vocab > cfg.vocab_size:
    raise ValueError(
      f"the tokenizer in {tok_dir} has {vocab} tokens but config.json's "
      f"vocab_size is {cfg.vocab_size}; use the tokenizer that came with "
      "these weights"
    )
  params = jax.tree.map(jnp.asarray, params)
  return TextEncoder(
    module=module,
    params=params,
    tokenizer=tokenizer,
    hidden_size=cfg.hidden_size,
    kind=kind,
    max_length=max_length,
    pad_id=pad_id,
    config=cfg,
    path=model_dir,
  )


def _check_tree(module: nn.Module, params: dict, max_length: int, source: str) -> None:
  """Our converted tree must match the module's own init tree exactly (paths and shapes)."""
  abstract = abstract_params(module, max_length)
  want = {
    jax.tree_util.keystr(k): v.shape
    for k, v in jax.tree_util.tree_leaves_with_path(nn.unbox(abstract))
  }
  got = {jax.tree_util.keystr(k): v.shape for k, v in jax.tree_util.tree_leaves_with_path(params)}
  if want != got:  # a bug in the mapping tables, not a user error, but say what differs
    diff = sorted(set(want.items()) ^ set(got.items()))[:6]
    raise ValueError(f"{source}: converted parameters do not match the module: {diff}")


def abstract_params(module: nn.Module, max_length: int = 8) -> Any:
  """The module's params as boxed ShapeDtypeStructs (with logical axis names), no compute.

  ``nn.get_partition_spec(abstract_params(m))`` gives the logical PartitionSpecs.
  """
  ids = jax.ShapeDtypeStruct((1, max_length), jnp.int32)
  return jax.eval_shape(module.init, jax.random.key(0), ids, ids)["params"]


# ----------------------------------------------------------------------------------------
# Running a BERT tower in two parts (a frozen bottom, a fine-tuned top), and exporting it
# ----------------------------------------------------------------------------------------


def bert_lower_states(
  config: BertConfig, params: dict, input_ids: jax.Array, attention_mask: jax.Array, stop: int
) -> jax.Array:
  """The hidden states entering BERT layer ``stop``: embeddings then layers 0 .. stop - 1.

  input_ids, attention_mask: (B, L) int; returns (B, L, D) float32. ``stop`` = 0 gives
  the embeddings' output, ``stop`` = num_hidden_layers the tower's last hidden states
  (``BertTextModel`` = ``bert_upper_states(bert_lower_states(.., s), .., s)`` for any s).
  """
  c = config
  if not 0 <= stop <= c.num_hidden_layers:
    raise ValueError(f"stop={stop} must be in [0, {c.num_hidden_layers}] (the tower's layers)")
  x = BertEmbeddings(c).apply(
    {"params": params["embeddings"]}, input_ids, jnp.zeros_like(input_ids)
  )
  return bert_upper_states(c, params, x, attention_mask, 0, stop)


def bert_upper_states(
  config: BertConfig,
  params: dict,
  hidden: jax.Array,
  attention_mask: jax.Array,
  start: int,
  stop: int | None = None,
) -> jax.Array:
  """Runs BERT layers ``start`` .. ``stop - 1`` (stop None: to the last) on hidden (B, L, D).

  ``params`` needs only those layers' subtrees (``layer_{i}``); returns (B, L, D) in the
  input's dtype promoted with float32 params (float32).
  """
  stop = config.num_hidden_layers if stop is None else stop
  x = hidden
  for i in range(start, stop):
    x = BertLayer(config).apply({"params": params[f"layer_{i}"]}, x, attention_mask)
  return x


def _unconvert(conv_name: str, a: np.ndarray, c) -> np.ndarray:
  """Inverse of hf_text's converters: our layout -> torch's (out, in) layout."""
  d = c.hidden_size
  if conv_name == "_conv_linear":
    return a.T
  if conv_name in ("_conv_qkv_kernel", "_conv_out_kernel"):
    return a.reshape(d, d).T  # (D, H, Dh) or (H, Dh, D) -> (D, D), then (out, in)
  if conv_name == "_conv_qkv_bias":
    return a.reshape(d)
  return a


TOKENIZER_FILES = (
  "tokenizer.json",
  "tokenizer_config.json",
  "special_tokens_map.json",
  "vocab.txt",
  "vocab.json",
  "merges.txt",
)


def export_text_encoder(encoder: TextEncoder, out: str, params: Any | None = None) -> str:
  """Writes a Hugging Face-style folder ``out`` that ``load_text_encoder(out)`` reads back:
  config.json (the source folder's), model.safetensors (``params``, default the encoder's
  own, in torch's layout and HF names, float32) and the tokenizer files of the source
  folder. Returns ``out``. The round trip is exact: the loaded params equal ``params``
  bit for bit.
  """
  params = encoder.params if params is None else params
  family, cfg, model_dir, tok_dir = read_text_config(encoder.path, encoder.kind)
  spec = _bert_spec(cfg) if family == "bert" else _clip_spec(cfg)
  tensors = {}
  for path, hf, conv, _ in spec:
    node = params
    for k in path:
      node = node[k]
    a = np.asarray(jax.device_get(node), np.float32)
    tensors[hf] = np.ascontiguousarray(_unconvert(conv.__name__, a, cfg))
  os.makedirs(out, exist_ok=True)
  save_file(tensors, os.path.join(out, "model.safetensors"))
  shutil.copyfile(os.path.join(model_dir, "config.json"), os.path.join(out, "config.json"))
  for name in TOKENIZER_FILES:
    src = os.path.join(tok_dir, name)
    if os.path.isfile(src):
      shutil.copyfile(src, os.path.join(out, name))
  return out
