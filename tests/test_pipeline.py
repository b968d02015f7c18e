"""grain training pipeline over per-clip TFDS array_record data.

A tiny dataset with the synthetic_talk feature layout is built here (``FakeTalk``) with
frames, masks and audio that are deterministic functions of (clip_id, frame), so every
example can be checked against an independent recomputation; clip lengths and neutral
clips are chosen to exercise each reference-frame rule. One test runs the real
``synthetic_talk`` builder (a reduced config) to check the two stay compatible.
"""

import inspect
import json

from etils import epath
import grain.python as gp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from emotalker_jax import audio as audio_lib
from input_pipeline import pipeline as P

S = 16  # frame size of the fake dataset
SPF = 640  # audio samples per frame (16 kHz, 25 fps)

# identity -> list of (num_frames, emotion index, intensity, is_neutral_reference)
PLAN = {
  0: [(10, 0, 1.0, True), (12, 1, 1 / 3, False), (12, 5, 1.0, False), (12, 6, 2 / 3, False)],
  1: [(80, 2, 1.0, False), (10, 3, 2 / 3, False)],  # no neutral clip at all
  2: [(8, 7, 1.0, False)],  # one short clip
  3: [(10, 0, 1.0, True), (10, 0, 1.0, False), (9, 4, 1.0, False)],
  4: [(10, 0, 1.0, True), (11, 5, 1 / 3, False)],
  5: [(10, 0, 1.0, True), (13, 6, 1.0, False)],
}
TEST_PLAN = {9: [(10, 0, 1.0, True), (10, 1, 1.0, False)]}


def clip_specs(plan):
  for ident, clips in plan.items():
    for k, (t, emo, inten, ref) in enumerate(clips):
      yield ident * 100 + k, ident, t, emo, inten, ref


def fake_frames(clip_id, t):
  return np.random.default_rng([clip_id, 1]).integers(0, 256, (t, S, S, 3), dtype=np.uint8)


def unit(frame_u8):
  """uint8 -> float32 [-1, 1], the pipeline's convention."""
  return frame_u8.astype(np.float32) / np.float32(127.5) - np.float32(1.0)


def fake_mask(clip_id, t):
  m = np.zeros((t, S, S), np.uint8)
  for f in range(t):
    y0, x0 = 2 + (clip_id + f) % 4, 3 + (clip_id * 3 + f) % 3
    m[f, y0 : y0 + 9, x0 : x0 + 7] = 1
  return m


def fake_audio(clip_id, t):
  rng = np.random.default_rng([clip_id, 2])
  return (0.3 * rng.standard_normal(t * SPF)).astype(np.float32)


class FakeTalk(tfds.core.GeneratorBasedBuilder):
  """synthetic_talk's per-clip layout, variable clip length."""

  name = "pipeline_fake_talk"
  VERSION = tfds.core.Version("1.0.0")

  # tfds 4.9.10 finds the code path of a builder inside a package with the optional
  # `importlib_resources`; the module's file is the same path.
  @tfds.core.utils.py_utils.classproperty
  @classmethod
  def code_path(cls):
    return epath.Path(inspect.getfile(cls))

  def _info(self):
    f = tfds.features
    return tfds.core.DatasetInfo(
      builder=self,
      features=f.FeaturesDict(
        {
          "frames": f.Tensor(shape=(None, S, S, 3), dtype=np.uint8),
          "face_mask": f.Tensor(shape=(None, S, S), dtype=np.uint8),
          "mouth_open": f.Tensor(shape=(None,), dtype=np.float32),
          "audio": f.Tensor(shape=(None,), dtype=np.float32),
          "emotion": f.Tensor(shape=(8,), dtype=np.float32),
          "identity": f.Scalar(dtype=np.int64),
          "identity_params": f.Tensor(shape=(4,), dtype=np.float32),
          "clip_id": f.Scalar(dtype=np.int64),
          "is_neutral_reference": f.Scalar(dtype=np.bool_),
        }
      ),
    )

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples(PLAN), "test": self._generate_examples(TEST_PLAN)}

  def _generate_examples(self, plan):
    for cid, ident, t, emo, inten, ref in clip_specs(plan):
      e = np.zeros(8, np.float32)
      e[emo] = inten
      yield (
        cid,
        {
          "frames": fake_frames(cid, t),
          "face_mask": fake_mask(cid, t),
          "mouth_open": (np.arange(t) / t).astype(np.float32),
          "audio": fake_audio(cid, t),
          "emotion": e,
          "identity": ident,
          "identity_params": np.full(4, ident, np.float32),
          "clip_id": cid,
          "is_neutral_reference": ref,
        },
      )


