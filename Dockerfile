# The project's image for docker-compose.yml: every stage is `drops <subcommand>`.
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
USER drops
ENV DROPS_DATA_DIR=/data DROPS_KAFKA__DIST=/data/dist
ENTRYPOINT ["drops"]
