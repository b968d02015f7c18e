"""MEAD / CREMA-D TFDS builders (frame-level records), video decoding, lengths and labels.

The builders read small trees in each dataset's own layout made from the real test photos
with synthetic head motion (``input_pipeline.photo_trees``: mp4 + AAC m4a for MEAD, flv +
wav for CREMA-D, 12-15 frames per clip, 64x64 crops). Each test holds the records to an
independent recomputation: the frames are the stored JPEGs decoded, the landmarks lie
where dlib finds them again on the stored frame, the audio slices are the source audio
decoded again, the length report names exactly the clips whose audio was cut, and the
grain loader's target / reference / audio window agree with the records.
"""

import json
import os

import cv2
import grain.python as gp
import numpy as np
import pytest

from emotalker_jax.audio import load_audio
from emotalker_jax.faces import align, detect
from emotalker_jax.faces import landmarks as L
from input_pipeline import crema_d, frame_records, labels, mead, video_io
from input_pipeline import photo_trees as PT
from input_pipeline import pipeline as P

H, W = 180, 240  # the cartoon frames of the decoding and legacy Haar tests
SIZE = 64
SPF = 640  # audio samples per frame (16 kHz, 25 fps)

# (actor, emotion, level, clip) -> PhotoClip; the cut / stretched audio drives the length
# report: -3 and +3.5 frames are trimmed / padded, -9 is skipped; the cat has no face.
MEAD_PLAN = {
  ("M005", "neutral", 1, 1): PT.PhotoClip("obama.jpg", 12, seed=1),
  ("M005", "happy", 3, 1): PT.PhotoClip("obama.jpg", 12, seed=2),
  ("M005", "angry", 2, 2): PT.PhotoClip("obama.jpg", 12, audio_frames=9, seed=3),
  ("M005", "fear", 2, 1): PT.PhotoClip("obama.jpg", 12, audio_frames=15.5, seed=4),
  ("M005", "sad", 1, 1): PT.PhotoClip("obama.jpg", 12, audio_frames=3, seed=5),
  ("M007", "neutral", 1, 1): PT.PhotoClip(PT.NO_FACE_PHOTO, 10, seed=6),
  ("W009", "neutral", 1, 1): PT.PhotoClip("astronaut.png", 13, seed=7),
  ("W009", "sad", 1, 3): PT.PhotoClip("astronaut.png", 12, seed=8),
}
SKIPPED = {"M005/video/front/sad/level_1/001.mp4"}  # audio 9 frames short
NO_FACE = {"M007/video/front/neutral/level_1/001.mp4"}


def rel(actor, emo, lvl, clip):
  return f"{actor}/video/front/{emo}/level_{lvl}/{clip:03d}.mp4"


KEPT = {rel(*k): v for k, v in MEAD_PLAN.items() if rel(*k) not in SKIPPED | NO_FACE}


@pytest.fixture(scope="module")
def mead_root(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("MEAD"))
  PT.write_mead_tree(root, MEAD_PLAN, side=192)
  # a video without its audio, another camera and a stray file: ignored
  frames = PT.head_motion(PT.face_square(PT.read_photo("obama.jpg"), 192), 5)
  video_io.write_video(f"{root}/M005/video/front/happy/level_3/009.mp4", frames)
  os.makedirs(f"{root}/M005/video/left_30/happy/level_3")
  video_io.write_video(f"{root}/M005/video/left_30/happy/level_3/001.mp4", frames)
  open(f"{root}/README.txt", "w").close()
  return root


@pytest.fixture(scope="module")
def mead_built(mead_root, tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp("tfds_mead"))
  b = mead.build(mead_root, data_dir, image_size=SIZE)
  return b, data_dir


def all_records(builder, split):
  src = builder.as_data_source(split)
  return [src[i] for i in range(len(src))]