SPECS = {
  cid: dict(identity=i, t=t, ref=r, neutral=(e == 0)) for cid, i, t, e, _, r in clip_specs(PLAN)
}
TOTAL = sum(s["t"] for s in SPECS.values())
NAME = "pipeline_fake_talk"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  d = str(tmp_path_factory.mktemp("tfds"))
  FakeTalk(data_dir=d, file_format="array_record").download_and_prepare()
  return d


def loader(data_dir, **kw):
  """make_loader on the fake dataset; prompts default to the cheap ``simple_prompt``
  (pass prompt_fn=None for the real default, FED)."""
  kw.setdefault("prompt_fn", P.simple_prompt)
  kw.setdefault("batch_size", 4)
  kw.setdefault("seed", 0)
  kw.setdefault("shard_options", gp.NoSharding())
  return P.make_loader(NAME, kw.pop("split", "train"), data_dir=data_dir, **kw)


def take(it, n):
  return [next(it) for _ in range(n)]


def assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def keys_of(batches):
  return [(int(c), int(f)) for b in batches for c, f in zip(b["clip_id"], b["frame"])]


# ---------------------------------------------------------------------------------------
def test_clip_index_and_locate(data_dir):
  src, _ = P.open_source(NAME, "train", data_dir)
  idx = P.ClipIndex.from_source(src)
  assert idx.total_frames == TOTAL and idx.num_clips == len(SPECS)
  seen = set()
  for flat in range(TOTAL):
    c, f = idx.locate(flat)
    cid = int(idx.clip_id[c])
    assert 0 <= f < SPECS[cid]["t"]
    seen.add((cid, f))
  assert len(seen) == TOTAL  # the flat index is a bijection onto (clip, frame)
  for c in range(idx.num_clips):
    s = SPECS[int(idx.clip_id[c])]
    assert (idx.identity[c], idx.reference[c], idx.neutral[c]) == (
      s["identity"],
      s["ref"],
      s["neutral"],
    )
  with pytest.raises(IndexError):
    idx.locate(TOTAL)


def test_reference_rules(data_dir):
  src, _ = P.open_source(NAME, "train", data_dir)
  idx = P.ClipIndex.from_source(src)
  rec = {int(c): i for i, c in enumerate(idx.clip_id)}
  rng = np.random.default_rng(0)

  def refs(cid, frame, n=60):
    return [choose(cid, frame) for _ in range(n)]

  def choose(cid, frame):
    c, f = P.choose_reference(idx, rec[cid], frame, rng)
    return int(idx.clip_id[c]), f

  # 1. an emotional clip of an identity with a reference clip: always that clip.
  r = refs(1, 3)
  assert {c for c, _ in r} == {0} and {f for _, f in r} == set(range(10))
  # 1 then 2: identity 3's reference clip is 300; target 300 -> the other neutral clip.
  assert {c for c, _ in refs(300, 0)} == {301}
  assert {c for c, _ in refs(302, 0)} == {300}
  # 4. target in the only reference clip, no other neutral, clip too short: other clips.
  assert {c for c, _ in refs(0, 5)} == {1, 2, 3}
  # 3. no neutral clip, long clip: same clip, >= 60 frames away.
  r = refs(100, 5)
  assert {c for c, _ in r} == {100} and all(f >= 65 for _, f in r)
  r = refs(100, 75)
  assert {c for c, _ in r} == {100} and all(f <= 15 for _, f in r)
  # ... but from the middle of an 80-frame clip nothing is 60 frames away: other clips.
  assert {c for c, _ in refs(100, 40)} == {101}
  # 4. short clip of that identity: the other (long) clip.
  assert {c for c, _ in refs(101, 2)} == {100}
  # 5. a single short clip: its farthest frame.
  assert set(refs(200, 1)) == {(200, 7)} and set(refs(200, 6)) == {(200, 0)}


