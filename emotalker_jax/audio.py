"""Audio: reading files, resampling, the log-mel frontend and its alignment to video frames.

Everything downstream of ``load_audio`` works on mono float32 waveforms in [-1, 1] at
16 kHz (``config.data.sample_rate``).

Reading
  * ``.wav``: ``scipy.io.wavfile`` (8/16/24/32/64-bit integer PCM, 32/64-bit float,
    WAVE_FORMAT_EXTENSIBLE). WAVs it cannot parse (mu-law, ADPCM, ...) go to ffmpeg.
  * anything else (mp3, m4a/aac, flac, ogg, flv, mp4, ...): the ffmpeg binary bundled
    by ``imageio-ffmpeg`` decodes the first audio stream to float32 mono at the target
    rate (ffmpeg's own resampler).
  * WAV resampling: polyphase filter, ``scipy.signal.resample_poly`` with the
    gcd-reduced ratio (44.1 kHz -> 16 kHz is up 160 / down 441).

Log-mel frontend (pure JAX, jit-able, leading batch dims allowed)
  * STFT: ``n_fft=512`` (32 ms) FFT of a 400-sample (25 ms) periodic Hann window,
    hop 160 samples (10 ms), "centred" framing: the signal is zero-padded by
    ``n_fft // 2`` on both sides, so mel frame ``j`` is centred on time ``j * hop / sr``
    and a clip of L samples has ``1 + L // hop`` frames.
  * Mel filterbank: **HTK mel scale** ``mel = 2595 log10(1 + f / 700)``, 80 triangles
    between ``fmin=55 Hz`` and ``fmax=7600 Hz`` (Wav2Lip's band), each triangle linear
    in Hz between mel-spaced edge frequencies and peaking at 1.0 at its centre (no area
    normalisation). Built here in numpy (``mel_filterbank``).
  * Output: ``log(max(mel_magnitude, 1e-5))`` (natural log of the mel-weighted STFT
    *magnitude*; the floor makes silence finite: ``log(1e-5) = -11.51``).

Alignment to video (``audio_windows``)
  Video frame ``i`` (0-based) at ``fps`` is taken to be at time ``(i + 0.5) / fps``:
  the centre of the interval ``[i / fps, (i + 1) / fps)`` it is shown for. Its audio
  window is ``W = 2 * round(window_s / (2 * hop_s)) + 1`` mel frames (21 for 0.2 s) whose
  middle frame (index ``W // 2``) is the mel frame nearest that time. Indices outside
  the clip are clamped (edge padding), so N video frames always give exactly N windows,
  and audio shorter than the video repeats its edge frames, longer audio is ignored
  past the last window.
"""

from __future__ import annotations

from collections.abc import Sequence
import math
import os
import subprocess
import warnings

import imageio_ffmpeg
import jax.numpy as jnp
import numpy as np
from scipy.io import wavfile
from scipy.signal import resample_poly

# Frontend defaults (the config only carries n_mels and window_s; these are fixed choices).
SAMPLE_RATE = 16000
N_FFT = 512
WIN_LENGTH = 400
HOP_LENGTH = 160
N_MELS = 80
FMIN = 55.0
FMAX = 7600.0
LOG_FLOOR = 1e-5
FRAME_TIME_OFFSET = 0.5  # video frame i is at (i + FRAME_TIME_OFFSET) / fps seconds

_WAV_EXTS = (".wav", ".wave")


# ---------------------------------------------------------------------------------------
# Reading and resampling
# ---------------------------------------------------------------------------------------
def ffmpeg_exe() -> str:
  """Path of the ffmpeg binary bundled with imageio-ffmpeg (or $IMAGEIO_FFMPEG_EXE)."""
  return imageio_ffmpeg.get_ffmpeg_exe()


