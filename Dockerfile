# Multi-stage: build the single binary with Bun from npm (bun build --compile via scripts/build), ship it on a slim
# Debian base as a non-root user. Not built on the development machine (no container engine there).
#   docker build -t tm:0.1.0 .
#   docker run --rm tm:0.1.0 --help
#   docker run -v /etc/tm:/etc/tm:ro -e TM_SECURITY_AUTH_SECRET=... tm:0.1.0                        # TaskManager
#   docker run -v /etc/tm:/etc/tm:ro -e TM_SECURITY_AUTH_SECRET=... tm:0.1.0 jobmanager --config /etc/tm/jm.toml
FROM node:20-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY . .
RUN bash scripts/build dist/taskmanager && ./dist/taskmanager --version

FROM debian:bookworm-slim
# Mount the configuration (deploy/tm.toml, deploy/jm.toml) at /etc/tm; /var/lib/tm is where they write.
RUN groupadd --system --gid 10001 tm \
 && useradd --system --uid 10001 --gid tm --home-dir /var/lib/tm --no-create-home --shell /usr/sbin/nologin tm \
 && mkdir -p /etc/tm /var/lib/tm && chown tm:tm /var/lib/tm
COPY --from=build /src/dist/taskmanager /usr/local/bin/taskmanager
# Numeric, so that Kubernetes' runAsNonRoot can check it.
USER 10001:10001
WORKDIR /var/lib/tm
# 6123 JobManager RPC, 8081 REST API and dashboard, 6121 TaskManager data, 9249 TaskManager /metrics (deploy/tm.toml).
EXPOSE 6123 8081 6121 9249
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/taskmanager"]
# The default role, as in deploy/systemd/taskmanager.service; `jobmanager --config /etc/tm/jm.toml` for the other.
CMD ["--config", "/etc/tm/tm.toml"]
