# syntax=docker/dockerfile:1
#
# plex-mqtt-bridge container image.
#
#   docker build -t plex-mqtt-bridge .
#   docker run --rm -e PLEX_MQTT_BRIDGE_MQTT_URL=mqtt://broker:1883 \
#     -e PLEX_MQTT_BRIDGE_PLEX_URL=http://192.168.1.10:32400 \
#     -e PLEX_MQTT_BRIDGE_PLEX_TOKEN_FILE=/run/secrets/plex_token -v "$PWD/plex_token.txt:/run/secrets/plex_token:ro" \
#     plex-mqtt-bridge
#   docker run --rm plex-mqtt-bridge check     # validate configuration and connectivity, then exit
#
# Base images. Builder and runtime are both Debian 12 "bookworm", so the binary is linked against the same glibc
# (2.36) it runs with.
# - Runtime: gcr.io/distroless/cc-debian12:nonroot. The binary is a dynamically linked glibc executable (rustls +
#   ring, no OpenSSL), so it needs exactly glibc, libgcc_s and the CA roots that rustls-platform-verifier reads
#   (/etc/ssl/certs/ca-certificates.crt): distroless "cc" is those and little else (about 20-25 MB: no shell, no package
#   manager, a non-root user 65532 "nonroot", a writable /tmp), i.e. the smallest attack surface that still runs a
#   glibc binary. scratch would need a static musl build (and CA roots copied in by hand); debian:12-slim would
#   work too but adds a shell, apt and ~50 MB of packages the daemon never uses.
# - Tags are pinned to a version (never `latest`). For byte-for-byte reproducible builds pin the digests as well
#   (`FROM image:tag@sha256:…`) and let Renovate/Dependabot bump them.
ARG RUST_VERSION=1.95.0

# ---------------------------------------------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
# The release profile (LTO, stripped, panic=abort) comes from Cargo.toml.
ENV CARGO_TERM_COLOR=never \
    CARGO_INCREMENTAL=0

# 1. Dependencies only, in their own layer: it is rebuilt only when Cargo.toml or Cargo.lock change, not on every
#    source edit. The crate's own targets are empty stubs here; the benchmarks' stubs stay for the second step
#    (Cargo loads every declared [[bench]], but a release build never compiles it). (If Cargo.toml ever declares explicit [[bench]],
#    [[test]] or [[example]] tables, stub their files here too: .ci/deploy-lint checks that the stubs suffice.)
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
    && echo 'fn main() {}' > src/main.rs \
    && : > src/lib.rs \
    && echo 'fn main() {}' > benches/pipeline.rs \
    && echo 'fn main() {}' > benches/sessions.rs \
    && echo 'fn main() {}' > benches/decode.rs \
    && echo 'fn main() {}' > benches/scale.rs \
    && cargo build --release --locked \
    && rm -rf src

# 2. The crate itself. `cargo clean -p` drops the stub build of this crate, so the real sources are always
#    compiled whatever their timestamps; dependencies stay cached.
COPY src ./src
RUN cargo clean --release --locked -p plex-mqtt-bridge \
    && cargo build --release --locked \
    && install -D -m 0755 target/release/plex-mqtt-bridge /out/plex-mqtt-bridge \
    && install -d -m 0700 /out/state \
    && /out/plex-mqtt-bridge --version

# ---------------------------------------------------------------------------------------------------------------
FROM gcr.io/distroless/cc-debian12:nonroot

ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="plex-mqtt-bridge" \
      org.opencontainers.image.description="Plex Media Server notifications (WebSocket / EventSource) to MQTT, with retained state for Home Assistant" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="MIT OR Apache-2.0" \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot"

COPY --from=build /out/plex-mqtt-bridge /usr/local/bin/plex-mqtt-bridge
# Where `login` writes the token and the device key and where the bridge renews the token: mount a volume here
# (a named volume starts with this directory's owner, the non-root user, and mode 0700).
COPY --from=build --chown=65532:65532 /out/state /var/lib/plex-mqtt-bridge

# The health endpoint is on by default, on loopback only, so HEALTHCHECK works out of the box without exposing
# anything. To scrape /metrics from outside the container set PLEX_MQTT_BRIDGE_HTTP_LISTEN=0.0.0.0:9184 and
# publish the port. (Environment variables beat the config file, so a `[http] listen` in a mounted config file
# is overridden by this unless the variable is set again.)
ENV PLEX_MQTT_BRIDGE_HTTP_LISTEN=127.0.0.1:9184

# distroless "nonroot": uid/gid 65532, numeric so that Kubernetes' runAsNonRoot can verify it.
USER 65532:65532

# SIGTERM makes the bridge publish `offline`, disconnect cleanly and exit 0 within 2 s (Docker waits 10 s).
STOPSIGNAL SIGTERM

# `plex-mqtt-bridge health` reads the same environment/config to find the listen address, GETs /healthz and exits
# 0 (healthy: broker and every Plex session connected) or 1; it gives up after 5 s itself. Exec form: the image
# has no shell.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/plex-mqtt-bridge", "health"]

ENTRYPOINT ["/usr/local/bin/plex-mqtt-bridge"]