def source_audio(root, source, t):
  """The clip's audio decoded again from its file, fitted to t frames (what the records
  must hold)."""
  if source.startswith("VideoFlash/"):
    path = os.path.join(root, "AudioWAV", os.path.basename(source)[:-4] + ".wav")
  else:
    actor, _, _, emo, lvl, name = source.split("/")
    path = os.path.join(root, actor, "audio", emo, lvl, name[:-4] + ".m4a")
  return video_io.fit_audio(load_audio(path), t)


def refound_error(frame, points, k=3):
  """Mean distance between the stored landmarks and dlib's on the stored frame (upscaled
  k times so the detector sees the face), over the inter-ocular distance."""
  big = cv2.resize(frame, None, fx=k, fy=k, interpolation=cv2.INTER_CUBIC)
  faces = detect.detect_faces(big)
  assert faces, "dlib finds no face on a stored frame"
  found = L.find_landmarks(big, faces[0].box)
  want = points * k + (k - 1) / 2  # pixel centres under a k-times resize
  return float(np.linalg.norm(found - want, axis=-1).mean() / L.inter_ocular(want))


def test_mead_builds_frame_records(mead_built, mead_root):
  b, _ = mead_built
  assert set(b.info.splits) == {"train", "test"}
  recs = {s: all_records(b, s) for s in ("train", "test")}
  # one record per kept frame; M005 in train, W009 (a test actor) in test
  for split, actor in (("train", "M005"), ("test", "W009")):
    want = {s: c.frames for s, c in KEPT.items() if s.startswith(actor)}
    assert len(recs[split]) == sum(want.values())
    assert {r["source"].decode() for r in recs[split]} == set(want)
  errors = []
  for r in recs["train"] + recs["test"]:
    source, f, t = r["source"].decode(), int(r["frame"]), int(r["num_frames"])
    actor, _, _, emo, lvl, name = source.split("/")
    assert t == KEPT[source].frames and 0 <= f < t
    assert int(r["clip_id"]) == labels.mead_clip_id(actor, emo, int(lvl[-1]), int(name[:3]))
    np.testing.assert_array_equal(r["emotion"], labels.mead_emotion_vector(emo, lvl))
    assert int(r["identity"]) == labels.mead_identity(actor)
    assert bool(r["is_neutral_reference"]) == (emo == "neutral")
    assert r["actor"].decode() == actor and r["level"].decode() == lvl
    image = frame_records.decode_frame(r["image"])
    assert image.shape == (SIZE, SIZE, 3)
    # the audio slice is the source audio's [offset, offset + n), and n covers the window
    whole = source_audio(mead_root, source, t)
    lo, n = int(r["audio_offset"]), len(r["audio"])
    assert int(r["num_samples"]) == t * SPF
    np.testing.assert_array_equal(r["audio"], whole[lo : lo + n])
    assert (lo, lo + n) == P.MelWindow().sample_range(f, t, t * SPF)
    # the face is in the canonical place: eyes near row 0.47 S, mouth near 0.74 S
    eyes = np.mean(L.eye_centres(r["landmarks"]), axis=0)
    assert abs(eyes[1] / SIZE - 0.47) < 0.06 and abs(eyes[0] / SIZE - 0.5) < 0.08
    if f % 4 == 0:
      errors.append(refound_error(image, r["landmarks"]))
  # landmarks re-found on the stored frames: within a few % of the inter-ocular distance
  assert len(errors) >= 15 and max(errors) < 0.05, errors
  # records are in (clip, frame) order and the side file says where each clip starts
  table = frame_records.load_index(str(b.data_dir), "train")
  for c, first in enumerate(table["first_record"]):
    for f in range(table["num_frames"][c]):
      r = recs["train"][first + f]
      assert (int(r["clip_id"]), int(r["frame"])) == (table["clip_id"][c], f)


