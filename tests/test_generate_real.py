"""`emotalker generate` on real photos (issue 20, item 6): face detection, alignment and the
landmark-hull mask, paste-back into the photo, PNG frames, streaming in bounded memory,
bad photos and audio.

One tiny random-weight checkpoint (tests/test_generate.py's ``make_checkpoint``) and ONE
`emotalker generate --paste-back --frames-dir` run through the CLI (module-scoped) on
tests/data/faces/astronaut.png with tests/data/speech/hello_happy.wav; the Generator that
run loaded is kept and reused (its compiled chunk function) by the library-level
streaming test. Everything else is library level, without the model.
"""

import gc
import json
import os
import tracemalloc
import warnings

import cv2
import numpy as np
from PIL import Image
import pytest

from emotalker_jax import cli
from emotalker_jax import inference as I
from emotalker_jax.audio import load_audio
from emotalker_jax.faces import align
from tests.test_generate import HAPPY, STEPS, make_checkpoint, speech, write_wav

pytestmark = pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
FACES = os.path.join(REPO, "tests", "data", "faces")
ASTRONAUT = os.path.join(FACES, "astronaut.png")
HELLO = os.path.join(REPO, "tests", "data", "speech", "hello_happy.wav")
TRUE_FACE = (170, 60, 290, 200)  # x0, y0, x1, y1 of the astronaut's face, by eye
SR = 16000


def rgb(name):
  return np.asarray(Image.open(os.path.join(FACES, name)).convert("RGB"))


def save(path, arr, mode=None):
  Image.fromarray(arr, mode).save(path)
  return str(path)


def decode_mp4(path):
  """All frames of a video, (T, H, W, 3) uint8, with the bundled ffmpeg (no resampling)."""
  import imageio_ffmpeg

  reader = imageio_ffmpeg.read_frames(str(path))
  w, h = next(reader)["size"]
  return np.stack([np.frombuffer(f, np.uint8).reshape(h, w, 3) for f in reader])


def hull_regions(points, matrix, shape):
  """(grown, inner) bool (H, W): the photo-space landmark hull grown by a crop pixel's
  footprint + 1 px (everything paste-back may touch) and shrunk by 2 px (what it surely
  replaces): an independent reference for the warped crop hull."""
  scale = float(np.sqrt(abs(np.linalg.det(np.asarray(matrix)[:, :2]))))
  r = int(np.ceil(1.0 / scale)) + 1
  hull = align.face_hull_mask(points, shape)
  grown = cv2.dilate(hull, np.ones((2 * r + 1, 2 * r + 1), np.uint8)) > 0
  inner = cv2.erode(hull, np.ones((5, 5), np.uint8)) > 0
  return grown, inner


# ---- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  return make_checkpoint(str(tmp_path_factory.mktemp("ckpt")))["workdir"]


@pytest.fixture(scope="module")
def cli_run(workdir, tmp_path_factory):
  """`emotalker generate --paste-back --frames-dir` on the astronaut with hello_happy.wav;
  the Generator the command loaded is kept for reuse."""
  out_dir = tmp_path_factory.mktemp("cli")
  out, frames_dir = out_dir / "clip.mp4", out_dir / "frames"
  loaded = []
  real = I.load_generator

  def keep(*a, **k):
    loaded.append(real(*a, **k))
    return loaded[-1]

  import contextlib
  import io

  buf = io.StringIO()
  with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(buf):
    mp.setattr(I, "load_generator", keep)
    rc = cli.main(
      [
        "generate",
        "--checkpoint",
        workdir,
        "--portrait",
        ASTRONAUT,
        "--audio",
        HELLO,
        "--emotion",
        "happy=0.7",
        "--out",
        str(out),
        "--paste-back",
        "--frames-dir",
        str(frames_dir),
        "--steps",
        str(STEPS),
        "--no-progress",
      ]
    )
  assert rc == 0
  summary = json.loads(buf.getvalue().strip().splitlines()[-1])
  return {"summary": summary, "out": out, "frames_dir": frames_dir, "gen": loaded[0]}


