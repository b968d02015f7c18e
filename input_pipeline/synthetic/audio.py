"""Speech-like audio for the synthetic talking-face benchmark (numpy, deterministic per seed).

A clip's audio is a sequence of synthesised syllables: a voiced harmonic source (pitch f0
with a slow intonation contour) whose harmonic amplitudes follow a vowel's formants
(additive "formant filtering"), preceded by an optional noise-burst consonant, shaped by a
raised-cosine syllable envelope. Syllables come at about 4-7 Hz in groups of 2-6, with
pauses between groups: the envelope looks like speech and the mouth follows it.

Everything here is in samples at ``SAMPLE_RATE`` (16 kHz) and frames at ``FPS`` (25), i.e.
``SAMPLES_PER_FRAME`` = 640 samples per video frame. Frame ``t`` covers samples
``[640 t, 640 (t + 1))``.

Public API:
  synth_speech(num_frames, rng, f0=...) -> SpeechTrack (audio (T*640,) float32 + timing)
  frame_rms(audio) -> (T,) float32, RMS per frame window
  mouth_opening(rms) -> (T,) float32 in [0, 1] (the benchmark's mouth-opening label)
  viseme_tracks(track, num_frames) -> (width (T,), rounding (T,)) in [-1, 1] / [0, 1]
"""

from __future__ import annotations

import dataclasses

import numpy as np

SAMPLE_RATE = 16000
FPS = 25
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640

# Vowels: formants F1..F3 (Hz, adult averages after Peterson & Barney), and the viseme they
# show: mouth width (-1 rounded/narrow .. +1 spread/wide) and rounding (0 .. 1).
VOWELS = ("a", "e", "i", "o", "u")
FORMANTS_HZ = np.array(
  [[730, 1090, 2440], [530, 1840, 2480], [270, 2290, 3010], [570, 840, 2410], [300, 870, 2240]],
  np.float32,
)
FORMANT_BANDWIDTH_HZ = np.array([90.0, 110.0, 170.0], np.float32)
VISEME_WIDTH = np.array([0.1, 0.5, 1.0, -0.6, -1.0], np.float32)
VISEME_ROUND = np.array([0.3, 0.0, 0.0, 0.8, 1.0], np.float32)

# RMS of a syllable at loudness 1 and envelope peak; the mouth-opening label is
# RMS / RMS_REF (smoothed, clipped to [0, 1]): fixed, so opening means the same in every clip.
SYLLABLE_RMS = 0.2
RMS_REF = 0.3
SMOOTH_KERNEL = np.array([0.2, 0.6, 0.2], np.float32)
_TABLE = 512  # wavetable length (samples per pitch period table)


@dataclasses.dataclass(frozen=True)
class SpeechTrack:
  """A synthesised utterance.

  audio: (num_frames * 640,) float32 waveform at 16 kHz, in about [-1, 1].
  onsets, durations: (N,) float32 syllable start times and lengths in seconds.
  vowels: (N,) int32 index into VOWELS per syllable.
  loudness: (N,) float32 syllable peak gain in [0.55, 1].
  """

  audio: np.ndarray
  onsets: np.ndarray
  durations: np.ndarray
  vowels: np.ndarray
  loudness: np.ndarray


def _syllable_plan(total_s: float, rng: np.random.Generator):
  """Syllable onsets/durations (s): groups of 2-6 syllables at ~4-7 Hz, pauses between."""
  onsets, durs = [], []
  t = float(rng.uniform(0.0, 0.25))  # leading silence
  while True:
    n = int(rng.integers(2, 7))
    for _ in range(n):
      d = float(rng.uniform(0.13, 0.24))
      if t + d > total_s:  # the clip ends mid-syllable: keep the part that fits
        if total_s - t > 0.04:
          onsets.append(t)
          durs.append(total_s - t)
        return np.array(onsets, np.float32), np.array(durs, np.float32)
      onsets.append(t)
      durs.append(d)
      t += d + float(rng.uniform(0.0, 0.04))
    t += float(rng.uniform(0.15, 0.4))  # pause between groups
    if t >= total_s:
      return np.array(onsets, np.float32), np.array(durs, np.float32)


def _envelope(n: int, attack_frac: float) -> np.ndarray:
  """Raised-cosine attack then a cosine decay; peak 1, zero at both ends. (n,) float32."""
  na = max(1, int(round(n * attack_frac)))
  nd = max(1, n - na)
  up = 0.5 - 0.5 * np.cos(np.pi * np.arange(na) / na)
  down = 0.5 + 0.5 * np.cos(np.pi * np.arange(1, nd + 1) / nd)
  return np.concatenate([up, down])[:n].astype(np.float32)