def test_examples_match_records(data_dir):
  batches = take(iter(loader(data_dir, batch_size=8, prompt_fn=None)), 4)
  n_checked = 0
  for b in batches:
    for i in range(8):
      cid, f = int(b["clip_id"][i]), int(b["frame"][i])
      rcid, rf = int(b["ref_clip_id"][i]), int(b["ref_frame"][i])
      s = SPECS[cid]
      np.testing.assert_array_equal(b["x_tgt"][i], unit(fake_frames(cid, s["t"])[f]))
      np.testing.assert_array_equal(b["x_ref"][i], unit(fake_frames(rcid, SPECS[rcid]["t"])[rf]))
      assert SPECS[rcid]["identity"] == s["identity"] == b["identity"][i]
      assert (rcid, rf) != (cid, f)
      np.testing.assert_array_equal(b["face_mask"][i], fake_mask(cid, s["t"])[f])
      assert b["mouth_open"][i] == np.float32(f / s["t"])
      assert b["emotion"][i].argmax() == [e for c, _, _, e, _, _ in clip_specs(PLAN) if c == cid][0]
      assert isinstance(b["prompt"][i], str) and b["prompt"][i]
      # the default prompts are FED's (describe(s)): their label keeps the dominant emotion
      assert b["prompt_emotion"][i].argmax() == b["emotion"][i].argmax()
      assert np.abs(b["prompt_emotion"][i] - b["emotion"][i]).max() < 0.35
      n_checked += 1
  assert n_checked == 32
  # x_tgt covers both signs of [-1, 1]
  assert batches[0]["x_tgt"].min() < -0.9 and batches[0]["x_tgt"].max() > 0.9


def test_audio_window_matches_frontend(data_dir):
  """The numpy mel window equals emotalker_jax.audio's JAX frontend on the whole clip,
  for frames of every position (edges clamp) and for audio shorter / longer than T."""
  t = 10
  batches = take(iter(loader(data_dir, batch_size=16)), 3)
  got = [
    (int(c), int(f), m)
    for b in batches
    for c, f, m in zip(b["clip_id"], b["frame"], b["audio_mel"])
    if SPECS[int(c)]["t"] == t
  ]
  assert len(got) >= 5
  cids = sorted({c for c, _, _ in got})
  ref = np.asarray(audio_lib.audio_features(np.stack([fake_audio(c, t) for c in cids]), t))
  for c, f, m in got:
    assert m.shape == (21, 80)
    np.testing.assert_allclose(m, ref[cids.index(c), f], atol=2e-3, rtol=1e-4)
  rng = np.random.default_rng(3)
  mw = P.MelWindow()
  for n in (3 * SPF + 17, 14 * SPF):  # short and long audio for 10 frames
    a = (0.5 * rng.standard_normal(n)).astype(np.float32)
    ref = np.asarray(audio_lib.audio_features(a, t))
    for f in range(t):
      np.testing.assert_allclose(mw(a, f, t), ref[f], atol=2e-3, rtol=1e-4)


