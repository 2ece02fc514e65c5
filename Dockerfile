# syntax=docker/dockerfile:1
#
# The streamfleet image: one binary, every subcommand (worker, topics, produce, lag, ...).
#
#   docker build -t streamfleet:0.1.0 .
#
# Stage 1 builds with the Rust toolchain the project is tested with (librdkafka is compiled
# from source by rdkafka-sys, linked against the system OpenSSL and zlib). Stage 2 is
# debian:bookworm-slim with only the shared libraries the binary links (libssl3, zlib1g;
# libc6 and libgcc-s1 are in the base) and CA certificates for TLS brokers. It runs as an
# unprivileged user and has no shell tools for health checks: use `streamfleet probe URL`.

FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends pkg-config libssl-dev zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The cache mounts keep the crate registry and the target directory between builds.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p streamfleet \
 && install -m 0755 target/release/streamfleet /usr/local/bin/streamfleet

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin streamfleet
COPY --from=build /usr/local/bin/streamfleet /usr/local/bin/streamfleet
USER 10001:10001
# /metrics, /health/live and /health/ready (STREAMFLEET_HTTP_ADDR, default 0.0.0.0:8080).
EXPOSE 8080
ENTRYPOINT ["streamfleet"]
CMD ["--help"]
