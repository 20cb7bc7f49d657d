# syntax=docker/dockerfile:1
# Build: docker build -t plex-mqtt-bridge .
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked && strip target/release/plex-mqtt-bridge

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/plex-mqtt-bridge /usr/local/bin/plex-mqtt-bridge
USER nonroot:nonroot
ENTRYPOINT ["/usr/local/bin/plex-mqtt-bridge"]