def test_mel_window_from_a_slice_equals_the_whole_clip():
  """MelWindow on the samples [lo, hi) that sample_range names (what a frame-level record
  stores), or on any slice holding them, equals the whole-clip window; a slice missing
  some of them is refused. Checked for 0.2 s and 0.1 s windows, every frame position."""
  rng = np.random.default_rng(5)
  t = 12
  a = (0.4 * rng.standard_normal(t * SPF)).astype(np.float32)
  for window_s in (0.2, 0.1):
    mw = P.MelWindow(window_s=window_s)
    ranges = mw.sample_ranges(t, a.size)
    assert ranges[0, 0] == 0 and ranges[-1, 1] == a.size  # edge windows reach the ends
    assert np.all(np.diff(ranges[:, 0]) >= 0)
    for f in range(t):
      lo, hi = ranges[f]
      whole = mw(a, f, t)
      np.testing.assert_allclose(mw(a[lo:hi], f, t, lo, a.size), whole, rtol=1e-6, atol=1e-6)
      wide = max(0, lo - 100)
      np.testing.assert_allclose(
        mw(a[wide : hi + 50], f, t, wide, a.size), whole, rtol=1e-6, atol=1e-6
      )
      if hi - lo > 2:
        with pytest.raises(ValueError, match="audio_window_s"):
          mw(a[lo + 1 : hi], f, t, lo + 1, a.size)
  # the 0.1 s window's samples lie inside the 0.2 s window's: a record built for 0.2 s
  # serves any shorter window
  r2, r1 = (
    P.MelWindow(window_s=0.2).sample_ranges(t, a.size),
    P.MelWindow(window_s=0.1).sample_ranges(t, a.size),
  )
  assert np.all(r1[:, 0] >= r2[:, 0]) and np.all(r1[:, 1] <= r2[:, 1])


def test_read_clips_refuses_per_clip_records(data_dir):
  from input_pipeline import frame_records

  with pytest.raises(ValueError, match="not frame-level"):
    next(frame_records.read_clips(NAME, "train", data_dir))