def resample(audio: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
  """Polyphase resampling of a (L,) or (..., L) float waveform from orig_sr to target_sr Hz.

  Uses ``scipy.signal.resample_poly(x, up, down)`` with ``up/down = target/orig``
  reduced by their gcd. The output has ``ceil(L * up / down)`` samples.
  """
  orig_sr, target_sr = int(orig_sr), int(target_sr)
  if orig_sr <= 0 or target_sr <= 0:
    raise ValueError(f"sample rates must be positive, got {orig_sr} -> {target_sr}")
  audio = np.asarray(audio, np.float32)
  if orig_sr == target_sr:
    return audio
  g = math.gcd(orig_sr, target_sr)
  up, down = target_sr // g, orig_sr // g
  return resample_poly(audio, up, down, axis=-1).astype(np.float32)


def _pcm_to_float(data: np.ndarray) -> np.ndarray:
  """scipy.io.wavfile samples (left-justified ints or floats) -> float32 in [-1, 1]."""
  if data.dtype == np.uint8:
    return (data.astype(np.float32) - 128.0) / 128.0
  if np.issubdtype(data.dtype, np.signedinteger):
    scale = float(2 ** (8 * data.dtype.itemsize - 1))
    return (data.astype(np.float64) / scale).astype(np.float32)
  if np.issubdtype(data.dtype, np.floating):
    return data.astype(np.float32)
  raise ValueError(f"unsupported WAV sample type {data.dtype}")


def _read_wav(path: str) -> tuple[np.ndarray, int] | None:
  """(samples (L,) float32 mono, sample rate), or None if scipy cannot parse the file."""
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", wavfile.WavFileWarning)
      sr, data = wavfile.read(path)
  except Exception:  # noqa: BLE001 - any parse failure: let ffmpeg try (and report)
    return None
  data = _pcm_to_float(np.asarray(data))
  if data.ndim == 2:
    data = data.mean(axis=1)
  return data.astype(np.float32), int(sr)


def _decode_ffmpeg(path: str, sample_rate: int) -> np.ndarray:
  """Decodes the first audio stream of any ffmpeg-readable file to (L,) float32 mono."""
  cmd = [
    ffmpeg_exe(),
    "-nostdin",
    "-hide_banner",
    "-loglevel",
    "error",
    "-i",
    path,
    "-map",
    "0:a:0",
    "-vn",
    "-ac",
    "1",
    "-ar",
    str(int(sample_rate)),
    "-f",
    "f32le",
    "-acodec",
    "pcm_f32le",
    "pipe:1",
  ]
  proc = subprocess.run(cmd, capture_output=True, check=False)
  if proc.returncode != 0:
    err = proc.stderr.decode("utf-8", "replace").strip()
    if "matches no streams" in err:
      raise ValueError(f"audio file {path!r} has no audio stream; pass a file with an audio track")
    msg = " | ".join(m.strip() for m in err.splitlines()[-3:])
    msg = msg or f"exit status {proc.returncode}"
    raise ValueError(
      f"cannot decode audio file {path!r}: ffmpeg said: {msg}; "
      "check the file is a complete, valid audio/video file"
    )
  return np.frombuffer(proc.stdout, dtype="<f4").astype(np.float32)


def load_audio(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
  """Reads an audio (or video) file as a mono float32 waveform in [-1, 1] at ``sample_rate`` Hz.

  Returns an (L,) float32 array. Multi-channel audio is averaged to mono; float data
  outside [-1, 1] is clipped. Silent audio (see ``is_silent``) is returned as is, with
  a ``UserWarning``.

  Raises:
    FileNotFoundError: ``path`` does not exist.
    ValueError: the file cannot be decoded (the message quotes ffmpeg), has no audio
      stream, or holds no samples.
  """
  path = os.fspath(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f"audio file {path!r} not found; check the path")
  if os.path.isdir(path):
    raise ValueError(f"audio path {path!r} is a directory; pass an audio file")
  if os.path.getsize(path) == 0:
    raise ValueError(f"audio file {path!r} is empty (0 bytes); pass a file with audio")
  audio = None
  if path.lower().endswith(_WAV_EXTS):
    got = _read_wav(path)
    if got is not None:
      audio, sr = got
      if audio.size:
        audio = resample(audio, sr, sample_rate)
  if audio is None:
    audio = _decode_ffmpeg(path, sample_rate)
  if audio.size == 0:
    raise ValueError(
      f"audio file {path!r} contains no audio samples; pass a file with at least one sample"
    )
  if not np.all(np.isfinite(audio)):
    warnings.warn(f"audio file {path!r} contains NaN/inf samples; replaced by 0", stacklevel=2)
    audio = np.nan_to_num(audio, nan=0.0, posinf=0.0, neginf=0.0)
  audio = np.clip(audio, -1.0, 1.0).astype(np.float32)
  if is_silent(audio):
    warnings.warn(
      f"audio file {path!r} is silent (RMS below -60 dBFS); "
      "the audio condition will carry no speech",
      stacklevel=2,
    )
  return audio


def rms_db(audio: np.ndarray) -> float:
  """RMS level of a waveform in dBFS (full scale = 1.0); -inf for all-zero or empty."""
  audio = np.asarray(audio, np.float64)
  if audio.size == 0:
    return -math.inf
  rms = math.sqrt(float(np.mean(audio * audio)))
  return 20.0 * math.log10(rms) if rms > 0 else -math.inf


def is_silent(audio: np.ndarray, threshold_db: float = -60.0) -> bool:
  """True when the waveform's RMS level is below ``threshold_db`` dBFS (or it is empty)."""
  return rms_db(audio) < threshold_db


def frame_rms_envelope(
  audio: np.ndarray,
  num_frames: int,
  fps: float = 25.0,
  sr: int = SAMPLE_RATE,
  window_s: float | None = None,
) -> np.ndarray:
  """RMS of the waveform around each video frame: (num_frames,) float32, linear amplitude.

  Frame i's window is centred on ``(i + 0.5) / fps`` s (the same alignment as
  ``audio_windows``) and lasts ``window_s`` s (default ``1 / fps``: exactly the
  frame's own interval ``[i / fps, (i + 1) / fps)``). Samples outside the waveform
  count as silence, so frames past the end of short audio get RMS 0.
  """
  audio = np.asarray(audio, np.float64).reshape(-1)
  num_frames = int(num_frames)
  if num_frames < 0:
    raise ValueError(f"num_frames must be >= 0, got {num_frames}")
  window_s = 1.0 / fps if window_s is None else float(window_s)
  half = window_s * sr / 2.0
  centres = (np.arange(num_frames) + FRAME_TIME_OFFSET) * sr / fps
  start = np.round(centres - half).astype(np.int64)
  stop = np.round(centres + half).astype(np.int64)
  length = np.maximum(stop - start, 1)
  csum = np.concatenate([[0.0], np.cumsum(audio * audio)])
  n = audio.size
  energy = csum[np.clip(stop, 0, n)] - csum[np.clip(start, 0, n)]
  return np.sqrt(np.maximum(energy, 0.0) / length).astype(np.float32)


# ---------------------------------------------------------------------------------------
# Mel filterbank (numpy) and the log-mel frontend (JAX)
# ---------------------------------------------------------------------------------------
def hz_to_mel(hz):
  """HTK mel scale: 2595 * log10(1 + f / 700). Works on scalars and arrays."""
  return 2595.0 * np.log10(1.0 + np.asarray(hz, np.float64) / 700.0)


def mel_to_hz(mel):
  """Inverse of ``hz_to_mel``."""
  return 700.0 * (10.0 ** (np.asarray(mel, np.float64) / 2595.0) - 1.0)


def mel_center_frequencies(
  n_mels: int = N_MELS, fmin: float = FMIN, fmax: float = FMAX
) -> np.ndarray:
  """Centre frequencies (Hz) of the ``n_mels`` triangles: (n_mels,) float64."""
  edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
  return edges[1:-1]


def mel_filterbank(
  sample_rate: int = SAMPLE_RATE,
  n_fft: int = N_FFT,
  n_mels: int = N_MELS,
  fmin: float = FMIN,
  fmax: float | None = FMAX,
) -> np.ndarray:
  """HTK triangular mel filterbank: (n_fft // 2 + 1, n_mels) float32.

  Filter m rises linearly (in Hz) from edge f[m] to 1.0 at f[m + 1] and falls to 0 at
  f[m + 2], where f are ``n_mels + 2`` frequencies equally spaced on the HTK mel scale
  from ``fmin`` to ``fmax``. Evaluated at the FFT bin frequencies ``k * sr / n_fft``.
  """
  fmax = sample_rate / 2.0 if fmax is None else float(fmax)
  if not 0.0 <= fmin < fmax <= sample_rate / 2.0:
    raise ValueError(
      f"need 0 <= fmin < fmax <= sample_rate/2, got fmin={fmin}, "
      f"fmax={fmax}, sample_rate={sample_rate}"
    )
  freqs = np.arange(n_fft // 2 + 1) * sample_rate / n_fft
  edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
  lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
  rise = (freqs[:, None] - lower[None]) / (centre - lower)[None]
  fall = (upper[None] - freqs[:, None]) / (upper - centre)[None]
  fb = np.maximum(0.0, np.minimum(rise, fall))
  return fb.astype(np.float32)


def hann_window(win_length: int = WIN_LENGTH, n_fft: int = N_FFT) -> np.ndarray:
  """Periodic Hann window of ``win_length`` zero-padded (centred) to ``n_fft``: (n_fft,)."""
  if win_length > n_fft:
    raise ValueError(f"win_length {win_length} must be <= n_fft {n_fft}")
  w = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(win_length) / win_length)
  left = (n_fft - win_length) // 2
  out = np.zeros(n_fft, np.float64)
  out[left : left + win_length] = w
  return out.astype(np.float32)


def num_mel_frames(num_samples: int, hop_length: int = HOP_LENGTH) -> int:
  """Mel frames for a clip of ``num_samples`` (centred framing): 1 + L // hop."""
  return 1 + int(num_samples) // hop_length


def log_mel_spectrogram(
  audio,
  sample_rate: int = SAMPLE_RATE,
  n_fft: int = N_FFT,
  win_length: int = WIN_LENGTH,
  hop_length: int = HOP_LENGTH,
  n_mels: int = N_MELS,
  fmin: float = FMIN,
  fmax: float = FMAX,
  log_floor: float = LOG_FLOOR,
):
  """Log-mel spectrogram in JAX: audio (..., L) float in [-1, 1] -> (..., M, n_mels) float32.

  ``M = 1 + L // hop_length``; frame j is centred on ``j * hop_length / sample_rate`` s.
  Values are ``log(max(mel_magnitude, log_floor))`` (natural log). Pure and jit-able
  (all sizes are static functions of the input shape).
  """
  audio = jnp.asarray(audio, jnp.float32)
  length = audio.shape[-1]
  pad = n_fft // 2
  x = jnp.pad(audio, [(0, 0)] * (audio.ndim - 1) + [(pad, pad)])
  m = num_mel_frames(length, hop_length)
  idx = np.arange(n_fft)[None, :] + hop_length * np.arange(m)[:, None]  # (M, n_fft)
  frames = x[..., idx] * jnp.asarray(hann_window(win_length, n_fft))
  mag = jnp.abs(jnp.fft.rfft(frames, n=n_fft, axis=-1))  # (..., M, F)
  fb = jnp.asarray(mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax))
  mel = jnp.einsum("...mf,fk->...mk", mag, fb, precision="highest")
  return jnp.log(jnp.maximum(mel, log_floor)).astype(jnp.float32)


def window_length(window_s: float = 0.2, hop_s: float = HOP_LENGTH / SAMPLE_RATE) -> int:
  """Mel frames per video-frame window: the odd number 2 * round(window_s / (2 hop_s)) + 1."""
  return 2 * int(round(window_s / (2.0 * hop_s))) + 1


def window_indices(
  num_mel: int,
  num_frames: int,
  fps: float = 25.0,
  window_s: float = 0.2,
  hop_s: float = HOP_LENGTH / SAMPLE_RATE,
) -> np.ndarray:
  """Mel-frame indices of each video frame's window: (num_frames, W) int32, edge-clamped.

  Row i is centred (index W // 2) on the mel frame nearest ``(i + 0.5) / fps`` s.
  """
  if num_mel < 1:
    raise ValueError("the mel spectrogram has no frames")
  w = window_length(window_s, hop_s)
  centres = np.floor((np.arange(int(num_frames)) + FRAME_TIME_OFFSET) / fps / hop_s + 0.5)
  idx = centres.astype(np.int64)[:, None] + np.arange(w)[None] - w // 2
  return np.clip(idx, 0, num_mel - 1).astype(np.int32)


def audio_windows(
  mel,
  num_frames: int,
  fps: float = 25.0,
  window_s: float = 0.2,
  hop_s: float = HOP_LENGTH / SAMPLE_RATE,
):
  """Per-video-frame windows of a log-mel: (..., M, n_mels) -> (..., num_frames, W, n_mels).

  Window i is centred on video frame i's time ``(i + 0.5) / fps`` (see module doc);
  W = ``window_length(window_s, hop_s)`` (21 for 0.2 s at a 10 ms hop). Edge-padded,
  so any audio length gives exactly ``num_frames`` windows. Pure and jit-able with
  ``num_frames`` static.
  """
  mel = jnp.asarray(mel)
  idx = window_indices(mel.shape[-2], num_frames, fps, window_s, hop_s)
  return jnp.take(mel, jnp.asarray(idx), axis=-2)


def audio_features(
  audio,
  num_frames: int,
  fps: float = 25.0,
  window_s: float = 0.2,
  sample_rate: int = SAMPLE_RATE,
  n_mels: int = N_MELS,
):
  """Waveform (..., L) at ``sample_rate`` -> windows (..., num_frames, W, n_mels) float32."""
  if sample_rate != SAMPLE_RATE:
    hop = int(round(HOP_LENGTH * sample_rate / SAMPLE_RATE))
    n_fft = int(2 ** math.ceil(math.log2(N_FFT * sample_rate / SAMPLE_RATE)))
    win = int(round(WIN_LENGTH * sample_rate / SAMPLE_RATE))
  else:
    hop, n_fft, win = HOP_LENGTH, N_FFT, WIN_LENGTH
  mel = log_mel_spectrogram(
    audio,
    sample_rate=sample_rate,
    n_fft=n_fft,
    win_length=win,
    hop_length=hop,
    n_mels=n_mels,
    fmax=min(FMAX, sample_rate / 2.0),
  )
  return audio_windows(mel, num_frames, fps=fps, window_s=window_s, hop_s=hop / sample_rate)


def features_from_config(audio, num_frames: int, config):
  """``audio_features`` with fps, window, rate and n_mels from a config (data.*, audio.*)."""
  return audio_features(
    audio,
    num_frames,
    fps=config.data.fps,
    window_s=config.audio.window_s,
    sample_rate=config.data.sample_rate,
    n_mels=config.audio.n_mels,
  )


__all__: Sequence[str] = (
  "load_audio",
  "resample",
  "is_silent",
  "rms_db",
  "frame_rms_envelope",
  "hz_to_mel",
  "mel_to_hz",
  "mel_center_frequencies",
  "mel_filterbank",
  "hann_window",
  "log_mel_spectrogram",
  "num_mel_frames",
  "window_length",
  "window_indices",
  "audio_windows",
  "audio_features",
  "features_from_config",
  "ffmpeg_exe",
)