def test_one_alignment_per_clip_keeps_the_head_motion(mead_built, mead_root):
  """Every frame of a clip shares one crop (one matrix): each stored frame is its source
  frame warped by that matrix, and the synthetic head motion stays visible (the
  landmarks move inside the crop)."""
  b, _ = mead_built
  source = rel("M005", "happy", 3, 1)
  recs = [r for r in all_records(b, "train") if r["source"].decode() == source]
  mats = np.stack([r["matrix"] for r in recs])
  np.testing.assert_array_equal(mats, np.broadcast_to(mats[0], mats.shape))
  video = video_io.read_video(os.path.join(mead_root, source))

  def psnr(a, b):
    return 10 * np.log10(255**2 / np.mean((a.astype(float) - b) ** 2))

  shifted = mats[0].astype(np.float64) + [[0, 0, 1.5], [0, 0, 0]]
  for r in recs[::4]:
    stored, src = frame_records.decode_frame(r["image"]), video[int(r["frame"])]
    good = psnr(stored, align.warp_to_crop(src, mats[0].astype(np.float64), SIZE))
    assert good > 30  # equal up to JPEG's error at 64 x 64 ...
    assert good > psnr(stored, align.warp_to_crop(src, shifted, SIZE)) + 4  # ... and no other
  nose = np.stack([r["landmarks"][30] for r in recs])
  assert 0.5 < np.ptp(nose, axis=0).max() < 0.2 * SIZE  # moves, but stays in the crop


def test_length_mismatch_is_reported_and_far_off_clips_skipped(mead_built, caplog):
  b, data_dir = mead_built
  meta = json.loads(open(os.path.join(b.data_dir, "metadata.json")).read())
  rep = meta["av_length"]["train"]
  assert rep["skipped_sources"] == sorted(SKIPPED) and rep["no_face_sources"] == sorted(NO_FACE)
  assert (rep["clips_checked"], rep["within_one_frame"], rep["fitted"], rep["skipped"]) == (
    5,
    2,
    2,
    1,
  )
  assert (rep["audio_shorter"], rep["audio_longer"]) == (2, 1)
  assert rep["max_abs_diff_frames"] == pytest.approx(9.0, abs=0.1)
  worst = {w["source"]: w for w in rep["worst"]}
  assert worst[rel("M005", "angry", 2, 2)]["diff_frames"] == pytest.approx(-3.0, abs=0.1)
  assert worst[rel("M005", "fear", 2, 1)]["diff_frames"] == pytest.approx(3.5, abs=0.1)
  assert worst[rel("M005", "sad", 1, 1)]["status"] == "skipped"
  assert meta["av_length"]["test"]["within_one_frame"] == 2
  # the fitted clip with short audio keeps its 12 frames; the tail past its audio is silence
  clip = next(
    c
    for c in frame_records.read_clips(b.name + "/" + b.builder_config.name, "train", data_dir)
    if c["source"] == rel("M005", "angry", 2, 2)
  )
  assert clip["frames"].shape[0] == 12 and np.all(clip["audio"][9 * SPF + 1024 :] == 0)
  assert np.abs(clip["audio"][: 8 * SPF]).max() > 0.05


