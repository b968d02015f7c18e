"""Audio reading, resampling, the log-mel frontend and its alignment to 25 fps video."""

import math
import subprocess
import warnings
import wave

import jax
import numpy as np
import pytest
from scipy.io import wavfile
from scipy.signal import get_window

from emotalker_jax import audio as A

SR = 16000


def tone(freq, seconds, sr=SR, amp=0.5):
  t = np.arange(int(round(seconds * sr))) / sr
  return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def chirp_signal(seconds=2.0, sr=SR):
  """Non-periodic test signal (linear chirp 200 -> 3000 Hz with a slow AM)."""
  t = np.arange(int(seconds * sr)) / sr
  f0, f1 = 200.0, 3000.0
  phase = 2 * np.pi * (f0 * t + (f1 - f0) * t * t / (2 * seconds))
  return (0.4 * np.sin(phase) * (0.6 + 0.4 * np.sin(2 * np.pi * 1.3 * t))).astype(np.float32)


def write_wav_with_wave(path, data_int, sampwidth, sr, channels=1):
  """Writes little-endian PCM with the stdlib `wave` writer (independent of scipy)."""
  data_int = np.asarray(data_int).reshape(-1)
  if sampwidth == 3:
    u = data_int.astype("<i4").view(np.uint8).reshape(-1, 4)[:, :3]
    raw = u.tobytes()
  elif sampwidth == 1:
    raw = data_int.astype(np.uint8).tobytes()
  else:
    raw = data_int.astype({2: "<i2", 4: "<i4"}[sampwidth]).tobytes()
  with wave.open(str(path), "wb") as w:
    w.setnchannels(channels)
    w.setsampwidth(sampwidth)
    w.setframerate(sr)
    w.writeframes(raw)


def ffmpeg(*args):
  subprocess.run(
    [A.ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args], check=True
  )


# ---------------------------------------------------------------------------------------
# Mel filterbank and log-mel
# ---------------------------------------------------------------------------------------
def test_htk_mel_scale_anchor_and_round_trip():
  # HTK: 1000 Hz is ~1000 mel by construction of the 2595 / 700 constants.
  assert abs(A.hz_to_mel(1000.0) - 1000.0) < 0.02
  f = np.array([0.0, 55.0, 440.0, 3000.0, 7600.0])
  np.testing.assert_allclose(A.mel_to_hz(A.hz_to_mel(f)), f, atol=1e-9)


