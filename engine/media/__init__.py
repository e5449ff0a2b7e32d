"""The per-call media path: codec, protocol, frames, channels, VAD, playout, sessions."""
