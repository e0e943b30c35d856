# The project's image for docker-compose.yml: every stage is `drops <subcommand>`.

# The producer's native page reader (native/, Rust), built as a wheel for the image's Python.
FROM python:3.11-slim AS native
RUN apt-get update \
 && apt-get install -y --no-install-recommends curl ca-certificates build-essential \
 && rm -rf /var/lib/apt/lists/* \
 && curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
ENV PATH=/root/.cargo/bin:$PATH
COPY native /native
RUN pip install --no-cache-dir maturin && maturin build --release -m /native/pyproject.toml -o /wheels

FROM python:3.11-slim
# `drops broker` and `drops bench` run a local Kafka broker: Java 17 and Maven (for its jars)
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless maven \
 && rm -rf /var/lib/apt/lists/*
# a user of its own: nothing runs as root; /data (and the processor's state volume) is its own
RUN useradd --system --create-home --uid 10001 drops \
 && mkdir -p /data/state && chown -R drops:drops /data
WORKDIR /app
COPY pyproject.toml README.md ./
COPY schemas schemas
COPY domain domain
COPY store store
COPY producers producers
COPY processors processors
COPY delivery delivery
COPY sinks sinks
COPY api api
COPY shell shell
COPY simulator simulator
COPY bench bench
COPY drops drops
RUN pip install --no-cache-dir .
COPY --from=native /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER drops
ENV DROPS_DATA_DIR=/data DROPS_KAFKA__DIST=/data/dist
ENTRYPOINT ["drops"]
