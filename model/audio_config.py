"""Audio settings: one frozen object per dataset preset.

This is the single source of truth for how audio becomes a log-mel spectrogram. It is saved in
every artifact's manifest and read back by the service, so training and serving can never drift
apart (the same idea as a Hugging Face feature-extractor config saved beside the weights).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["PRESETS", "AudioConfig", "get_preset"]


class AudioConfig(BaseModel):
    """Front-end settings of one model; values as in the authors' configs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="preset name, e.g. 'vggsound'")
    sample_rate: int = Field(gt=0, description="audio is resampled to this rate before the STFT")
    window_ms: float = Field(gt=0, description="Hann window length in milliseconds")
    hop_ms: float = Field(gt=0, description="hop length in milliseconds")
    clip_seconds: float = Field(gt=0, description="length of one network input view")
    num_frames: int = Field(gt=0, description="frames per view (short clips are padded to it)")
    n_mels: int = Field(default=128, gt=0)
    n_fft: int = Field(default=2048, gt=0)
    fmin: float = Field(default=0.0, ge=0)
    fmax: float | None = Field(default=None, description="None means sample_rate / 2")
    log_offset: float = Field(default=1e-6, gt=0, description="log(mel + log_offset)")
    test_views: int = Field(
        default=1, gt=0, description="evenly spaced views averaged at test time"
    )

    @model_validator(mode="before")
    @classmethod
    def _retired_keys(cls, values: Any) -> Any:
        """Run configs saved before log-mel smoothing was removed list it switched off
        (``smooth_frames: 1``): read them as the plain front-end they are. A config or manifest
        that smoothed is refused, as any unknown field is."""
        if isinstance(values, dict) and values.get("smooth_frames") == 1:
            values = {k: v for k, v in values.items() if k != "smooth_frames"}
        return values

    @property
    def win_length(self) -> int:
        """Window length in samples (Python's round, as the reference)."""
        return round(self.window_ms * self.sample_rate / 1000)

    @property
    def hop_length(self) -> int:
        """Hop length in samples."""
        return round(self.hop_ms * self.sample_rate / 1000)

    @property
    def clip_samples(self) -> int:
        """Samples in one view; the spectrogram is taken of one sample fewer."""
        return round(self.sample_rate * self.clip_seconds)

    @property
    def mel_fmax(self) -> float:
        """Upper edge of the mel filterbank."""
        return self.sample_rate / 2 if self.fmax is None else self.fmax

    def resolved(self) -> dict[str, Any]:
        """Every field with defaults resolved (``fmax`` in Hz): what a client computing the same
        log-mels needs, as ``GET /models`` and ``/v2`` model metadata publish it."""
        return {**self.model_dump(), "fmax": self.mel_fmax}


PRESETS: dict[str, AudioConfig] = {
    cfg.name: cfg
    for cfg in (
        AudioConfig(
            name="vggsound",
            sample_rate=16000,
            window_ms=20,
            hop_ms=10,
            clip_seconds=5.119,
            num_frames=512,
            test_views=2,
        ),
        AudioConfig(
            name="epic_sounds",
            sample_rate=24000,
            window_ms=10,
            hop_ms=5,
            clip_seconds=2.08,
            num_frames=416,
            test_views=5,
        ),
        AudioConfig(
            name="epic_kitchens_100",
            sample_rate=24000,
            window_ms=10,
            hop_ms=5,
            clip_seconds=2.08,
            num_frames=416,
            test_views=5,
        ),
        AudioConfig(
            name="speech_commands",
            sample_rate=16000,
            window_ms=5,
            hop_ms=2,
            clip_seconds=1.023,
            num_frames=512,
            test_views=1,
        ),
        AudioConfig(
            name="urbansound8k",
            sample_rate=16000,
            window_ms=20,
            hop_ms=10,
            clip_seconds=4.16,
            num_frames=416,
            test_views=2,
        ),
        AudioConfig(
            name="nsynth",
            sample_rate=16000,
            window_ms=20,
            hop_ms=10,
            clip_seconds=4.16,
            num_frames=416,
            test_views=1,
        ),
    )
}


def get_preset(name: str) -> AudioConfig:
    """Look up a preset by name, with a message listing the valid names."""
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown audio preset {name!r}; known: {', '.join(PRESETS)}") from None