def test_length_check_on_a_truncated_build_counts_the_whole_video(mead_root, tmp_path):
  """max_frames cuts the decode, not the check: the clip with 9 frames of audio is still
  3 frames short of its 12-frame video; only the first frames are stored."""
  b = mead.build(mead_root, str(tmp_path), image_size=32, max_clips=2, max_frames=6)
  rep = json.loads(open(os.path.join(b.data_dir, "metadata.json")).read())["av_length"]
  recs = all_records(b, "train")
  assert len(recs) == 12 and {int(r["num_frames"]) for r in recs} == {6}
  assert {r["source"].decode() for r in recs} == {
    rel("M005", "angry", 2, 2),
    rel("M005", "fear", 2, 1),
  }
  assert {w["source"]: w["diff_frames"] for w in rep["train"]["worst"]} == pytest.approx(
    {rel("M005", "angry", 2, 2): -3.0, rel("M005", "fear", 2, 1): 3.5}, abs=0.1
  )
  assert frame_records.decode_frame(recs[0]["image"]).shape == (32, 32, 3)
  b2 = mead.build(mead_root, str(tmp_path), image_size=32, max_frames=4, actors=["W009"])
  assert set(b2.info.splits) == {"test"}
  # a looser limit keeps the clip with 9 frames of audio missing
  b3 = mead.build(
    mead_root,
    str(tmp_path),
    image_size=16,
    max_frames=4,
    actors=["M005"],
    options={"max_av_mismatch_frames": 10},
  )
  assert b3.builder_config.name == "res16_frames4_M005_max_av_mismatch_frames10"
  rep = json.loads(open(os.path.join(b3.data_dir, "metadata.json")).read())["av_length"]
  assert rep["train"]["skipped"] == 0 and rep["train"]["fitted"] == 3
  assert rel("M005", "sad", 1, 1) in {r["source"].decode() for r in all_records(b3, "train")}
  with pytest.raises(ValueError, match="unknown build options"):
    mead.build(mead_root, str(tmp_path), image_size=16, options={"max_frame": 3})


def test_pipeline_reads_frame_records(mead_built, mead_root):
  """A grain batch: target and reference frames are the stored JPEGs decoded, the face
  mask is the hull of the stored landmarks, the audio window equals MelWindow on the whole
  source clip, references follow choose_reference (neutral clip of the identity)."""
  b, data_dir = mead_built
  name = f"mead/{b.builder_config.name}"
  clips = {
    c["clip_id"]: c for s in ("train", "test") for c in frame_records.read_clips(name, s, data_dir)
  }
  mel = P.MelWindow()
  for split in ("train", "test"):
    ld = P.make_loader(
      name,
      split,
      batch_size=8,
      data_dir=data_dir,
      shard_options=gp.NoSharding(),
      prompt_fn=P.simple_prompt,
      seed=3,
    )
    for batch in [next(iter(ld))]:
      for i in range(8):
        c, f = clips[int(batch["clip_id"][i])], int(batch["frame"][i])
        rc, rf = clips[int(batch["ref_clip_id"][i])], int(batch["ref_frame"][i])
        np.testing.assert_array_equal(batch["x_tgt"][i], P.to_float_image(c["frames"][f]))
        np.testing.assert_array_equal(batch["x_ref"][i], P.to_float_image(rc["frames"][rf]))
        assert rc["identity"] == c["identity"] == int(batch["identity"][i])
        if not c["is_neutral_reference"]:
          assert rc["is_neutral_reference"]  # rule 1: the identity's neutral clip
        else:  # the neutral clip itself: no other neutral clip, so >= 60 frames away or
          assert (rc["clip_id"], rf) != (c["clip_id"], f)  # another clip / far frame
        hull = align.face_hull_mask(c["landmarks"][f], SIZE)
        np.testing.assert_array_equal(batch["face_mask"][i], hull.astype(np.float32))
        t = c["frames"].shape[0]
        whole = source_audio(mead_root, c["source"], t)
        np.testing.assert_allclose(batch["audio_mel"][i], mel(whole, f, t), rtol=1e-5, atol=1e-5)
        assert np.all(batch["x_mask"][i][hull > 0] == 0.0)
        lips = c["landmarks"][f][48:68].astype(int)
        assert np.all(batch["mouth_region"][i][lips[:, 1], lips[:, 0]] == 1.0)
        assert batch["mouth_open"][i] == -1.0  # unknown on real data
  with pytest.raises(ValueError, match="audio_window_s"):
    P.make_loader(
      name, "train", batch_size=2, data_dir=data_dir, window_s=0.4, shard_options=gp.NoSharding()
    )
  with pytest.raises(ValueError, match="sample_rate"):
    P.make_loader(
      name,
      "train",
      batch_size=2,
      data_dir=data_dir,
      sample_rate=22050,
      shard_options=gp.NoSharding(),
    )


