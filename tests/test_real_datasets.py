"""MEAD / CREMA-D TFDS builders, video decoding, face crops and labels.

The test writes tiny fake trees in each dataset's own layout: videos of a drawn face
(which OpenCV's Haar cascade detects) moving 1 px per source frame, written as mp4 / flv
at 30 or 25 fps, and sine tones written as m4a (AAC, 44.1 kHz) / wav (16-bit, 16 kHz).
The builders must read back the right number of 25 fps frames, the labels, the audio
(length T * 640 at 16 kHz, the tone's frequency; the wav exactly) and a face track that
follows the face.
"""

import os
import subprocess

import cv2
import grain.python as gp
import numpy as np
import pytest
from scipy.io import wavfile

from emotalker_jax.audio import ffmpeg_exe
from input_pipeline import crema_d, labels, mead, video_io
from input_pipeline import pipeline as P

H, W = 180, 240
SIZE = 32


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


def tone(seconds, freq, sr, amp=0.4):
  t = np.arange(int(round(seconds * sr))) / sr
  return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_wav(path, x, sr):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  wavfile.write(path, sr, np.round(x * 32767).astype(np.int16))


def write_m4a(path, x, sr):
  wav = path + ".tmp.wav"
  write_wav(wav, x, sr)
  subprocess.run(
    [
      ffmpeg_exe(),
      "-nostdin",
      "-loglevel",
      "error",
      "-y",
      "-i",
      wav,
      "-c:a",
      "aac",
      "-b:a",
      "128k",
      path,
    ],
    check=True,
  )
  os.remove(wav)


def write_video(path, frames, fps):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  video_io.write_video(path, frames, fps=fps)


def dominant_hz(x, sr=16000):
  spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
  return np.argmax(spec) * sr / len(x)


# (actor, emotion, level, clip, source frames, fps, tone Hz)
MEAD_CLIPS = [
  ("M005", "neutral", 1, 1, 30, 30, 300.0),
  ("M005", "happy", 3, 1, 20, 25, 440.0),
  ("M005", "angry", 2, 2, 30, 30, 550.0),
  ("W009", "neutral", 1, 1, 25, 25, 350.0),
  ("W009", "sad", 1, 3, 30, 30, 600.0),
]
MEAD_T = {30: 25, 20: 20, 25: 25}  # source frames (at their fps) -> frames at 25 fps


@pytest.fixture(scope="module")
def mead_root(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("MEAD"))
  for actor, emo, lvl, clip, n, fps, hz in MEAD_CLIPS:
    write_video(f"{root}/{actor}/video/front/{emo}/level_{lvl}/{clip:03d}.mp4", face_video(n), fps)
    write_m4a(
      f"{root}/{actor}/audio/{emo}/level_{lvl}/{clip:03d}.m4a", tone(n / fps, hz, 44100), 44100
    )
  # a video without its audio, another camera and a stray file: ignored
  write_video(f"{root}/M005/video/front/happy/level_3/009.mp4", face_video(5), 25)
  write_video(f"{root}/M005/video/left_30/happy/level_3/001.mp4", face_video(5), 25)
  open(f"{root}/README.txt", "w").close()
  return root


@pytest.fixture(scope="module")
def mead_built(mead_root, tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp("tfds_mead"))
  b = mead.build(mead_root, data_dir, image_size=SIZE)
  return b, data_dir


def records(builder, split):
  src = builder.as_data_source(split)
  return sorted((src[i] for i in range(len(src))), key=lambda r: int(r["clip_id"]))


