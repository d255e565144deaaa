# Multi-stage: build the single binary with Bun from npm, ship it on a slim Debian base.
FROM node:20-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY . .
RUN bash scripts/build dist/taskmanager

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 tm
COPY --from=build /src/dist/taskmanager /usr/local/bin/taskmanager
USER tm
# 6123: JobManager RPC; data port: set taskmanager.data.port to a fixed value to expose it.
EXPOSE 6123
ENTRYPOINT ["/usr/local/bin/taskmanager"]
CMD ["--config", "/etc/tm/tm.toml"]
