# Kopilka: one image, `kopilka serve` by default (override the command for `worker`,
# `migrate` or `admin …`). Not built in this repository's CI (no Docker engine there);
# kept correct by reading.

FROM rust:1.95-slim-bookworm AS builder
WORKDIR /src
# sqlx's compile-time checked queries (when a crate uses them) read the committed .sqlx/
# metadata, never a database.
ENV SQLX_OFFLINE=true \
    CARGO_TERM_COLOR=never
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin kopilka \
    && cp target/release/kopilka /usr/local/bin/kopilka

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates tini \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin kopilka
WORKDIR /app
COPY --from=builder /usr/local/bin/kopilka /usr/local/bin/kopilka
COPY config/ /app/config/
USER kopilka
ENV KOPILKA_ENV=production \
    KOPILKA_CONFIG_DIR=/app/config \
    KOPILKA__SERVER__ADDR=0.0.0.0:8080
# On 0.0.0.0 production refuses to start until it knows where client IPs come from:
# KOPILKA__SERVER__TRUSTED_PROXIES + KOPILKA__SERVER__CLIENT_IP_HEADER behind a proxy or
# CDN, or KOPILKA__SERVER__CLIENT_IP=peer when readers reach the container directly.
EXPOSE 8080
# tini forwards SIGTERM so in-flight requests finish (graceful shutdown).
ENTRYPOINT ["/usr/bin/tini", "--", "kopilka"]
CMD ["serve"]
