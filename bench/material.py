"""Test material for the turn-taking benchmark, generated offline and deterministically.

Everything here is 8 kHz audio made from a seed, with no download:

- :func:`paused_speech` — sentences spoken by eSpeak NG (several voices and speeds), each cut
  into phrases joined by natural pauses of 150–500 ms, sentences apart by 1.5–2 s of silence,
  through 8 kHz μ-law; with the truth of where each sentence and each pause lies.
- :func:`babble`, :func:`street`, :func:`fan` — noise at a given RMS level (the benchmark
  matches the active level of the speech material, i.e. noise "at speaking level"):
  babble is several eSpeak voices mixed, offset, time-reversed or pitch-shifted (a crowd, not
  words); street is low-passed brown/pink noise under a slow amplitude modulation with
  passing-car swells; fan is pink and brown noise with a steady mains hum and its harmonics.

The same arguments give the same material: the same sentences, voices, speeds, drawn pauses and
gaps (numpy's PCG64 generator), and for street and fan the same bytes. eSpeak NG itself is not
bit-exact from one synthesis to the next (a clause may come out ~10 ms longer or shorter), so
speech and babble repeat in structure and level, not byte for byte; the truth (sentence and
pause positions) is measured on the audio actually made.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from engine.media.codec import SAMPLE_RATE, resample, ulaw_decode, ulaw_encode
from engine.tts import synthesize

__all__ = [
    "NOISES",
    "PHRASED_SENTENCES",
    "PausedSpeech",
    "active_level",
    "babble",
    "fan",
    "frame_rms",
    "paused_speech",
    "speech_level",
    "street",
]

Floats = npt.NDArray[np.float64]

PHRASED_SENTENCES: tuple[tuple[str, ...], ...] = (
    ("I would like to book a table", "for two people", "tomorrow evening."),
    ("Could you tell me", "how much the ticket costs", "for the late show?"),
    ("My flight lands in Chicago", "at half past six", "on Friday."),
    ("Please call me back", "tomorrow morning", "at nine."),
    ("Is there parking available", "near the main entrance", "of the hotel?"),
    ("I need to change", "the delivery address", "for my last order."),
    ("Our meeting has been moved", "to Thursday afternoon", "because of the holiday."),
    ("Can you send the invoice", "to my email address", "before Monday?"),
    ("I think", "there is a mistake", "on my latest bill."),
    ("The package was left", "outside the front door", "in the rain."),
    ("Do you have any rooms", "available for next weekend", "with a sea view?"),
    ("Let me check my calendar", "and get back to you", "later today."),
)
"""Sentences cut where a speaker naturally pauses; inner phrases end with a comma."""

VOICES = ("en-us", "en-us+f3", "en+m3", "en-us+f2", "en+m7")
SPEEDS = (140, 165, 190)
PAUSE_MS = (150, 500)
GAP_MS = (1500, 2000)
TRUTH_THRESHOLD = 300.0
"""Frame RMS (about −40 dBFS) above which a 20 ms frame counts as speech for the truth."""


@dataclass(frozen=True)
class PausedSpeech:
    """Sentences with pauses inside them, and where everything lies (ms from the start)."""

    ulaw: bytes
    sentences: list[tuple[int, int]] = field(default_factory=list)
    """(first speech frame, end of the last speech frame) of every sentence."""
    pauses: list[tuple[int, int]] = field(default_factory=list)
    """Every pause inside a sentence: (end of speech before it, start of speech after it)."""
    inserted_pauses_ms: list[int] = field(default_factory=list)
    """The pause drawn for each gap between phrases: speech to speech, quiet edges included
    (so it equals the measured pause unless the edges alone are longer)."""

    @property
    def duration_ms(self) -> int:
        """Length of the material."""
        return len(self.ulaw) // 8


def frame_rms(pcm: npt.NDArray[np.int16] | Floats) -> Floats:
    """RMS level of every whole 20 ms frame of ``pcm``."""
    frames = len(pcm) // 160
    x = np.asarray(pcm[: frames * 160], dtype=np.float64).reshape(frames, 160)
    rms: Floats = np.sqrt((x**2).mean(axis=1))
    return rms


def speech_level(ulaw: bytes) -> float:
    """The active speech level of ``ulaw``: RMS over its frames above the truth threshold."""
    return active_level(ulaw_decode(ulaw))


def active_level(pcm: npt.NDArray[np.int16]) -> float:
    """:func:`speech_level` of 8 kHz samples (0.0 when no frame is above the threshold)."""
    pcm = pcm.astype(np.float64)
    rms = frame_rms(pcm)
    active = rms > TRUTH_THRESHOLD
    if not active.any():
        return 0.0
    frames = pcm[: len(rms) * 160].reshape(len(rms), 160)[active]
    return float(np.sqrt((frames**2).mean()))


def _speak(text: str, voice: str, wpm: int) -> npt.NDArray[np.int16]:
    pcm, rate = synthesize(text, voice=voice, words_per_minute=wpm)
    return resample(pcm, rate, SAMPLE_RATE)


def _trim(pcm: npt.NDArray[np.int16], threshold: float = 30.0) -> npt.NDArray[np.int16]:
    """Cut leading and trailing near-silence (frames under ``threshold`` RMS)."""
    rms = frame_rms(pcm)
    loud = np.nonzero(rms > threshold)[0]
    if not len(loud):
        return pcm[:0]
    return pcm[int(loud[0]) * 160 : min(len(pcm), (int(loud[-1]) + 1) * 160)]


def _bounds(pcm: npt.NDArray[np.int16]) -> tuple[int, int]:
    """(start, end) in ms of the speech frames of ``pcm`` (frame-aligned input)."""
    loud = np.nonzero(frame_rms(pcm) > TRUTH_THRESHOLD)[0]
    return int(loud[0]) * 20, (int(loud[-1]) + 1) * 20


def _silence(ms: int) -> npt.NDArray[np.int16]:
    return np.zeros(ms * 8, dtype=np.int16)


def _frame_align(pcm: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
    pad = -len(pcm) % 160
    return np.concatenate((pcm, np.zeros(pad, dtype=np.int16)))


def paused_speech(
    sentences: int = 12,
    *,
    seed: int = 0,
    pause_ms: tuple[int, int] = PAUSE_MS,
    gap_ms: tuple[int, int] = GAP_MS,
    lead_ms: int = 600,
) -> PausedSpeech:
    """``sentences`` sentences (cycling through :data:`PHRASED_SENTENCES`) with inner pauses.

    Each sentence gets a voice from :data:`VOICES` and a speed from :data:`SPEEDS` in turn
    (so every run of the same ``sentences`` uses the same mix); every pause between its phrases
    is drawn uniformly from ``pause_ms`` and every gap after a sentence from ``gap_ms``
    (multiples of 20 ms). ``lead_ms`` of silence comes first.
    """
    rng = np.random.default_rng(seed)
    parts: list[npt.NDArray[np.int16]] = [_silence(lead_ms)]
    at = lead_ms
    out = PausedSpeech(b"")
    for i in range(sentences):
        phrases = PHRASED_SENTENCES[i % len(PHRASED_SENTENCES)]
        voice = VOICES[i % len(VOICES)]
        wpm = SPEEDS[(i // len(VOICES) + i) % len(SPEEDS)]
        pieces = [
            _frame_align(_trim(_speak(text if k == len(phrases) - 1 else text + ",", voice, wpm)))
            for k, text in enumerate(phrases)
        ]
        bounds = [_bounds(pcm) for pcm in pieces]
        sentence_start = sentence_end = 0
        for k, pcm in enumerate(pieces):
            start, end = bounds[k]
            if k == 0:
                sentence_start = at + start
            else:
                out.pauses.append((sentence_end, at + start))
            sentence_end = at + end
            parts.append(pcm)
            at += len(pcm) // 8
            if k < len(pieces) - 1:
                # The pause is measured from speech to speech: the quiet edges count in it.
                pause = 20 * int(rng.integers(-(-pause_ms[0] // 20), pause_ms[1] // 20 + 1))
                edges = (len(pcm) // 8 - end) + bounds[k + 1][0]
                out.inserted_pauses_ms.append(pause)
                parts.append(_silence(max(0, pause - edges)))
                at += max(0, pause - edges)
        out.sentences.append((sentence_start, sentence_end))
        gap = 20 * int(rng.integers(-(-gap_ms[0] // 20), gap_ms[1] // 20 + 1))
        parts.append(_silence(gap))
        at += gap
    ulaw = ulaw_encode(np.concatenate(parts))
    return PausedSpeech(ulaw, out.sentences, out.pauses, out.inserted_pauses_ms)


# -- noise --------------------------------------------------------------------------------------


def _shaped(rng: np.random.Generator, n: int, exponent: float) -> Floats:
    """Gaussian noise with power spectrum ∝ 1/f**exponent (0 white, 1 pink, 2 brown)."""
    spectrum = rng.standard_normal(n // 2 + 1) + 1j * rng.standard_normal(n // 2 + 1)
    f = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    f[0] = f[1]
    spectrum *= f ** (-exponent / 2)
    spectrum[f < 20] = 0  # no DC drift
    x: Floats = np.fft.irfft(spectrum, n)
    return x / (np.std(x) or 1.0)


def _lowpass(x: Floats, cutoff_hz: float) -> Floats:
    spectrum = np.fft.rfft(x)
    f = np.fft.rfftfreq(len(x), 1 / SAMPLE_RATE)
    spectrum /= np.sqrt(1 + (f / cutoff_hz) ** 4)  # 2nd-order Butterworth magnitude
    y: Floats = np.fft.irfft(spectrum, len(x))
    return y


def _to_ulaw(x: Floats, rms: float) -> bytes:
    scaled = x * (rms / (np.sqrt(np.mean(x**2)) or 1.0))
    return ulaw_encode(np.clip(np.round(scaled), -32768, 32767).astype(np.int16))


def babble(seconds: float, rms: float, *, seed: int = 0, talkers: int = 6) -> bytes:
    """A crowd: ``talkers`` eSpeak voices talking at once, unintelligible, at ``rms``.

    Every talker speaks the phrase material end to end with no pauses from a random offset;
    half of them are time-reversed, and each is pitch- and speed-shifted by up to ±15 %.
    """
    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE)
    texts = [" ".join(s) for s in PHRASED_SENTENCES]
    mix = np.zeros(n)
    for t in range(talkers):
        voice = VOICES[t % len(VOICES)]
        order = rng.permutation(len(texts))
        stream: list[npt.NDArray[np.int16]] = []
        length = 0
        for j in order:
            pcm = _trim(_speak(texts[j], voice, int(rng.integers(150, 200))))
            stream.append(pcm)
            length += len(pcm)
            if length > n * 1.4:
                break
        talker = np.concatenate(stream).astype(np.float64)
        shift = float(rng.uniform(0.85, 1.15))  # resample = pitch and speed shift
        shifted = resample(talker.astype(np.int16), SAMPLE_RATE, int(SAMPLE_RATE * shift)).astype(
            np.float64
        )
        if t % 2:
            shifted = shifted[::-1]
        offset = int(rng.integers(0, max(1, len(shifted) - n)))
        piece = np.resize(shifted[offset:], n)  # wraps around if short
        mix += piece / (np.sqrt(np.mean(piece**2)) or 1.0)
    return _to_ulaw(mix, rms)


def street(seconds: float, rms: float, *, seed: int = 0) -> bytes:
    """Traffic: low-passed brown and pink noise, slowly modulated, with passing-car swells."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    bed = _lowpass(0.7 * _shaped(rng, n, 2.0) + 0.3 * _shaped(rng, n, 1.0), 1200.0)
    rate = rng.uniform(0.08, 0.2)
    bed *= 10 ** (3 * np.sin(2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi)) / 20)  # ±3 dB
    cars = np.zeros(n)
    at = float(rng.uniform(0.5, 3.0))
    while at < seconds:
        width = float(rng.uniform(1.0, 2.5))  # the swell's rise-and-fall time, s
        gain_db = float(rng.uniform(6.0, 10.0))
        envelope = np.exp(-0.5 * ((t - at) / (width / 2.5)) ** 2)
        cars += envelope * (10 ** (gain_db / 20) - 1)
        at += float(rng.uniform(3.0, 7.0))
    engine_rumble = _lowpass(_shaped(rng, n, 1.0), 600.0)
    x = bed + cars * engine_rumble / (np.std(engine_rumble) or 1.0) * np.std(bed)
    return _to_ulaw(x, rms)


def fan(seconds: float, rms: float, *, seed: int = 0, mains_hz: float = 50.0) -> bytes:
    """A fan: pink and brown noise with a steady hum at ``mains_hz`` × 2 and its harmonics."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    air = _lowpass(0.6 * _shaped(rng, n, 1.0) + 0.4 * _shaped(rng, n, 2.0), 2500.0)
    hum = np.zeros(n)
    for k, amplitude in enumerate((1.0, 0.5, 0.35, 0.2, 0.1), start=1):
        hum += amplitude * np.sin(2 * np.pi * 2 * mains_hz * k * t + rng.uniform(0, 2 * np.pi))
    hum /= np.std(hum)
    blade = 1 + 0.1 * np.sin(2 * np.pi * float(rng.uniform(8, 15)) * t)  # blade-pass flutter
    return _to_ulaw(air * blade + 0.5 * hum, rms)


NOISES: dict[str, Callable[..., bytes]] = {"babble": babble, "street": street, "fan": fan}
"""The noise generators by name: ``NOISES[name](seconds, rms, seed=…)``."""
