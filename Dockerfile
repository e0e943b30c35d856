# The project's image for docker-compose.yml: every stage is `drops <subcommand>`.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY schemas schemas
COPY domain domain
COPY producers producers
COPY processors processors
COPY sinks sinks
COPY api api
COPY simulator simulator
COPY store store
COPY shell shell
COPY drops drops
RUN pip install --no-cache-dir .
ENTRYPOINT ["drops"]