def test_frame_records_in_grain_worker_processes(mead_built):
  """Frame sources pickle into grain workers: one worker gives the same examples as
  loading in this process."""
  b, data_dir = mead_built

  def examples(workers):
    ld = P.make_loader(
      f"mead/{b.builder_config.name}",
      "train",
      batch_size=4,
      data_dir=data_dir,
      seed=9,
      shard_options=gp.NoSharding(),
      prompt_fn=P.simple_prompt,
      worker_count=workers,
    )
    it = iter(ld)
    out = {}
    for batch in (next(it), next(it)):
      for i in range(4):
        out[(int(batch["clip_id"][i]), int(batch["frame"][i]))] = {
          k: v[i] for k, v in batch.items()
        }
    return out

  here, there = examples(0), examples(1)
  assert here.keys() == there.keys() and len(here) == 8
  for key in here:
    for k in here[key]:
      np.testing.assert_array_equal(here[key][k], there[key][k], err_msg=str((key, k)))


def test_read_clips_round_trip(mead_built, mead_root):
  b, data_dir = mead_built
  name = f"mead/{b.builder_config.name}"
  recs = all_records(b, "test")
  got = list(frame_records.read_clips("mead", "test", data_dir))  # one config prepared
  assert [c["source"] for c in got] == [rel("W009", "neutral", 1, 1), rel("W009", "sad", 1, 3)]
  for c in got:
    own = [r for r in recs if int(r["clip_id"]) == c["clip_id"]]
    t = len(own)
    assert c["frames"].shape == (t, SIZE, SIZE, 3) and c["frames"].dtype == np.uint8
    for f, r in enumerate(sorted(own, key=lambda r: int(r["frame"]))):
      np.testing.assert_array_equal(c["frames"][f], frame_records.decode_frame(r["image"]))
      np.testing.assert_array_equal(c["landmarks"][f], r["landmarks"])
    np.testing.assert_array_equal(c["audio"], source_audio(mead_root, c["source"], t))
    assert c["audio"].dtype == np.float32 and c["audio"].shape == (t * SPF,)
    assert (c["sample_rate"], c["fps"], c["actor"], c["identity"]) == (16000, 25.0, "W009", 1009)
    assert c["is_neutral_reference"] == ("neutral" in c["source"])
    np.testing.assert_array_equal(c["emotion"], own[0]["emotion"])
  assert len(list(frame_records.read_clips(name, "train", data_dir, max_clips=2))) == 2


def test_mead_manual_dir_errors(mead_root, tmp_path, monkeypatch):
  with pytest.raises(FileNotFoundError, match="(?s)does not exist.*Expected layout") as e:
    mead.scan_manual_dir(str(tmp_path / "nope"))
  assert "video/front/angry/level_1/001.mp4" in str(e.value)
  with pytest.raises(FileNotFoundError, match="no actor folders"):
    mead.scan_manual_dir(str(tmp_path))
  os.makedirs(tmp_path / "M001" / "video" / "front" / "happy" / "level_1")
  open(tmp_path / "M001" / "video" / "front" / "happy" / "level_1" / "001.mp4", "w").close()
  with pytest.raises(FileNotFoundError, match=r"(?s)no clip with both.*without their \.m4a"):
    mead.scan_manual_dir(str(tmp_path))
  with pytest.raises(FileNotFoundError, match="M999"):
    mead.scan_manual_dir(mead_root, actors=["M999"])

  # the builder checks before any decoding: a bad tree fails with a decoder that would
  # crash on first use
  def boom(*a, **k):
    raise AssertionError("decoding started")

  monkeypatch.setattr(video_io, "read_video", boom)
  with pytest.raises(FileNotFoundError, match="Expected layout"):
    mead.build(str(tmp_path / "nope"), str(tmp_path / "d"), image_size=16)