def test_mead_builds_and_reads_back(mead_built):
  b, _ = mead_built
  assert set(b.info.splits) == {"train", "test"}
  got = {"train": records(b, "train"), "test": records(b, "test")}
  assert [r["actor"].decode() for r in got["train"]] == ["M005"] * 3  # 009 (no audio) skipped
  assert [r["actor"].decode() for r in got["test"]] == ["W009"] * 2  # W009 is a test actor
  for actor, emo, lvl, clip, n, fps, hz in MEAD_CLIPS:
    split = labels.mead_split(actor)
    cid = labels.mead_clip_id(actor, emo, lvl, clip)
    r = [r for r in got[split] if int(r["clip_id"]) == cid][0]
    t = MEAD_T[n]
    assert r["frames"].shape == (t, SIZE, SIZE, 3) and r["face_mask"].shape == (t, SIZE, SIZE)
    assert r["audio"].shape == (t * 640,)
    assert abs(dominant_hz(r["audio"]) - hz) < 10  # the clip's own audio, resampled
    assert 0.2 < np.sqrt(np.mean(r["audio"][640:-640] ** 2)) / (0.4 / np.sqrt(2)) < 1.2
    expect = np.zeros(8, np.float32)
    expect[labels.EMOTION_INDEX[emo]] = 1.0 if emo == "neutral" else lvl / 3
    np.testing.assert_allclose(r["emotion"], expect, rtol=1e-6)
    assert int(r["identity"]) == labels.mead_identity(actor)
    assert bool(r["is_neutral_reference"]) == (emo == "neutral")
    assert r["level"].decode() == f"level_{lvl}"
    assert r["source"].decode() == f"{actor}/video/front/{emo}/level_{lvl}/{clip:03d}.mp4"
    # the face track follows the face (1 px right per source frame) and the crop is on it
    cx = (r["crop_box"][:, 0] + r["crop_box"][:, 2]) / 2
    speed = 30.0 / 25.0 if fps == 30 else 1.0  # source px per output frame
    slope = np.polyfit(np.arange(t), cx, 1)[0]
    assert abs(slope - speed) < 0.35, (slope, speed)
    assert abs(cx[0] - 100) < 10
    centre = r["frames"][:, SIZE // 2 - 2 : SIZE // 2 + 2, SIZE // 2 - 2 : SIZE // 2 + 2]
    assert np.abs(centre.reshape(-1, 3).mean(0) - [220, 180, 150]).max() < 40  # skin
    assert r["face_mask"][:, SIZE // 2, SIZE // 2].all()
    assert 0.15 < r["face_mask"].mean() < 0.6
    assert not r["face_mask"][:, 0, 0].any()


def test_mead_subset_options(mead_root, tmp_path):
  b = mead.build(mead_root, str(tmp_path), image_size=16, max_clips=2, max_frames=10)
  train, test = records(b, "train"), records(b, "test")
  assert len(train) == 2 and len(test) == 2
  # round-robin over (actor, emotion, level): two different emotions, not two clips of one
  assert len({tuple(r["emotion"]) for r in train}) == 2
  for r in train + test:
    assert r["frames"].shape == (10, 16, 16, 3) and r["audio"].shape == (6400,)
  b2 = mead.build(mead_root, str(tmp_path), image_size=16, actors=["M005"])
  assert set(b2.info.splits) == {"train"}


def test_mead_manual_dir_errors(mead_root, tmp_path):
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

  # the builder checks before any decoding: a bad tree fails even with a detector that
  # would crash on first use
  def boom(frame):
    raise AssertionError("decoding started")

  with pytest.raises(FileNotFoundError, match="Expected layout"):
    mead.build(str(tmp_path / "nope"), str(tmp_path / "d"), image_size=16, detector=boom)


CREMA_CLIPS = [
  ("1001_DFA_NEU_XX", 30, 30),
  ("1001_IEO_HAP_HI", 24, 30),
  ("1085_DFA_SAD_LO", 30, 30),
  ("1085_TIE_NEU_XX", 25, 25),
]


@pytest.fixture(scope="module")
def crema_built(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("CREMA-D"))
  sounds = {}
  for k, (stem, n, fps) in enumerate(CREMA_CLIPS):
    write_video(f"{root}/VideoFlash/{stem}.flv", face_video(n, x0=110), fps)
    sounds[stem] = tone(n / fps + 0.05, 250.0 + 100 * k, 16000)
    write_wav(f"{root}/AudioWAV/{stem}.wav", sounds[stem], 16000)
  write_video(f"{root}/VideoFlash/1001_TIE_ANG_MD.flv", face_video(5), 25)  # no wav
  write_video(f"{root}/VideoFlash/not_a_crema_name.flv", face_video(5), 25)
  data_dir = str(tmp_path_factory.mktemp("tfds_crema"))
  return crema_d.build(root, data_dir, image_size=SIZE), root, sounds, data_dir


def test_crema_builds_and_reads_back(crema_built):
  b, _, sounds, _ = crema_built
  assert b.name == "crema_d" and set(b.info.splits) == {"train", "test"}
  got = records(b, "train") + records(b, "test")
  assert sorted(r["source"].decode() for r in got) == sorted(
    f"VideoFlash/{s}.flv" for s, _, _ in CREMA_CLIPS
  )
  for stem, n, fps in CREMA_CLIPS:
    r = [r for r in got if r["source"].decode() == f"VideoFlash/{stem}.flv"][0]
    p = labels.parse_crema_stem(stem)
    t = round(n / fps * 25)
    assert r["frames"].shape == (t, SIZE, SIZE, 3)
    assert r["audio"].shape == (t * 640,)
    q = np.round(sounds[stem] * 32767) / 32768  # the wav's int16 samples
    np.testing.assert_allclose(r["audio"], q[: t * 640], atol=1e-6)
    np.testing.assert_allclose(r["emotion"], labels.crema_emotion_vector(p["code"], p["level"]))
    assert int(r["identity"]) == p["actor"] and r["actor"].decode() == str(p["actor"])
    assert r["sentence"].decode() == p["sentence"] and r["level"].decode() == p["level"]
    assert int(r["clip_id"]) == labels.crema_clip_id(stem)
    assert bool(r["is_neutral_reference"]) == (p["code"] == "NEU")
  assert {int(r["identity"]) for r in records(b, "test")} == {1085}
  assert {int(r["identity"]) for r in records(b, "train")} == {1001}


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


def test_prepare_command_builds_the_datasets(mead_root, crema_built, tmp_path, capsys):
  """`emotalker prepare mead|crema_d`: its flags reach the builder (size, clip and frame
  limits, actors); a bad manual dir or actor list is one error line."""
  from emotalker_jax.cli import main

  data_dir = str(tmp_path / "m")
  assert (
    main(
      [
        "prepare",
        "mead",
        "--manual_dir",
        mead_root,
        "--data_dir",
        data_dir,
        "--image_size",
        "16",
        "--max_clips",
        "1",
        "--max_frames",
        "8",
      ]
    )
    == 0
  )
  cfg = mead.make_config(16, 1, 8, None)
  b = mead.Mead(config=cfg, data_dir=data_dir)
  last = capsys.readouterr().out.strip().splitlines()[-1]  # TFDS prints its progress first
  assert last == f"built mead/{cfg.name} in {b.data_dir}: train=1, test=1"
  for r in records(b, "train") + records(b, "test"):
    assert r["frames"].shape == (8, 16, 16, 3)
  _, root, _, _ = crema_built
  assert (
    main(
      [
        "prepare",
        "crema_d",
        "--manual_dir",
        root,
        "--data_dir",
        str(tmp_path / "c"),
        "--image_size",
        "16",
        "--actors",
        "1001",
      ]
    )
    == 0
  )
  assert capsys.readouterr().out.strip().splitlines()[-1].endswith(": train=2")
  assert main(["prepare", "crema_d", "--manual_dir", root, "--actors", "M005"]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("emotalker prepare: error:") and "actors" in err[0]
  assert main(["prepare", "mead", "--manual_dir", str(tmp_path / "nope")]) == 2
  err = capsys.readouterr().err
  assert err.startswith("emotalker prepare: error:") and "Expected layout" in err


def test_pipeline_reads_built_datasets(mead_built, crema_built):
  """The grain pipeline trains on the built MEAD / CREMA-D: references are neutral clips
  of the same identity, masks come from the face track."""
  for name, data_dir in (
    (f"mead/{mead_built[0].builder_config.name}", mead_built[1]),
    (f"crema_d/{crema_built[0].builder_config.name}", crema_built[3]),
  ):
    ld = P.make_loader(
      name, "train", batch_size=6, data_dir=data_dir, shard_options=gp.NoSharding()
    )
    src, _ = P.open_source(name, "train", data_dir)
    meta = {int(src[i]["clip_id"]): src[i] for i in range(len(src))}
    b = next(iter(ld))
    assert b["x_tgt"].shape == (6, SIZE, SIZE, 3)
    for cid, rcid, ident in zip(
      b["clip_id"].tolist(), b["ref_clip_id"].tolist(), b["identity"].tolist()
    ):
      assert int(meta[rcid]["identity"]) == ident
      if not meta[cid]["is_neutral_reference"]:
        assert meta[rcid]["is_neutral_reference"]
    assert np.all(b["mouth_open"] == -1.0)  # unknown on real data
    assert np.all(b["x_mask"][b["mask_region"] > 0] == 0.0)


# ---- video_io ---------------------------------------------------------------------------
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
  with pytest.raises(FileNotFoundError):
    video_io.read_video(str(tmp_path / "missing.mp4"))
  (tmp_path / "bad.mp4").write_bytes(b"not a video")
  with pytest.raises(ValueError, match="cannot decode video"):
    video_io.read_video(str(tmp_path / "bad.mp4"))


def test_face_detection_and_crop():
  img = draw_face(130, 95)
  box = video_io.detect_face_box(img, "face.png")
  cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
  assert abs(cx - 130) < 8 and abs(cy - 95) < 15 and 60 < box[2] - box[0] < 140
  with pytest.raises(ValueError, match="no face found in blank.png"):
    video_io.detect_face_box(np.full((H, W, 3), 128, np.uint8), "blank.png")
  with pytest.raises(ValueError, match="no face found in clip.mp4"):
    video_io.crop_faces(np.full((3, H, W, 3), 128, np.uint8), 16, source="clip.mp4")
  # a fixed box (pluggable detection): the crop is exactly the resized square
  frames = np.random.default_rng(0).integers(0, 256, (2, H, W, 3), dtype=np.uint8)
  fixed = np.array([60, 40, 110, 90], np.float32)  # 50 x 50 face box
  crops = video_io.crop_faces(frames, 45, face_boxes=fixed, scale=0.9)  # 45 px square
  np.testing.assert_allclose(crops.crop_boxes[0], [62.5, 42.5 + 2.5, 107.5, 87.5 + 2.5])
  np.testing.assert_array_equal(crops.frames[1], frames[1, 45:90, 62:107])
  # crops that leave the frame replicate the edge
  edge = video_io.crop_faces(
    frames[:1], 20, face_boxes=np.array([-20, -20, 0, 0], np.float32), scale=1.0
  )
  np.testing.assert_array_equal(edge.frames[0], np.broadcast_to(frames[0, 0, 0], (20, 20, 3)))


def test_track_interpolates_and_smooths():
  calls = []

  def det(frame):
    i = int(frame[0, 0, 0])
    calls.append(i)
    return None if i == 5 else np.array([i, 0, i + 10, 10], np.float32)

  frames = np.zeros((11, 4, 4, 3), np.uint8)
  frames[:, 0, 0, 0] = np.arange(11)
  track = video_io.track_face_boxes(frames, detect_every=5, smoothing=1, detector=det)
  assert calls == [0, 5, 10]
  np.testing.assert_allclose(track[:, 0], np.arange(11))  # linear between 0 and 10
  smooth = video_io.smooth_boxes(np.eye(5, 4, dtype=np.float32) * 3, 3)
  np.testing.assert_allclose(smooth[1], [1, 1, 1, 0])


# ---- labels -----------------------------------------------------------------------------
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