@pytest.mark.parametrize("mode", ["face", "lower_face"])
def test_mask_blanks_exactly_the_region(data_dir, mode):
  b = next(iter(loader(data_dir, batch_size=8, mask=mode, fill=0.0)))
  for i in range(8):
    face = b["face_mask"][i] > 0
    if mode == "face":
      expect = face
    else:
      ys, xs = np.nonzero(face)
      y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
      expect = np.zeros_like(face)
      expect[(y0 + y1) // 2 : y1, x0:x1] = True
      assert expect.sum() < face.sum()
    np.testing.assert_array_equal(b["mask_region"][i] > 0, expect)
    np.testing.assert_array_equal(b["x_mask"][i][expect], 0.0)
    np.testing.assert_array_equal(b["x_mask"][i][~expect], b["x_tgt"][i][~expect])
    assert np.any(b["x_tgt"][i][expect] != 0.0)  # blanking changed something


def test_same_seed_same_batches_other_seed_differs(data_dir):
  a = take(iter(loader(data_dir, seed=7)), 3)
  b = take(iter(loader(data_dir, seed=7)), 3)
  c = take(iter(loader(data_dir, seed=8)), 3)
  assert_batches_equal(a, b)
  assert keys_of(a) != keys_of(c)
  assert not np.array_equal(a[0]["x_tgt"], c[0]["x_tgt"])


def test_shards_are_disjoint_and_cover_an_epoch(data_dir):
  shards = []
  for i in range(2):
    so = gp.ShardOptions(shard_index=i, shard_count=2, drop_remainder=False)
    shards.append(keys_of(list(iter(loader(data_dir, train=False, shard_options=so)))))
  a, b = set(shards[0]), set(shards[1])
  assert len(a) == len(shards[0]) and len(b) == len(shards[1])  # one epoch, no repeats
  assert not a & b
  # grain's DataLoader gives every shard the same length: the odd frame out is dropped.
  assert TOTAL % 2 == 1 and len(a) == len(b) == TOTAL // 2
  assert len(keys_of(list(iter(loader(data_dir, train=False))))) == TOTAL  # unsharded: all
  # Shuffled, repeated training shards are disjoint too (each sees its own half).
  tr = []
  for i in range(2):
    so = gp.ShardOptions(shard_index=i, shard_count=2, drop_remainder=True)
    tr.append(set(keys_of(take(iter(loader(data_dir, shard_options=so, seed=3)), 10))))
  assert not tr[0] & tr[1]


def test_training_repeats_beyond_one_epoch(data_dir):
  it = iter(loader(data_dir, batch_size=16))
  keys = keys_of(take(it, TOTAL // 16 + 3))
  assert len(keys) > TOTAL and set(keys) == set(
    keys_of(list(iter(loader(data_dir, batch_size=16, train=False))))
  )


def test_resume_from_iterator_state(data_dir):
  it = iter(loader(data_dir, seed=5))
  take(it, 3)
  state = it.get_state()
  expected = take(it, 4)
  it2 = iter(loader(data_dir, seed=5))
  it2.set_state(state)
  assert_batches_equal(take(it2, 4), expected)


def by_example(batches):
  """{(clip_id, frame): {key: value}} over all examples of some batches."""
  out = {}
  for b in batches:
    for i in range(len(b["clip_id"])):
      out[(int(b["clip_id"][i]), int(b["frame"][i]))] = {k: v[i] for k, v in b.items()}
  return out


def test_worker_processes(data_dir):
  """2 workers: deterministic, resumable, and the same examples as in-process loading
  (grain batches within each worker, so batch composition depends on worker_count)."""
  ref = by_example(take(iter(loader(data_dir, seed=11, worker_count=0, prompt_fn=None)), 6))
  it = iter(loader(data_dir, seed=11, worker_count=2, prompt_fn=None))
  got = take(it, 3)
  state = it.get_state()
  got += take(it, 3)
  assert got[0]["prompt"].dtype.kind == "U"
  ex = by_example(got)
  assert ex.keys() == ref.keys() and len(ex) == 24
  for key in ex:
    for k in ex[key]:
      np.testing.assert_array_equal(ex[key][k], ref[key][k], err_msg=str((key, k)))
  it2 = iter(loader(data_dir, seed=11, worker_count=2, prompt_fn=None))
  it2.set_state(state)
  assert_batches_equal(take(it2, 3), got[3:])


def test_resize_and_lower_face(data_dir):
  b = next(iter(loader(data_dir, batch_size=4, image_size=8, mask="lower_face")))
  assert b["x_tgt"].shape == (4, 8, 8, 3) and b["face_mask"].shape == (4, 8, 8)
  cid, f = int(b["clip_id"][0]), int(b["frame"][0])
  src = fake_frames(cid, SPECS[cid]["t"])[f].astype(np.float32)
  area = src.reshape(8, 2, 8, 2, 3).mean((1, 3))  # INTER_AREA for a 2x shrink
  np.testing.assert_allclose(b["x_tgt"][0], np.round(area) / 127.5 - 1.0, atol=1 / 127.5 + 1e-6)


def test_config_loader_and_batch_split(data_dir, repo_root):
  from emotalker_jax.config_utils import load_config

  cfg = load_config(
    str(repo_root / "configs" / "tiny.py"),
    [
      f"--config.data.dataset={NAME}",
      f"--config.data.data_dir={data_dir}",
      "--config.data.image_size=16",
      "--config.train.batch_size=6",
    ],
  )
  so = gp.ShardOptions(shard_index=1, shard_count=2, drop_remainder=True)
  b = next(iter(P.make_train_loader(cfg, shard_options=so)))
  assert b["x_tgt"].shape == (3, 16, 16, 3)  # 6 global / 2 processes
  with pytest.raises(ValueError, match="not divisible"):
    P.make_train_loader(cfg, shard_options=gp.ShardOptions(0, 4, True))


def test_batch_spec_describes_the_loaders_batches(data_dir, repo_root):
  """training.step.batch_spec (what aot-compile and the train-step benchmark build their
  inputs from) gives the keys, shapes and dtypes of the loader's real batches, region
  boxes included when their loss weights are on (the tokens come from the prompt)."""
  from emotalker_jax.config_utils import load_config
  from emotalker_jax.training.step import TOKEN_KEYS, batch_spec

  cfg = load_config(
    str(repo_root / "configs" / "tiny.py"),
    [
      f"--config.data.dataset={NAME}",
      f"--config.data.data_dir={data_dir}",
      "--config.data.image_size=16",
      "--config.train.batch_size=4",
      "--config.train.mouth_loss_weight=10",
      "--config.train.eyes_loss_weight=2",
    ],
  )
  spec = batch_spec(cfg)
  assert {"mouth_region", "eyes_region"} <= set(spec)
  b = next(iter(P.make_train_loader(cfg, shard_options=gp.NoSharding())))
  for key, want in spec.items():
    if key in TOKEN_KEYS:
      assert want.shape == (4, cfg.text.max_length) and want.dtype == np.int32
      continue
    got = np.asarray(b[key])
    assert got.shape == want.shape and got.dtype == want.dtype, (key, got.shape, got.dtype)
  off = load_config(str(repo_root / "configs" / "tiny.py"), ["--config.train.mouth_loss_weight=0"])
  assert "mouth_region" not in batch_spec(off)


def test_bad_inputs_raise_clear_errors(data_dir, tmp_path):
  with pytest.raises(FileNotFoundError, match="not prepared"):
    P.make_loader(
      "no_such_dataset",
      "train",
      batch_size=2,
      data_dir=str(tmp_path),
      shard_options=gp.NoSharding(),
    )
  with pytest.raises(ValueError, match="no split"):
    loader(data_dir, split="validation")
  with pytest.raises(ValueError, match="mask"):
    loader(data_dir, mask="eyes")


def shouting_prompt(s, rng):
  return f"EMOTION {int(np.argmax(s))}"


def test_injected_prompt_fn(data_dir):
  b = next(iter(loader(data_dir, batch_size=8, prompt_fn=shouting_prompt)))
  assert list(b["prompt"]) == [f"EMOTION {e}" for e in b["emotion"].argmax(1)]
  np.testing.assert_array_equal(b["prompt_emotion"], b["emotion"])


def test_pipeline_bench_command(data_dir, tmp_path, capsys):
  """`emotalker pipeline-bench`: one row per worker count, on stdout and in --json."""
  from emotalker_jax.cli import main

  out = tmp_path / "bench" / "pipeline.json"
  assert (
    main(
      [
        "pipeline-bench",
        "--dataset",
        NAME,
        "--data_dir",
        data_dir,
        "--workers",
        "0",
        "--batch_size",
        "4",
        "--batches",
        "2",
        "--prompt",
        "simple",
        "--json",
        str(out),
      ]
    )
    == 0
  )
  lines = capsys.readouterr().out.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("workers=0: ")
  res = json.loads(out.read_text())
  assert res["dataset"] == NAME and res["prompt_fn"] == "simple_prompt"
  assert [r["workers"] for r in res["results"]] == [0]
  assert res["results"][0]["batch_size"] == 4 and res["results"][0]["examples_per_s"] > 0
  assert main(["pipeline-bench", "--workers", "0,x"]) == 2


def test_prompts_describe_the_emotion():
  rng = np.random.default_rng(0)
  s = np.zeros(8, np.float32)
  s[6], s[4] = 0.3, 0.9
  p = P.simple_prompt(s, rng)
  assert "very fearful" in p and "slightly sad" in p and p.index("fearful") < p.index("sad")
  assert "neutral" in P.simple_prompt(np.eye(8, dtype=np.float32)[0], rng)


def test_real_synthetic_talk_is_compatible(tmp_path):
  """The real synthetic_talk builder (reduced config): references come from the
  identity's flagged neutral reference clip."""
  from input_pipeline import synthetic_talk as st

  cfg = st.make_config(
    "tiny",
    num_identities=2,
    num_train_identities=1,
    frames_per_clip=5,
    num_neutral=2,
    num_mixtures=0,
  )
  b = st.SyntheticTalk(config=cfg, data_dir=str(tmp_path))
  b.download_and_prepare()
  src = b.as_data_source("train")
  recs = [src[i] for i in range(len(src))]
  ref_clips = {int(r["clip_id"]) for r in recs if bool(r["is_neutral_reference"])}
  neutral = {int(r["clip_id"]) for r in recs if r["emotion"][0] > 0 and not r["emotion"][1:].any()}
  assert ref_clips and ref_clips < neutral
  ld = P.make_loader(
    f"synthetic_talk/{cfg.name}",
    "train",
    batch_size=8,
    data_dir=str(tmp_path),
    shard_options=gp.NoSharding(),
    image_size=16,
  )
  for batch in take(iter(ld), 3):
    for cid, rcid in zip(batch["clip_id"].tolist(), batch["ref_clip_id"].tolist()):
      if cid in ref_clips:  # the reference clip itself: another neutral clip
        assert rcid in neutral - {cid}
      else:
        assert rcid in ref_clips
    assert batch["x_tgt"].shape == (8, 16, 16, 3)
    assert np.all((batch["mouth_open"] >= 0) & (batch["mouth_open"] <= 1))
    # The mouth box holds every lip landmark (scaled 32 -> 16 px), lies in the lower half
    # of the face box and is a small part of the face.
    for i, (cid, f) in enumerate(zip(batch["clip_id"].tolist(), batch["frame"].tolist())):
      rec = next(r for r in recs if int(r["clip_id"]) == cid)
      lips = rec["landmarks"][f][48:68] * 0.5
      box = batch["mouth_region"][i]
      assert np.all(
        box[np.clip(lips[:, 1].astype(int), 0, 15), np.clip(lips[:, 0].astype(int), 0, 15)] == 1.0
      )
      lower = P.mask_region(batch["face_mask"][i], "lower_face")
      assert (box * lower).sum() >= 0.6 * box.sum()
      assert 0 < box.sum() < 0.3 * batch["face_mask"][i].sum()
      # The brow/eye box holds those landmarks and lies above the mouth box.
      eyes = rec["landmarks"][f][np.r_[17:27, 36:48]] * 0.5
      ebox = batch["eyes_region"][i]
      assert np.all(
        ebox[np.clip(eyes[:, 1].astype(int), 0, 15), np.clip(eyes[:, 0].astype(int), 0, 15)] == 1.0
      )
      assert np.flatnonzero(ebox.any(1)).max() < np.flatnonzero(box.any(1)).min()


def test_mouth_region_without_landmarks_is_the_lower_face():
  face = np.zeros((16, 16), np.float32)
  face[3:13, 4:12] = 1
  lower = P.mask_region(face, "lower_face")
  np.testing.assert_array_equal(P.mouth_region(face, None), lower)
  np.testing.assert_array_equal(P.mouth_region(face, np.full((68, 2), np.nan)), lower)
  lms = np.zeros((68, 2), np.float32)
  lms[48:68] = [[6.2, 10.0], [9.8, 11.4]] * 10  # x in [6.2, 9.8], y in [10, 11.4]
  box = P.mouth_region(face, lms, pad=1)
  ys, xs = np.nonzero(box)
  assert (xs.min(), xs.max(), ys.min(), ys.max()) == (5, 11, 9, 13)
  # Points at 2x the mask's resolution are scaled first; boxes clip at the border.
  assert np.array_equal(P.mouth_region(face, lms * 2, scale=0.5, pad=1), box)
  edge = P.mouth_region(face, lms + 8, pad=3)
  assert edge[15, 15] == 1 and edge.sum() > 0


def test_eyes_region_is_the_box_of_the_brows_and_eyes():
  face = np.zeros((16, 16), np.float32)
  face[3:13, 4:12] = 1
  # Without landmarks: the face box minus its lower half, so mouth and eyes fall back to
  # complementary halves of the face box.
  upper = P.eyes_region(face, None)
  np.testing.assert_array_equal(upper + P.mask_region(face, "lower_face"), face)
  np.testing.assert_array_equal(P.eyes_region(face, np.full((68, 2), np.nan)), upper)
  lms = np.zeros((68, 2), np.float32)
  lms[17:27] = [5.5, 4.2]  # brows: one point at (5.5, 4.2) ...
  lms[21] = [10.2, 4.9]  # ... and one at (10.2, 4.9)
  lms[36:48] = [7.0, 6.6]  # eyes; the jaw and mouth points are far off
  lms[48:68] = [8.0, 11.0]
  ys, xs = np.nonzero(P.eyes_region(face, lms))
  assert (xs.min(), xs.max(), ys.min(), ys.max()) == (5, 11, 4, 7)
  assert np.array_equal(P.eyes_region(face, lms * 2, scale=0.5), P.eyes_region(face, lms))
  assert not (P.eyes_region(face, lms) * P.mouth_region(face, lms)).any()