CREMA_PLAN = {  # 30 fps sources: 15 frames -> 12.5 -> 12 or 13 frames at 25 fps
  "1001_DFA_NEU_XX": PT.PhotoClip("obama2.jpg", 12, seed=11),
  "1001_IEO_HAP_HI": PT.PhotoClip("obama2.jpg", 15, seed=12, fps=30.0),
  "1085_DFA_SAD_LO": PT.PhotoClip("biden.jpg", 12, seed=13),
  "1085_TIE_NEU_XX": PT.PhotoClip("biden.jpg", 14, seed=14),
}


@pytest.fixture(scope="module")
def crema_built(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("CREMA-D"))
  PT.write_crema_tree(root, CREMA_PLAN, side=192)
  frames = PT.head_motion(PT.face_square(PT.read_photo("biden.jpg"), 192), 5)
  video_io.write_video(f"{root}/VideoFlash/1001_TIE_ANG_MD.flv", frames)  # no wav
  video_io.write_video(f"{root}/VideoFlash/not_a_crema_name.flv", frames)
  data_dir = str(tmp_path_factory.mktemp("tfds_crema"))
  return crema_d.build(root, data_dir, image_size=SIZE), root, data_dir


def test_crema_builds_frame_records(crema_built):
  b, root, _ = crema_built
  assert b.name == "crema_d" and set(b.info.splits) == {"train", "test"}
  got = all_records(b, "train") + all_records(b, "test")
  by_clip = {}
  for r in got:
    by_clip.setdefault(r["source"].decode(), []).append(r)
  assert sorted(by_clip) == sorted(f"VideoFlash/{s}.flv" for s in CREMA_PLAN)
  for stem, clip in CREMA_PLAN.items():
    rs = by_clip[f"VideoFlash/{stem}.flv"]
    p = labels.parse_crema_stem(stem)
    t = round(clip.frames / clip.fps * 25)
    assert abs(len(rs) - t) <= 1 and {int(r["num_frames"]) for r in rs} == {len(rs)}
    whole = source_audio(root, f"VideoFlash/{stem}.flv", len(rs))
    for r in rs:
      lo = int(r["audio_offset"])
      np.testing.assert_array_equal(r["audio"], whole[lo : lo + len(r["audio"])])  # the wav
      np.testing.assert_array_equal(
        r["emotion"], labels.crema_emotion_vector(p["code"], p["level"])
      )
      assert int(r["identity"]) == p["actor"] and r["actor"].decode() == str(p["actor"])
      assert r["sentence"].decode() == p["sentence"] and r["level"].decode() == p["level"]
      assert int(r["clip_id"]) == labels.crema_clip_id(stem)
      assert bool(r["is_neutral_reference"]) == (p["code"] == "NEU")
    errs = [refound_error(frame_records.decode_frame(r["image"]), r["landmarks"]) for r in rs[::3]]
    # FLV1 (Sorenson) at 192 px is coarser than MEAD's H.264: a few % of the eye distance
    assert np.mean(errs) < 0.05 and max(errs) < 0.08, errs
  assert {int(r["identity"]) for r in all_records(b, "test")} == {1085}
  rep = json.loads(open(os.path.join(b.data_dir, "metadata.json")).read())["av_length"]
  assert rep["train"]["within_one_frame"] == 2 and rep["test"]["within_one_frame"] == 2