# ---- the face crop: detection on the luma, alignment, several faces, none -----------------


def test_rgb_grey_and_rgba_photos_give_the_same_face(tmp_path):
  photo = rgb("astronaut.png")
  grey = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)
  rgba = np.dstack([photo, np.full(photo.shape[:2], 255, np.uint8)])
  rgba[:40, :, 3] = rgba[-40:, :, 3] = 0  # transparent bands: composited over white
  paths = {
    "rgb": save(tmp_path / "rgb.png", photo),
    "grey": save(tmp_path / "grey.png", grey, "L"),
    "rgba": save(tmp_path / "rgba.png", rgba, "RGBA"),
  }
  got = {}
  for k, p in paths.items():
    with warnings.catch_warnings(record=True) as caught:
      warnings.simplefilter("always")
      got[k] = I.prepare_portrait(p, 64)
    grey_warned = [str(w.message) for w in caught if "greyscale" in str(w.message)]
    assert len(grey_warned) == (k == "grey") and len(caught) == len(grey_warned), k
  boxes = np.stack([got[k].face_box for k in paths])
  assert np.abs(boxes - boxes[0]).max() <= 1.0, boxes
  x0, y0, x1, y1 = boxes[0]
  assert TRUE_FACE[0] <= x0 < x1 <= TRUE_FACE[2] and TRUE_FACE[1] <= y0 < y1 <= TRUE_FACE[3]
  assert x1 - x0 > 60  # the face, not a patch of it
  for k in paths:
    p = got[k]
    assert p.crop == "face" and p.num_faces == 1 and p.face_index == 0
    assert p.image.shape == (64, 64, 3) and p.photo.shape == photo.shape
    assert p.greyscale == (k == "grey")
    # The landmarks agree too, and the crop is the photo warped by the matrix.
    np.testing.assert_allclose(p.landmarks, got["rgb"].landmarks, atol=1.5)
    np.testing.assert_array_equal(p.image, align.warp_to_crop(p.photo, p.matrix, 64))
    # The mask is the aligned landmark hull: it holds the crop's eyes and mouth.
    crop_pts = align.transform_points(p.landmarks, p.matrix)
    np.testing.assert_array_equal(p.face_mask, align.face_hull_mask(crop_pts, 64))
    for i in (36, 45, 48, 54, 57, 30):  # eye corners, mouth corners, lower lip, nose tip
      u, v = np.round(crop_pts[i]).astype(int)
      assert p.face_mask[v, u] == 1
  np.testing.assert_array_equal(got["grey"].photo[..., 0], got["grey"].photo[..., 2])
  assert (got["rgba"].photo[:40] == 255).all()  # alpha 0 over white


def test_detection_runs_on_a_model_size_photo_too():
  photo = rgb("astronaut.png")
  face = cv2.resize(photo[40:300, 90:350], (128, 128), interpolation=cv2.INTER_AREA)
  p = I.prepare_portrait(face, 128)
  assert p.crop == "face" and p.num_faces == 1 and p.matrix is not None
  assert not np.array_equal(p.image, face)  # aligned, not taken as is
  c = I.prepare_portrait(face, 128, crop="center")
  assert c.crop == "center" and c.matrix is None and np.array_equal(c.image, face)
  np.testing.assert_array_equal(c.face_mask, I.centre_face_mask(128))


