# speechbatch: one image for every role (api, worker, beat, migrate, emulator, CLI).
#   docker build -t speechbatch .
#   docker run --rm speechbatch --help
# The role is the command: ENTRYPOINT is the `speechbatch` console script, CMD picks the role.

# --- build: install the project and its dependencies into a virtualenv ------------------------
FROM python:3.11-slim AS build

# A compiler only in this stage, for any dependency that has no wheel for the platform.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# Metadata first (README.md is the project's declared readme; setuptools needs it to build).
COPY pyproject.toml README.md ./
COPY speechbatch/ speechbatch/
COPY jobs/ jobs/
COPY workers/ workers/
COPY storage/ storage/
COPY emulator/ emulator/
RUN pip install --no-cache-dir ".[vad]"

# --- runtime -----------------------------------------------------------------------------------
FROM python:3.11-slim

# espeak-ng: the offline `local` TTS engine; libsndfile1: soundfile's audio codecs.
RUN apt-get update \
    && apt-get install -y --no-install-recommends espeak-ng libsndfile1 \
    && rm -rf /var/lib/apt/lists/*

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

COPY --from=build /opt/venv /opt/venv

# The Alembic migrations ship inside the `jobs` package (package data), so the installed
# venv is all `speechbatch migrate` needs.
WORKDIR /app

RUN groupadd --system --gid 10001 speechbatch \
    && useradd --system --uid 10001 --gid speechbatch --home-dir /app --shell /usr/sbin/nologin speechbatch \
    && mkdir -p /app/.speechbatch \
    && chown speechbatch:speechbatch /app/.speechbatch
# /app/.speechbatch holds local mode's embedded defaults (SQLite + objects) for one-off CLI runs.
ENV SPEECHBATCH_HOME=/app/.speechbatch
USER speechbatch

EXPOSE 8000
ENTRYPOINT ["speechbatch"]
CMD ["api", "--host", "0.0.0.0"]