def test_prepare_command_builds_the_datasets(mead_root, crema_built, tmp_path, capsys):
  """`emotalker prepare mead|crema_d`: its flags reach the builder (size, clip and frame
  limits, actors); a bad manual dir or actor list is one error line."""
  from emotalker_jax.cli import main

  data_dir = str(tmp_path / "m")
  args = ["prepare", "mead", "--manual_dir", mead_root, "--data_dir", data_dir]
  assert main(args + ["--image_size", "16", "--max_clips", "1", "--max_frames", "8"]) == 0
  cfg = mead.make_config(16, 1, 8, None)
  b = mead.Mead(config=cfg, data_dir=data_dir)
  last = capsys.readouterr().out.strip().splitlines()[-1]  # TFDS prints its progress first
  assert last == f"built mead/{cfg.name} in {b.data_dir}: train=8, test=8"  # records = frames
  for r in all_records(b, "train") + all_records(b, "test"):
    assert frame_records.decode_frame(r["image"]).shape == (16, 16, 3)
  _, root, _ = crema_built
  args = ["prepare", "crema_d", "--manual_dir", root, "--data_dir", str(tmp_path / "c")]
  assert main(args + ["--image_size", "16", "--actors", "1001", "--max_frames", "5"]) == 0
  assert capsys.readouterr().out.strip().splitlines()[-1].endswith(": train=10")
  assert main(["prepare", "crema_d", "--manual_dir", root, "--actors", "M005"]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("emotalker prepare: error:") and "actors" in err[0]
  assert main(["prepare", "mead", "--manual_dir", str(tmp_path / "nope")]) == 2
  err = capsys.readouterr().err
  assert err.startswith("emotalker prepare: error:") and "Expected layout" in err


def test_crema_manual_dir_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="(?s)does not exist.*VideoFlash/1001_DFA_ANG_XX.flv"):
    crema_d.scan_manual_dir(str(tmp_path / "nope"))
  os.makedirs(tmp_path / "VideoFlash")
  with pytest.raises(FileNotFoundError, match="(?s)no AudioWAV/ folder.*Expected layout"):
    crema_d.scan_manual_dir(str(tmp_path))
  os.makedirs(tmp_path / "AudioWAV")
  (tmp_path / "VideoFlash" / "1001_DFA_ANG_XX.flv").write_bytes(b"x" * 2000)
  with pytest.raises(FileNotFoundError, match=r"(?s)no clip with both.*lack their \.wav"):
    crema_d.scan_manual_dir(str(tmp_path))
  (tmp_path / "VideoFlash" / "1001_DFA_ANG_XX.flv").write_text(
    "version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 1\n"
  )
  (tmp_path / "AudioWAV" / "1001_DFA_ANG_XX.wav").write_bytes(b"x")
  with pytest.raises(FileNotFoundError, match="git lfs pull"):
    crema_d.scan_manual_dir(str(tmp_path))


# ---- video_io ---------------------------------------------------------------------------
def draw_face(cx, cy, s=0.6, bg=(100, 120, 140)):
  """An RGB (H, W, 3) uint8 cartoon face centred at (cx, cy); s scales it (face ~84x114 px)."""
  img = np.full((H, W, 3), bg, np.uint8)
  cv2.ellipse(img, (cx, cy), (int(70 * s), int(95 * s)), 0, 0, 360, (220, 180, 150), -1)
  cv2.ellipse(
    img, (cx, cy - int(60 * s)), (int(75 * s), int(45 * s)), 0, 180, 360, (60, 40, 30), -1
  )
  for dx in (-1, 1):
    ex, ey = cx + dx * int(28 * s), cy - int(15 * s)
    cv2.ellipse(img, (ex, ey), (int(15 * s), int(8 * s)), 0, 0, 360, (245, 245, 245), -1)
    cv2.circle(img, (ex, ey), int(6 * s), (20, 30, 40), -1)
    cv2.line(
      img,
      (ex - int(16 * s), ey - int(16 * s)),
      (ex + int(16 * s), ey - int(18 * s)),
      (70, 50, 40),
      max(1, int(5 * s)),
    )
  pts = np.array(
    [
      [cx, cy - int(5 * s)],
      [cx - int(10 * s), cy + int(25 * s)],
      [cx + int(10 * s), cy + int(25 * s)],
    ]
  )
  cv2.fillPoly(img, [pts], (195, 150, 120))
  cv2.ellipse(img, (cx, cy + int(50 * s)), (int(25 * s), int(8 * s)), 0, 0, 360, (150, 60, 60), -1)
  return cv2.GaussianBlur(img, (0, 0), 1.2)