def two_faces():
  """obama.jpg (face ~277 px) and biden.jpg at half scale (face ~155 px) side by side."""
  a = rgb("obama.jpg")
  b = rgb("biden.jpg")
  b = cv2.resize(b, (b.shape[1] // 2, b.shape[0] // 2), interpolation=cv2.INTER_AREA)
  h = max(a.shape[0], b.shape[0])
  canvas = np.full((h, a.shape[1] + b.shape[1], 3), 128, np.uint8)
  canvas[: a.shape[0], : a.shape[1]] = a
  canvas[: b.shape[0], a.shape[1] :] = b
  return canvas, a.shape[1]


def test_two_faces_warn_and_the_largest_is_used_or_face_index():
  photo, split = two_faces()
  with pytest.warns(UserWarning, match=r"has 2 faces \(\d+ px, \d+ px wide\); using the largest"):
    p = I.prepare_portrait(photo, 64, source="'pair.png'")
  assert p.num_faces == 2 and p.face_index == 0
  assert p.face_box[2] <= split and p.face_box[2] - p.face_box[0] > 200  # obama's
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # a chosen face does not warn
    q = I.prepare_portrait(photo, 64, face_index=1, source="'pair.png'")
  assert q.face_index == 1 and q.face_box[0] >= split  # biden's
  assert q.face_box[2] - q.face_box[0] < p.face_box[2] - p.face_box[0]
  assert (q.landmarks[:, 0] >= split).all() and (p.landmarks[:, 0] < split).all()
  with pytest.raises(ValueError, match=r"--face-index 2 but portrait 'pair.png' has 2 face"):
    I.prepare_portrait(photo, 64, face_index=2, source="'pair.png'")


def test_the_cat_has_no_face():
  cat = os.path.join(FACES, "chelsea.png")
  with pytest.raises(ValueError) as e:
    I.prepare_portrait(cat, 64)
  msg = str(e.value)
  assert msg.startswith(f"no face found in portrait {cat!r}")
  assert "--crop center" in msg and "already a centred face crop" in msg
  assert I.prepare_portrait(cat, 64, crop="center").crop == "center"  # the escape hatch


# ---- bad photos and audio ----------------------------------------------------------------------


def test_bad_photos(tmp_path):
  photo = rgb("astronaut.png")
  tiny = save(tmp_path / "tiny.png", photo[100:148, 160:208])
  with pytest.raises(ValueError, match=r"is 48x48, at least 64 px needed on each side"):
    I.prepare_portrait(tiny, 32)
  # A model-size image below 64 px: only as an already-centred crop.
  small = save(tmp_path / "small.png", cv2.resize(photo, (32, 32)))
  with pytest.raises(ValueError, match=r"is 32x32, at least 64 px.*--crop center"):
    I.prepare_portrait(small, 32)
  assert I.prepare_portrait(small, 32, crop="center").image.shape == (32, 32, 3)
  # Truncated JPEG: Pillow's own words, then the fix.
  data = open(os.path.join(FACES, "obama.jpg"), "rb").read()
  (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
  with pytest.raises(ValueError, match=r"cannot read portrait .*cut.jpg.*image file is truncated"):
    I.prepare_portrait(str(tmp_path / "cut.jpg"), 32)
  # Huge: refused from the header, before decoding (this file's pixel data is cut off, so
  # a decode would fail with 'truncated' instead).
  save(tmp_path / "huge_full.png", np.zeros((16, 9000, 3), np.uint8))
  (tmp_path / "huge.png").write_bytes((tmp_path / "huge_full.png").read_bytes()[:200])
  with pytest.raises(ValueError, match=r"is 9000x16, larger than 8192 px on a side; downscale"):
    I.prepare_portrait(str(tmp_path / "huge.png"), 32)
  (tmp_path / "text.png").write_text("not an image")
  with pytest.raises(ValueError, match=r"not an image file Pillow can decode"):
    I.prepare_portrait(str(tmp_path / "text.png"), 32)
  with pytest.raises(ValueError, match=r"crop 'square' must be one of"):
    I.prepare_portrait(photo, 32, crop="square")


def test_greyscale_photo_warns_and_the_output_is_grey():
  grey = cv2.cvtColor(rgb("astronaut.png"), cv2.COLOR_RGB2GRAY)
  with pytest.warns(UserWarning) as rec:
    p = I.prepare_portrait(grey, 32, source="'grey.png'")
  assert str(rec[0].message) == I.inputs.GREYSCALE_WARNING.format(source="'grey.png'")
  assert "output frames are turned grey" in str(rec[0].message)
  colour = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
  out = np.concatenate(list(I.render_frames([colour], p)))
  luma = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in colour])
  assert (out == out[..., :1]).all()  # no colour left
  assert np.abs(out[..., 0].astype(int) - luma).max() <= 1  # the luma (cv2: fixed point)
  pasted = np.concatenate(list(I.render_frames([colour], p, paste_back=True)))
  assert pasted.shape == (3,) + grey.shape + (3,) and (pasted == pasted[..., :1]).all()
  # A colour JPEG of a grey photo (chroma noise of 1-2 levels) still counts as grey.
  noisy = np.repeat(grey[..., None], 3, -1).astype(int)
  noisy[..., 0] += np.random.default_rng(1).integers(-1, 2, grey.shape)
  assert I.is_greyscale(np.clip(noisy, 0, 255).astype(np.uint8))
  assert not I.is_greyscale(rgb("astronaut.png"))


def test_bad_audio_real(tmp_path):
  hello = load_audio(HELLO, SR)
  assert I.check_audio(hello, SR) == int(len(hello) * 25 // SR)
  with pytest.raises(ValueError, match=r"is 30 ms long; at least 40 ms \(one video frame"):
    I.load_generation_audio(write_wav(tmp_path / "short.wav", hello[:480]), SR)
  with pytest.raises(ValueError, match=r"is 3\.\d s long, over the limit of 2 s; cut it"):
    I.load_generation_audio(HELLO, SR, max_seconds=2)
  (tmp_path / "bad.wav").write_bytes(b"RIFF" + np.random.default_rng(0).bytes(3000))
  with pytest.raises(ValueError, match=r"cannot decode audio file .*bad.wav.*ffmpeg said"):
    I.load_generation_audio(str(tmp_path / "bad.wav"), SR)
  silent = write_wav(tmp_path / "silent.wav", np.zeros(SR // 2, np.float32))
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # the silence warning comes once, from Generator.stream
    assert len(I.load_generation_audio(silent, SR)) == SR // 2


def test_cli_refuses_bad_flag_combinations_before_loading_the_model(
  workdir, tmp_path, capsys, monkeypatch
):
  monkeypatch.setattr(I, "load_generator", lambda *a, **k: pytest.fail("model loaded"))
  base = ["generate", "--checkpoint", workdir, "--audio", HELLO, "--prompt", "happy"]
  base += ["--out", str(tmp_path / "x.mp4")]
  (tmp_path / "full").mkdir()
  (tmp_path / "full" / "old.png").write_bytes(b"x")
  pair = save(tmp_path / "pair.png", two_faces()[0])
  cases = [
    (["--portrait", ASTRONAUT, "--crop", "center", "--paste-back"], "--paste-back needs --crop"),
    (["--portrait", ASTRONAUT, "--crop", "center", "--face-index", "1"], "needs --crop face"),
    (["--portrait", ASTRONAUT, "--frames-dir", str(tmp_path / "full")], "is not empty"),
    (["--portrait", pair, "--face-index", "5"], "--face-index 5 but portrait"),
    (["--portrait", os.path.join(FACES, "chelsea.png")], "no face found in portrait"),
  ]
  for extra, msg in cases:
    assert cli.main(base + extra) == 2, extra
    err = capsys.readouterr().err
    assert err.startswith("emotalker generate: error: ") and msg in err, (extra, err)


# ---- emotalker generate --paste-back --frames-dir ---------------------------------------------


def test_cli_paste_back_video_frames_and_audio(cli_run):
  s, out, frames_dir = cli_run["summary"], cli_run["out"], cli_run["frames_dir"]
  photo = rgb("astronaut.png")
  hello = load_audio(HELLO, SR)
  n = int(len(hello) * 25 // SR)  # one frame per 40 ms of audio
  assert s["num_frames"] == s["frames_written"] == n and n > 70
  assert s["crop"] == "face" and s["paste_back"] and s["faces_found"] == 1
  assert s["video_size"] == [512, 512] and s["photo_size"] == [512, 512]
  # The mp4: the photo's size, n frames, an audio stream as long as the speech.
  video = decode_mp4(out)
  assert video.shape == (n, 512, 512, 3)
  sound = load_audio(str(out), SR)
  assert abs(len(sound) - len(hello)) / SR < 0.05, (len(sound), len(hello))
  # The PNG frames: exactly the photo outside the face hull, the model's face inside.
  names = sorted(os.listdir(frames_dir))
  assert names == [f"{i:06d}.png" for i in range(n)]
  p = I.prepare_portrait(ASTRONAUT, cli_run["gen"].image_size)
  grown, inner = hull_regions(p.landmarks, p.matrix, photo.shape[:2])
  pngs = []
  for name in names[:: max(1, n // 12)]:
    f = np.asarray(Image.open(frames_dir / name))
    assert f.shape == photo.shape and f.dtype == np.uint8
    np.testing.assert_array_equal(f[~grown], photo[~grown])
    assert (np.abs(f.astype(int) - photo.astype(int)).max(-1) > 8)[inner].mean() > 0.5
    pngs.append(f)
  # Frames differ from each other inside the hull (they follow the audio), and the mp4
  # carries the same frames (lossy: a few levels).
  assert np.std(np.stack(pngs).astype(float), axis=0)[inner].mean() > 1.0
  idx = list(range(0, n, max(1, n // 12)))
  err = np.abs(video[idx].astype(int) - np.stack(pngs).astype(int))
  assert err.mean() < 4, err.mean()
  assert os.path.exists(str(out)[:-4] + ".png")


def test_face_metrics_on_the_generated_clip_and_on_its_source(cli_run, tmp_path, capsys):
  """`emotalker face-metrics` on the paste-back clip and on a still clip of its source
  photo: the fixed keys, one mouth opening per frame; the source scores identity ~1 with a
  face on every frame, and the random-weight face (where dlib finds one) scores lower."""
  n = cli_run["summary"]["num_frames"]
  source_clip = tmp_path / "source.mp4"
  I.write_mp4(source_clip, np.repeat(rgb("astronaut.png")[None], 8, 0), None)
  got = {}
  for name, video in (("generated", cli_run["out"]), ("source", source_clip)):
    assert cli.main(["face-metrics", "--portrait", ASTRONAUT, "--video", str(video)]) == 0
    got[name] = json.loads(capsys.readouterr().out)
    keys = {"identity_similarity", "emotion_distribution", "mouth_opening", "faces_found_fraction"}
    assert keys <= set(got[name]), name
  assert len(got["generated"]["mouth_opening"]) == n and len(got["source"]["mouth_opening"]) == 8
  src = got["source"]
  assert src["faces_found_fraction"] == 1.0 and src["identity_similarity"] > 0.99
  assert abs(sum(src["emotion_distribution"].values()) - 1.0) < 1e-5
  assert max(src["emotion_distribution"], key=src["emotion_distribution"].get) == "happy"
  g = got["generated"]
  assert 0.0 <= g["faces_found_fraction"] <= 1.0
  if g["faces_found_fraction"] > 0:
    assert g["identity_similarity"] < src["identity_similarity"]


def test_stream_equals_generate_and_runs_at_most_one_chunk_ahead(cli_run, tmp_path):
  gen = cli_run["gen"]
  p = I.prepare_portrait(ASTRONAUT, gen.image_size)
  audio = speech(0.5)  # 12 frames: chunks of 8 and 4
  done = []
  stream = gen.stream(
    p.image,
    audio,
    intensities=HAPPY,
    steps=STEPS,
    face_mask=p.face_mask,
    progress=lambda k: done.append(k),
  )
  assert stream.num_frames == 12 and stream.chunk_size == 8 and "timing" not in stream.info
  chunks, yielded = [], 0
  for c in stream:
    assert c.shape[0] <= stream.chunk_size and c.shape[1:] == (32, 32, 3)
    yielded += len(c)
    # When a chunk is handed over, exactly the frames handed over so far were fetched.
    assert sum(done) == yielded
    chunks.append(c)
  assert [len(c) for c in chunks] == [8, 4] and "frames_per_s" in stream.info["timing"]
  streamed = np.concatenate(chunks)
  frames, _ = gen.generate(p.image, audio, intensities=HAPPY, steps=STEPS, face_mask=p.face_mask)
  np.testing.assert_array_equal(streamed, frames)
  # The writers fed chunk by chunk write what they write from the whole array.
  I.write_mp4(tmp_path / "whole.mp4", frames, audio)
  I.write_mp4(tmp_path / "chunks.mp4", iter(chunks), audio)
  assert (tmp_path / "whole.mp4").read_bytes() == (tmp_path / "chunks.mp4").read_bytes()
  sheet, pngs = I.SheetFrames(len(frames)), I.PngFrames(tmp_path / "png")
  pasted = np.concatenate(
    list(I.tap(I.render_frames(iter(chunks), p, paste_back=True, crops_tap=sheet), pngs))
  )
  want = np.stack([align.paste_back(p.photo, f, p.matrix, p.face_mask) for f in frames])
  np.testing.assert_array_equal(pasted, want)
  for i in (0, 7, 11):
    np.testing.assert_array_equal(
      np.asarray(Image.open(tmp_path / "png" / f"{i:06d}.png")), want[i]
    )
  np.testing.assert_array_equal(sheet.sheet(p.image), I.contact_sheet(frames, p.image))


def test_writers_hold_one_chunk_of_a_long_stream(tmp_path):
  """160 frames pasted into a 256x256 photo, written as mp4 + PNGs from a stream of 4-frame
  chunks: the traced peak memory stays at a few chunks (it would be the whole clip, 31 MB,
  if anything collected the frames)."""
  photo = cv2.resize(rgb("astronaut.png"), (256, 256), interpolation=cv2.INTER_AREA)
  p = I.prepare_portrait(photo, 32)
  n, b = 160, 4
  rng = np.random.default_rng(0)
  made = []

  def fake_stream():
    for _ in range(n // b):
      made.append(b)
      yield rng.integers(0, 256, (b, 32, 32, 3), dtype=np.uint8)

  sheet, pngs = I.SheetFrames(n), I.PngFrames(tmp_path / "png")
  audio = speech(n / 25)
  gc.collect()
  tracemalloc.start()
  try:
    video = I.tap(I.render_frames(fake_stream(), p, paste_back=True, crops_tap=sheet), pngs)
    written = I.write_mp4(tmp_path / "long.mp4", video, audio)
    _, peak = tracemalloc.get_traced_memory()
  finally:
    tracemalloc.stop()
  chunk_bytes = b * photo.nbytes
  assert written == pngs.count == n == sum(made)
  assert peak < 8 * chunk_bytes, (peak, chunk_bytes, n * photo.nbytes)  # measured: 5 chunks
  assert len(sheet.kept) == 15  # the contact sheet keeps only its cells
  assert decode_mp4(tmp_path / "long.mp4").shape == (n, 256, 256, 3)


def test_mp4_of_an_odd_sized_photo_gets_one_replicated_row_and_column(tmp_path):
  """H.264 4:2:0 needs even sides: a 35x33 photo's video is 36x34, the extra column / row
  a copy of the last (PNG frames keep the exact size)."""
  x = np.zeros((3, 33, 35, 3), np.uint8)
  x[:, :, -1] = 200  # last column bright, last row dark
  x[:, -1, :-1] = 30
  assert I.write_mp4(tmp_path / "odd.mp4", (c for c in np.split(x, 3)), None) == 3
  v = decode_mp4(tmp_path / "odd.mp4")
  assert v.shape == (3, 34, 36, 3)
  assert np.abs(v[:, 5:25, -1].astype(int) - 200).max() < 12  # replicated, codec-close
  assert np.abs(v[:, -1, 5:25].astype(int) - 30).max() < 12
  with pytest.raises(ValueError, match="frame chunks differ in size"):
    I.write_mp4(tmp_path / "bad.mp4", [x[:1], x[:1, :32, :32]], None)
  assert not os.path.exists(tmp_path / "bad.mp4")  # atomic: nothing left behind
  assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")]
  with pytest.raises(ValueError, match="got no frames"):
    I.write_mp4(tmp_path / "none.mp4", iter([]), None)
