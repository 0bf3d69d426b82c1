"""A local stand-in for hosted speech providers, used by integration, chaos and benchmark runs.

One Starlette app serves every emulated vendor under its own path prefix (`/slng`,
`/smallest`, later `/deepgram`, `/openai`, ...) plus an admin surface under `/_emulator`:

- `config`  — `EmulatorConfig`, the dials a test sets at start-up (and partly at runtime);
- `dials`   — what every vendor shares: concurrency cap, fault injection, latency, request log;
- `audio`   — real, decodable audio for TTS answers and canned transcripts for STT answers;
- `slng`    — SLNG's per-model and bridge HTTP routes and error shapes (`slng_tts`,
  `slng_stt`: what each model family accepts and answers);
- `smallest` — Smallest AI's Lightning TTS over HTTP and SSE, the retired routes' 410
  (`smallest_pulse`: Pulse STT; `smallest_wire`: auth, limits and Smallest's error bodies);
- `app`     — `create_app()`: mounts the vendors and the admin endpoints;
- `server`  — `serve()` and a `python -m emulator.server` entry point.

Adding a vendor is one module exposing `PREFIX` and `routes(dials)`, listed in `app.VENDORS`.
"""