def face_video(n, x0=100):
  return np.stack([draw_face(x0 + i, H // 2 + (i % 3)) for i in range(n)])


def write_video(path, frames, fps):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  video_io.write_video(path, frames, fps=fps)


def test_read_video_resamples_to_25_fps(tmp_path):
  frames = face_video(30)
  frames[:, :8, :8] = (np.arange(30) * 8)[:, None, None, None]  # frame-number marker
  write_video(str(tmp_path / "a.mp4"), frames, 30)
  v = video_io.read_video(str(tmp_path / "a.mp4"))
  assert v.shape == (25, H, W, 3)
  marker = v[:, 2, 2, 0].astype(int)
  src = np.round(marker / 8).astype(int)  # which source frame each one shows
  assert np.all(np.diff(src) >= 1) and src[0] == 0 and src[-1] >= 28
  assert video_io.read_video(str(tmp_path / "a.mp4"), max_side=120).shape == (25, 90, 120, 3)
  assert video_io.read_video(str(tmp_path / "a.mp4"), max_frames=7).shape[0] == 7
  assert video_io.count_frames(str(tmp_path / "a.mp4")) == 25  # without decoding to RGB
  with pytest.raises(FileNotFoundError):
    video_io.read_video(str(tmp_path / "missing.mp4"))
  (tmp_path / "bad.mp4").write_bytes(b"not a video")
  with pytest.raises(ValueError, match="cannot decode video"):
    video_io.read_video(str(tmp_path / "bad.mp4"))


def test_labels():
  np.testing.assert_allclose(
    labels.mead_emotion_vector("happy", "level_2"), np.eye(8)[5] * 2 / 3, rtol=1e-6
  )
  np.testing.assert_allclose(
    labels.mead_emotion_vector("surprised", 1), np.eye(8)[7] / 3, rtol=1e-6
  )
  np.testing.assert_array_equal(labels.mead_emotion_vector("neutral", 1), np.eye(8)[0])
  assert [
    float(labels.crema_emotion_vector("FEA", lv)[4]) for lv in ("LO", "MD", "HI", "XX")
  ] == pytest.approx([1 / 3, 2 / 3, 1.0, 2 / 3])
  for code, name in labels.CREMA_EMOTIONS.items():
    assert labels.crema_emotion_vector(code, "HI").argmax() == labels.EMOTION_INDEX[name]
  assert labels.mead_identity("M003") == 3 and labels.mead_identity("W009") == 1009
  assert [labels.mead_split(a) for a in ("M003", "M030", "W009", "W015", "M005", "W040")] == [
    "test"
  ] * 4 + ["train"] * 2
  assert labels.crema_split(1081) == "train" and labels.crema_split(1082) == "test"
  assert len(set(labels.CREMA_ACTORS)) == 91
  ids = {
    labels.mead_clip_id(a, e, lv, c)
    for a in ("M003", "W003")
    for e in labels.EMOTIONS
    for lv in (1, 2, 3)
    for c in (1, 2, 30)
  }
  assert len(ids) == 2 * 8 * 3 * 3
  stems = [
    f"{a}_{s}_{e}_{lv}"
    for a in (1001, 1091)
    for s in labels.CREMA_SENTENCES
    for e in labels.CREMA_EMOTIONS
    for lv in labels.CREMA_LEVELS
  ]
  assert len({labels.crema_clip_id(s) for s in stems}) == len(stems)
  assert labels.is_neutral(labels.crema_emotion_vector("NEU", "XX"))
  assert not labels.is_neutral(labels.crema_emotion_vector("SAD", "XX"))
  for bad in (
    lambda: labels.mead_emotion_vector("joy", 1),
    lambda: labels.mead_emotion_vector("sad", 4),
    lambda: labels.parse_crema_stem("1001_DFA_XYZ_XX"),
    lambda: labels.parse_crema_stem("1001-DFA-ANG-XX"),
    lambda: labels.mead_identity("X01"),
  ):
    with pytest.raises(ValueError):
      bad()