def _reference_filterbank(sr, n_fft, n_mels, fmin, fmax):
  """Independent per-filter, per-bin construction with math.log10 and explicit branches."""
  mel = lambda f: 2595.0 * math.log10(1.0 + f / 700.0)  # noqa: E731
  hz = lambda m: 700.0 * (10 ** (m / 2595.0) - 1.0)  # noqa: E731
  m_lo, m_hi = mel(fmin), mel(fmax)
  pts = [hz(m_lo + (m_hi - m_lo) * i / (n_mels + 1)) for i in range(n_mels + 2)]
  fb = np.zeros((n_fft // 2 + 1, n_mels))
  for m in range(n_mels):
    lo, c, hi = pts[m], pts[m + 1], pts[m + 2]
    for k in range(n_fft // 2 + 1):
      f = k * sr / n_fft
      if lo < f <= c:
        fb[k, m] = (f - lo) / (c - lo)
      elif c < f < hi:
        fb[k, m] = (hi - f) / (hi - c)
  return fb


def test_mel_filterbank_matches_independent_reference():
  fb = A.mel_filterbank()
  assert fb.shape == (A.N_FFT // 2 + 1, 80) and fb.dtype == np.float32
  ref = _reference_filterbank(SR, A.N_FFT, 80, A.FMIN, A.FMAX)
  np.testing.assert_allclose(fb, ref, atol=1e-6)
  # Every filter sees at least one FFT bin; nothing outside [fmin, fmax].
  assert (fb.sum(axis=0) > 0.3).all()
  freqs = np.arange(fb.shape[0]) * SR / A.N_FFT
  assert fb[(freqs < A.FMIN) | (freqs > A.FMAX)].max() == 0.0
  # On a fine frequency grid every triangle peaks at 1.0 at its HTK centre frequency.
  n_fine = 2**17
  fine = A.mel_filterbank(SR, n_fine)
  centres = A.mel_center_frequencies()
  peak_hz = fine.argmax(axis=0) * SR / n_fine
  np.testing.assert_allclose(peak_hz, centres, atol=SR / n_fine)
  np.testing.assert_allclose(fine.max(axis=0), 1.0, atol=2e-3)
  # Centres are equally spaced in HTK mel.
  np.testing.assert_allclose(
    np.diff(A.hz_to_mel(centres)), (A.hz_to_mel(A.FMAX) - A.hz_to_mel(A.FMIN)) / 81, rtol=1e-9
  )


def test_tone_peaks_in_nearest_mel_bin():
  centres = A.mel_center_frequencies()
  mel_fn = jax.jit(A.log_mel_spectrogram)
  for f in (1000.0, 3000.0, 500.0, 5000.0):
    mel = np.asarray(mel_fn(tone(f, 1.0)))
    assert mel[10:-10].mean(0).argmax() == np.abs(centres - f).argmin(), f
  # A sweep: never off by more than one filter (ties near mid-points depend on the
  # 31.25 Hz FFT bin grid), and exact for most tones.
  sweep = np.linspace(300.0, 7400.0, 60)
  got = np.array([np.asarray(mel_fn(tone(f, 1.0)))[10:-10].mean(0).argmax() for f in sweep])
  want = np.abs(centres[None] - sweep[:, None]).argmin(1)
  assert np.abs(got - want).max() <= 1
  assert (got == want).mean() >= 0.9


def test_log_mel_matches_numpy_stft_and_is_jittable():
  x = chirp_signal(1.23)
  # Independent numpy reference: centred zero padding, periodic Hann(400) in 512.
  pad = 256
  xp = np.pad(x.astype(np.float64), (pad, pad))
  m = 1 + len(x) // 160
  win = np.zeros(512)
  win[56:456] = get_window("hann", 400, fftbins=True)
  frames = np.stack([xp[j * 160 : j * 160 + 512] * win for j in range(m)])
  mag = np.abs(np.fft.rfft(frames, axis=-1))
  ref = np.log(np.maximum(mag @ _reference_filterbank(SR, 512, 80, 55.0, 7600.0), 1e-5))
  got = np.asarray(A.log_mel_spectrogram(x))
  assert got.shape == (m, 80) == (A.num_mel_frames(len(x)), 80)
  # float32 FFT vs float64: compare magnitudes (tiny values carry float32 round-off).
  np.testing.assert_allclose(np.exp(got), np.exp(ref), rtol=1e-3, atol=1e-5 * np.exp(ref).max())
  loud = ref > ref.max() - 7.0  # within ~60 dB of the peak
  np.testing.assert_allclose(got[loud], ref[loud], atol=2e-3)
  got_jit = np.asarray(jax.jit(A.log_mel_spectrogram)(x))
  np.testing.assert_allclose(got_jit, got, atol=1e-5)
  # Leading batch dims are independent items.
  batch = np.stack([x, 0.5 * x])
  got_b = np.asarray(A.log_mel_spectrogram(batch))
  np.testing.assert_allclose(got_b[0], got, atol=1e-5)
  above = got > np.log(A.LOG_FLOOR) + 8.0
  np.testing.assert_allclose(
    got_b[1][above],
    got[above] + np.log(0.5),
    atol=1e-3,
    err_msg="log-mel of 0.5 x must shift by log 0.5 (above floor)",
  )


# ---------------------------------------------------------------------------------------
# Alignment to video frames
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
  "num_frames,seconds",
  [
    (1, 0.04),
    (7, 0.28),
    (25, 1.0),
    (38, 1.517),
    (38, 1.3),  # last: audio shorter
    (50, 2.2),
    (101, 4.0373),
    (12, 0.001),
  ],
)  # longer; nearly empty audio
def test_n_video_frames_give_n_windows(num_frames, seconds):
  x = chirp_signal(max(seconds, 1e-3))
  feats = A.audio_features(x, num_frames)
  assert feats.shape == (num_frames, A.window_length(0.2), 80) == (num_frames, 21, 80)
  assert np.isfinite(np.asarray(feats)).all()
  m = A.num_mel_frames(len(x))
  idx = A.window_indices(m, num_frames)
  want_centre = np.clip(np.round((np.arange(num_frames) + 0.5) / 25 / 0.01), 0, m - 1)
  np.testing.assert_array_equal(idx[:, 10], want_centre)
  assert idx.min() >= 0 and idx.max() <= m - 1
  # Windows are consecutive mel frames wherever they lie inside the clip (no gaps).
  inside = (idx[:, 0] > 0) & (idx[:, -1] < m - 1)
  assert (np.diff(idx[inside], axis=1) == 1).all()


@pytest.mark.parametrize("fps", [25.0, 30.0])
def test_click_at_frame_time_lands_in_window_centre(fps):
  """A click at frame k's time (k + 0.5) / fps is the loudest column W//2 of window k."""
  num_frames = int(3.0 * fps)
  x = np.zeros(int(3.0 * SR), np.float32)
  clicked = list(range(2, num_frames - 2, 7))  # >= 0.23 s apart: one click per window
  for k in clicked:
    x[int(round((k + 0.5) / fps * SR))] = 1.0
  win = np.asarray(jax.jit(A.audio_features, static_argnums=(1, 2))(x, num_frames, fps))
  energy = np.exp(win).sum(-1)  # (N, W): mel magnitude per column
  w = win.shape[1]
  for k in clicked:
    assert energy[k].argmax() == w // 2, (k, energy[k].round(3))
  if fps == 25.0:  # one frame later = 4 mel hops later: the click sits 4 columns earlier
    for k in clicked:
      assert energy[k + 1].argmax() == w // 2 - 4


def test_frame_rms_envelope_exact_on_piecewise_constant_signal():
  fps, n = 25, 20
  spf = SR // fps
  levels = np.random.RandomState(0).uniform(-0.9, 0.9, n)
  x = np.repeat(levels, spf).astype(np.float32)
  env = A.frame_rms_envelope(x, n, fps, SR)
  np.testing.assert_allclose(env, np.abs(levels), rtol=1e-5)
  # Video longer than the audio: frames past the end are silent.
  env2 = A.frame_rms_envelope(x, n + 5, fps, SR)
  np.testing.assert_allclose(env2[:n], np.abs(levels), rtol=1e-5)
  np.testing.assert_array_equal(env2[n:], 0.0)
  # A sine of amplitude a over whole periods has RMS a / sqrt(2).
  env3 = A.frame_rms_envelope(tone(500.0, 1.0, amp=0.6), 25, fps, SR)
  np.testing.assert_allclose(env3, 0.6 / np.sqrt(2), rtol=1e-3)


# ---------------------------------------------------------------------------------------
# Resampling and reading files
# ---------------------------------------------------------------------------------------
def _peak_hz(x, sr):
  spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
  return spec.argmax() * sr / len(x)


@pytest.mark.parametrize("orig_sr", [44100, 22050, 8000])
def test_resampling_preserves_frequency_and_duration(orig_sr, tmp_path):
  seconds = 1.37
  for f in (440.0, 1000.0, 3000.0):
    x = tone(f, seconds, sr=orig_sr)
    y = A.resample(x, orig_sr, SR)
    assert y.dtype == np.float32
    assert abs(len(y) - seconds * SR) <= 1
    assert abs(_peak_hz(y, SR) - f) < 1.5, (orig_sr, f)
    # amplitude kept (steady part away from the filter's edge transient)
    np.testing.assert_allclose(np.abs(y[400:-400]).max(), 0.5, rtol=0.02)
  # End to end through a WAV file at the original rate.
  path = tmp_path / f"tone_{orig_sr}.wav"
  wavfile.write(path, orig_sr, (tone(1000.0, seconds, sr=orig_sr) * 32767).astype(np.int16))
  y = A.load_audio(path)
  assert abs(len(y) - seconds * SR) <= 1 and abs(_peak_hz(y, SR) - 1000.0) < 1.5


def test_read_wav_pcm_and_float_formats(tmp_path):
  x = chirp_signal(0.5)
  cases = {}
  p = tmp_path / "pcm16.wav"
  wavfile.write(p, SR, np.round(x * 32767).astype(np.int16))
  cases[p] = 1 / 32768
  p = tmp_path / "pcm24.wav"
  write_wav_with_wave(p, np.round(x * (2**23 - 1)).astype(np.int64), 3, SR)
  cases[p] = 1 / 2**23
  p = tmp_path / "pcm32.wav"
  write_wav_with_wave(p, np.round(x * (2**31 - 1)).astype(np.int64), 4, SR)
  cases[p] = 1e-7
  p = tmp_path / "pcm8.wav"
  write_wav_with_wave(p, np.round(x * 127 + 128).astype(np.int64), 1, SR)
  cases[p] = 1 / 128
  p = tmp_path / "float32.wav"
  wavfile.write(p, SR, x)
  cases[p] = 0.0
  for path, tol in cases.items():
    y = A.load_audio(path)
    assert y.dtype == np.float32 and y.shape == x.shape, path
    np.testing.assert_allclose(y, x, atol=tol + 1e-7, err_msg=str(path))
  # Stereo is averaged to mono; float values beyond full scale are clipped.
  p = tmp_path / "stereo.wav"
  wavfile.write(
    p,
    SR,
    np.stack(
      [
        x,
        -0.5 * x,
      ],
      axis=1,
    ),
  )
  np.testing.assert_allclose(A.load_audio(p), 0.25 * x, atol=1e-7)
  p = tmp_path / "hot.wav"
  wavfile.write(p, SR, 3.0 * x)
  y = A.load_audio(p)
  assert y.max() <= 1.0 and y.min() >= -1.0


def _aligned_correlation(ref, y, max_lag=4000):
  n = min(len(ref), len(y))
  # lag search by FFT cross-correlation, then Pearson r at the best lag
  a, b = ref[:n] - ref[:n].mean(), y[:n] - y[:n].mean()
  cc = np.fft.irfft(np.fft.rfft(b, 2 * n) * np.conj(np.fft.rfft(a, 2 * n)))
  lags = np.concatenate([np.arange(0, max_lag), np.arange(-max_lag, 0)])
  lag = lags[np.argmax(cc[lags])]
  if lag >= 0:
    u, v = ref[: n - lag], y[lag:n]
  else:
    u, v = ref[-lag:n], y[: n + lag]
  best = np.corrcoef(u, v)[0, 1]
  return best, lag


@pytest.mark.parametrize("ext,codec", [("mp3", "libmp3lame"), ("m4a", "aac")])
def test_compressed_round_trip_through_bundled_ffmpeg(ext, codec, tmp_path):
  x = chirp_signal(2.0, sr=44100)
  src = tmp_path / "src.wav"
  wavfile.write(src, 44100, np.round(x * 32767).astype(np.int16))
  out = tmp_path / f"clip.{ext}"
  ffmpeg("-i", str(src), "-c:a", codec, "-b:a", "128k", str(out))
  y = A.load_audio(out)  # decoded + resampled to 16 kHz by ffmpeg
  ref = A.resample(x, 44100, SR)
  assert abs(len(y) - len(ref)) < 0.1 * SR
  r, lag = _aligned_correlation(ref, y)
  assert r > 0.9, (r, lag)


def test_video_file_audio_track_and_video_without_audio(tmp_path):
  with_audio = tmp_path / "talk.mp4"
  ffmpeg(
    "-f",
    "lavfi",
    "-i",
    "testsrc=size=32x32:rate=25",
    "-f",
    "lavfi",
    "-i",
    "sine=frequency=440:sample_rate=44100",
    "-t",
    "1",
    "-c:v",
    "mpeg4",
    "-c:a",
    "aac",
    str(with_audio),
  )
  y = A.load_audio(with_audio)
  assert abs(len(y) - SR) < 0.1 * SR and abs(_peak_hz(y, SR) - 440.0) < 2.0
  mute = tmp_path / "mute.mp4"
  ffmpeg("-f", "lavfi", "-i", "testsrc=size=32x32:rate=25", "-t", "0.5", "-c:v", "mpeg4", str(mute))
  with pytest.raises(ValueError, match="mute.mp4.*no audio stream"):
    A.load_audio(mute)


# ---------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------
def test_missing_file_names_the_file(tmp_path):
  p = tmp_path / "nope" / "speech.wav"
  with pytest.raises(FileNotFoundError, match="speech.wav.*not found"):
    A.load_audio(p)


@pytest.mark.parametrize("name", ["broken.mp3", "broken.wav", "broken.m4a"])
def test_corrupt_file_names_the_file_and_quotes_ffmpeg(name, tmp_path):
  p = tmp_path / name
  p.write_bytes(np.random.RandomState(0).bytes(3000))
  with pytest.raises(ValueError, match=rf"{name}.*ffmpeg said: \S"):
    A.load_audio(p)
  # A WAV whose header claims data it does not hold (truncated download).
  good = tmp_path / "good.wav"
  wavfile.write(good, SR, tone(440.0, 0.2))
  trunc = tmp_path / "truncated.wav"
  trunc.write_bytes(good.read_bytes()[:30])
  with pytest.raises(ValueError, match="truncated.wav"):
    A.load_audio(trunc)


def test_empty_audio_is_an_error(tmp_path):
  p = tmp_path / "zero_samples.wav"
  wavfile.write(p, SR, np.zeros(0, np.int16))
  with pytest.raises(ValueError, match="zero_samples.wav.*no audio samples"):
    A.load_audio(p)
  p = tmp_path / "zero_bytes.mp3"
  p.write_bytes(b"")
  with pytest.raises(ValueError, match="zero_bytes.mp3.*empty"):
    A.load_audio(p)


def test_silent_audio_warns_and_still_gives_finite_windows(tmp_path):
  p = tmp_path / "silence.wav"
  wavfile.write(p, SR, np.zeros(int(1.5 * SR), np.int16))
  with pytest.warns(UserWarning, match="silence.wav.*silent"):
    y = A.load_audio(p)
  assert A.is_silent(y) and len(y) == int(1.5 * SR)
  feats = np.asarray(A.audio_features(y, 37))
  assert feats.shape == (37, 21, 80) and np.isfinite(feats).all()
  np.testing.assert_allclose(feats, np.log(A.LOG_FLOOR), rtol=1e-6)
  # Threshold: -70 dBFS RMS is silent, -50 dBFS is not; a normal tone does not warn.
  a70 = 10 ** (-70 / 20) * np.sqrt(2)
  a50 = 10 ** (-50 / 20) * np.sqrt(2)
  assert A.is_silent(tone(440.0, 1.0, amp=a70)) and not A.is_silent(tone(440.0, 1.0, amp=a50))
  assert abs(A.rms_db(tone(440.0, 1.0, amp=a50)) + 50.0) < 0.01
  q = tmp_path / "loud.wav"
  wavfile.write(q, SR, tone(440.0, 0.5))
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    A.load_audio(q)