def synth_speech(num_frames: int, rng: np.random.Generator, f0: float = 140.0) -> SpeechTrack:
  """Synthesises ``num_frames / 25`` seconds of speech-like audio.

  Args:
    num_frames: clip length in 25-fps video frames; the audio has num_frames * 640 samples.
    rng: numpy Generator; the same generator state gives the same audio.
    f0: the speaker's mean pitch in Hz (e.g. 90-230).
  Returns:
    SpeechTrack with float32 audio (num_frames * 640,) at 16 kHz.
  """
  if num_frames <= 0:
    raise ValueError(f"num_frames must be positive, got {num_frames}")
  n_total = num_frames * SAMPLES_PER_FRAME
  total_s = n_total / SAMPLE_RATE
  onsets, durs = _syllable_plan(total_s, rng)
  n_syl = len(onsets)
  vowels = rng.integers(0, len(VOWELS), size=n_syl).astype(np.int32)
  loud = rng.uniform(0.55, 1.0, size=n_syl).astype(np.float32)
  consonant = rng.random(n_syl) < 0.7
  audio = np.zeros(n_total, np.float32)
  for k in range(n_syl):
    s0 = int(round(onsets[k] * SAMPLE_RATE))
    n = min(int(round(durs[k] * SAMPLE_RATE)), n_total - s0)
    if n <= 16:
      continue
    t = np.arange(n, dtype=np.float32) / SAMPLE_RATE
    # Pitch: the speaker's f0, a per-syllable accent and a falling contour within it.
    f0k = f0 * float(rng.uniform(0.9, 1.15)) * (1.0 - 0.08 * t / max(durs[k], 1e-3))
    # Voiced source by wavetable: one period of the formant-weighted harmonic sum, read out
    # at the running phase (pitch varies a few % within a syllable).
    cycles = np.cumsum(f0k, dtype=np.float64) / SAMPLE_RATE
    nh = int(min(40, 4000 // (f0 * 1.15)))
    harm = np.arange(1, nh + 1, dtype=np.float32)
    fk = harm * f0 * 1.05
    amp = np.zeros(nh, np.float32)
    for fi, bw in zip(FORMANTS_HZ[vowels[k]], FORMANT_BANDWIDTH_HZ):
      amp += 1.0 / (1.0 + ((fk - fi) / bw) ** 2)
    amp *= harm**-0.6  # glottal spectral tilt
    grid = np.arange(_TABLE, dtype=np.float32) / _TABLE
    table = (
      amp[None, :]
      * np.sin(2 * np.pi * grid[:, None] * harm[None, :] + rng.uniform(0, 2 * np.pi, nh)[None, :])
    ).sum(-1)
    pos = (cycles % 1.0) * _TABLE
    i0 = pos.astype(np.int64)
    frac = (pos - i0).astype(np.float32)
    table = np.append(table, table[0]).astype(np.float32)
    voiced = table[i0] * (1 - frac) + table[i0 + 1] * frac
    voiced /= np.sqrt(np.mean(voiced**2)) + 1e-8
    sig = voiced * _envelope(n, float(rng.uniform(0.2, 0.4)))
    if consonant[k]:
      # Fricative/plosive onset: a short first-difference (high-passed) noise burst.
      nb = min(n, int(SAMPLE_RATE * rng.uniform(0.02, 0.05)))
      noise = np.diff(rng.standard_normal(nb + 1)).astype(np.float32) / np.sqrt(2)
      sig[:nb] = 0.5 * noise * _envelope(nb, 0.3) + sig[:nb]
    audio[s0 : s0 + n] += (SYLLABLE_RMS * np.sqrt(2) * loud[k]) * sig
  return SpeechTrack(audio=audio, onsets=onsets, durations=durs, vowels=vowels, loudness=loud)


def frame_rms(audio: np.ndarray, samples_per_frame: int = SAMPLES_PER_FRAME) -> np.ndarray:
  """RMS of each frame's window: audio (T*640,) -> (T,) float32 (frame t: samples
  640t..640t+639)."""
  audio = np.asarray(audio, np.float32)
  t = audio.shape[-1] // samples_per_frame
  x = audio[..., : t * samples_per_frame].reshape(*audio.shape[:-1], t, samples_per_frame)
  return np.sqrt(np.mean(x.astype(np.float64) ** 2, axis=-1)).astype(np.float32)


def _smooth(x: np.ndarray) -> np.ndarray:
  """3-tap smoothing along the last axis with edge replication. (..., T) -> (..., T)."""
  k = SMOOTH_KERNEL
  xp = np.concatenate([x[..., :1], x, x[..., -1:]], axis=-1)
  return (k[0] * xp[..., :-2] + k[1] * xp[..., 1:-1] + k[2] * xp[..., 2:]).astype(np.float32)


def mouth_opening(rms: np.ndarray) -> np.ndarray:
  """The mouth-opening label: smoothed frame RMS / RMS_REF, clipped to [0, 1]. (T,) -> (T,)."""
  return np.clip(_smooth(np.asarray(rms, np.float32)) / RMS_REF, 0.0, 1.0)


def viseme_tracks(track: SpeechTrack, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
  """Per-frame viseme (width in [-1, 1], rounding in [0, 1]) from the syllable at each frame.

  A frame whose centre falls inside a syllable takes that syllable's vowel viseme; frames in
  pauses are 0 (rest). Both tracks are smoothed like the opening. Returns two (T,) float32.
  """
  centres = (np.arange(num_frames, dtype=np.float32) + 0.5) / FPS
  width = np.zeros(num_frames, np.float32)
  rounding = np.zeros(num_frames, np.float32)
  for on, d, v in zip(track.onsets, track.durations, track.vowels):
    sel = (centres >= on) & (centres < on + d)
    width[sel] = VISEME_WIDTH[v]
    rounding[sel] = VISEME_ROUND[v]
  return _smooth(width), _smooth(rounding)
