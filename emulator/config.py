"""The emulator's dials: what a test chooses at start-up and what it may change at runtime.

`EmulatorConfig` is immutable; `PATCH /_emulator/config` builds a new one with
`with_changes`, which accepts only the runtime fields and checks their types and ranges.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

FAULT_KINDS = ("500", "503", "429", "timeout")
# Answers that are 200s but not what was asked for (issue 9); see emulator/faults.py.
TTS_ANSWER_FAULTS = ("html", "random", "lying_wav", "long_flac", "huge", "drip", "cut")
_SPOILED_TIMES = ("nan", "negative", "unordered")
STT_ANSWER_FAULTS = ("html", *_SPOILED_TIMES, "huge_transcript", "huge", "drip", "cut")
ANSWER_FAULTS = tuple(dict.fromkeys(TTS_ANSWER_FAULTS + STT_ANSWER_FAULTS))

# Fields `PATCH /_emulator/config` may change; limits, keys and the seed are fixed per process.
RUNTIME_FIELDS = frozenset(
    {
        "latency_ms",
        "latency_jitter_ms",
        *("ttfb_ms", "realtime_factor"),
        "concurrency",
        "rate_limit_rps",
        "fault_rate",
        "fault_kinds",
        "retry_after_s",
        "timeout_s",
        "answer_fault",
        "huge_bytes",
        "drip_interval_s",
        "batch_seconds_per_audio_second",
        "smallest_tts_concurrency",
        "smallest_stt_per_minute",
        *("ws_audio", "ws_drop_every", "slng_ws_sessions", "smallest_ws_connections"),
        *("slng_ws_idle_s", "smallest_ws_idle_s"),
    }
)
_INTEGERS = frozenset(
    {"concurrency", "huge_bytes", "smallest_tts_concurrency", "smallest_stt_per_minute"}
    | {"ws_drop_every", "slng_ws_sessions", "smallest_ws_connections"}
)
# How SLNG's WebSocket TTS sends audio: both framings exist in the wild (providers.md §1.8);
# "route" sends raw binary frames on the bridges and base64 `audio_chunk` on per-model routes.
WS_AUDIO_FRAMINGS = ("route", "base64", "binary")


class ConfigError(ValueError):
    """A configuration change names an unknown field or carries an unusable value."""


@dataclass(frozen=True)
class EmulatorConfig:
    """How the emulator behaves; the defaults answer every request at once and correctly."""

    # A plain answer waits latency_ms (jittered by up to latency_jitter_ms either way) and is
    # sent whole. A streamed TTS answer (Smallest SSE and WS, SLNG WS; emulator/pacing.py)
    # sends its first chunk at ttfb_ms (same jitter) and its last at latency_ms, and, when
    # realtime_factor > 0, no faster than that many audio seconds per second (0: no limit);
    # a plain TTS answer then also waits until all of its audio could have been made.
    latency_ms: float = 0
    latency_jitter_ms: float = 0
    ttfb_ms: float = 0
    realtime_factor: float = 0
    # In-flight requests allowed per API key; 0 means unlimited.
    concurrency: int = 0
    # Requests/s allowed per API key (a token bucket holding one second's worth, at least 1,
    # as vendors' "N per second" limits usually are); 0 means unlimited. Over it: 429.
    rate_limit_rps: float = 0.0
    # Probability that a request admitted past the cap gets one of `fault_kinds`.
    fault_rate: float = 0.0
    fault_kinds: tuple[str, ...] = FAULT_KINDS
    # Sent as Retry-After with injected 429s and with concurrency-cap 429s.
    retry_after_s: float = 1.0
    # How long a "timeout" fault holds the request before answering 504.
    timeout_s: float = 30.0
    # Every otherwise-successful answer misbehaves this way ("" = none; ANSWER_FAULTS, kinds
    # that do not apply to a route leave it alone); TTS text may pick one per request with
    # `[[answer:KIND]]`.
    answer_fault: str = ""
    # Size of a "huge" answer (streamed, never held) and the pause between "drip" bytes.
    huge_bytes: int = 200 * 1024 * 1024
    drip_interval_s: float = 2.0
    # How long an SLNG batch job runs per second of its audio (0: DONE at once).
    batch_seconds_per_audio_second: float = 0.0
    # Smallest's own per-key limits (providers.md §2.4-2.5), refused in Smallest's shapes:
    # TTS requests in flight (the account-wide 1) and Pulse requests a minute per model;
    # 0 lifts either, e.g. for a benchmark at another cap.
    smallest_tts_concurrency: int = 1
    smallest_stt_per_minute: int = 25
    # WebSocket sessions (emulator/slng_ws.py, emulator/smallest_ws.py): SLNG's audio framing
    # (WS_AUDIO_FRAMINGS), every Nth utterance dropped mid-way (0: never), SLNG sessions open
    # at once per key (0: unlimited; over it: `rate_limit`), Smallest's 5 connections per key
    # (providers.md §2.5), and the idle time after which each vendor closes a silent session.
    ws_audio: str = "route"
    ws_drop_every: int = 0
    slng_ws_sessions: int = 0
    smallest_ws_connections: int = 5
    slng_ws_idle_s: float = 120.0
    smallest_ws_idle_s: float = 60.0
    # Empty means any non-empty Bearer token is accepted.
    api_keys: frozenset[str] = frozenset()
    max_text_chars: int = 2000
    max_audio_bytes: int = 25 * 1024 * 1024
    seed: int | None = None

    def __post_init__(self) -> None:
        _check_runtime_values(self)

    def with_changes(self, changes: dict[str, Any]) -> EmulatorConfig:
        """A copy with `changes` applied; raises ConfigError for fixed or unknown fields."""
        unknown = sorted(set(changes) - RUNTIME_FIELDS)
        if unknown:
            raise ConfigError(f"cannot change at runtime: {', '.join(unknown)}")
        clean: dict[str, Any] = {}
        for name, value in changes.items():
            if name == "fault_kinds":
                if not isinstance(value, list | tuple) or not all(
                    isinstance(v, str) for v in value
                ):
                    raise ConfigError("fault_kinds must be a list of strings")
                clean[name] = tuple(value)
            elif name in _INTEGERS:
                if not isinstance(value, int) or isinstance(value, bool):
                    raise ConfigError(f"{name} must be an integer")
                clean[name] = value
            elif name in {"answer_fault", "ws_audio"}:
                if not isinstance(value, str):
                    raise ConfigError(f"{name} must be a string")
                clean[name] = value
            else:
                if not isinstance(value, int | float) or isinstance(value, bool):
                    raise ConfigError(f"{name} must be a number")
                clean[name] = float(value)
        try:
            return dataclasses.replace(self, **clean)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc

    def public_view(self) -> dict[str, Any]:
        """The config as JSON-ready data, with the API keys reduced to a count."""
        view = dataclasses.asdict(self)
        view["fault_kinds"] = list(self.fault_kinds)
        view["api_keys"] = len(self.api_keys)
        return view


def config_from_options(
    *, fault_kinds: str, api_keys: tuple[str, ...], environ: dict[str, str], **values: Any
) -> EmulatorConfig:
    """Build a config from command-line values (`speechbatch emulator`).

    `fault_kinds` is comma-separated; keys may also come from `EMULATOR_API_KEYS`
    (comma-separated), which, unlike arguments, `ps` does not show.
    """
    from_env = environ.get("EMULATOR_API_KEYS", "").split(",")
    keys = frozenset(k.strip() for k in (*api_keys, *from_env) if k.strip())
    kinds = tuple(k.strip() for k in fault_kinds.split(",") if k.strip())
    return EmulatorConfig(fault_kinds=kinds, api_keys=keys, **values)


def _check_runtime_values(config: EmulatorConfig) -> None:
    numbers = {
        "latency_ms": config.latency_ms,
        "latency_jitter_ms": config.latency_jitter_ms,
        "ttfb_ms": config.ttfb_ms,
        "realtime_factor": config.realtime_factor,
        "retry_after_s": config.retry_after_s,
        "timeout_s": config.timeout_s,
        "rate_limit_rps": config.rate_limit_rps,
        "drip_interval_s": config.drip_interval_s,
        "batch_seconds_per_audio_second": config.batch_seconds_per_audio_second,
        "slng_ws_idle_s": config.slng_ws_idle_s,
        "smallest_ws_idle_s": config.smallest_ws_idle_s,
    }
    for name, value in numbers.items():
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite number >= 0")
    if config.concurrency < 0:
        raise ValueError("concurrency must be >= 0")
    if not 0.0 <= config.fault_rate <= 1.0:
        raise ValueError("fault_rate must be between 0 and 1")
    unknown = sorted(set(config.fault_kinds) - set(FAULT_KINDS))
    if unknown:
        raise ValueError(f"unknown fault kinds {unknown}; known: {list(FAULT_KINDS)}")
    if config.answer_fault and config.answer_fault not in ANSWER_FAULTS:
        raise ValueError(f"unknown answer_fault {config.answer_fault!r}; known: {ANSWER_FAULTS}")
    if config.ws_audio not in WS_AUDIO_FRAMINGS:
        raise ValueError(f"unknown ws_audio {config.ws_audio!r}; known: {WS_AUDIO_FRAMINGS}")
    for name in (
        *("huge_bytes", "smallest_tts_concurrency", "smallest_stt_per_minute"),
        *("ws_drop_every", "slng_ws_sessions", "smallest_ws_connections"),
    ):
        if getattr(config, name) < 0:
            raise ValueError(f"{name} must be >= 0")
    if config.fault_rate > 0 and not config.fault_kinds:
        raise ValueError("fault_rate > 0 needs at least one fault kind")
