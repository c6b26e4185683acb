# syntax=docker/dockerfile:1.7
# Images of p2p-sensor-operator, one multi-stage file with one target per image (BuildKit, the
# default builder of Docker >= 23, builds only the stages a target needs):
#
#   docker build --target sensor   -t p2p-sensor:0.1.0 .             # sensor listen|crawl|punch|relay
#   docker build --target operator -t p2p-sensor-operator:0.1.0 .    # operator run|crd
#   docker build --target kaspad   -t p2p-kaspad:2.1.0 .             # optional lab peer (slow, ~35 min cold)
#   docker build --target netem    -t p2p-netem:latest .             # tc for scripts/experiment.sh --netem
#
# The names and tags are the Helm chart's defaults (values.yaml: image.repository,
# sensorImage.repository, tag = Chart appVersion 0.1.0). One file rather than two: the sensor and
# the operator are one Cargo workspace with one lockfile and one vendor/ patch, so both builds
# share the builder stage and its cargo caches.
#
# Both runtime images are distroless/cc-debian12 by default (glibc, libgcc, CA certificates, no shell): the
# binaries link only libc, libm and libgcc_s (rusqlite's SQLite is bundled, TLS is rustls). They run
# as UID/GID 65532, the UID the operator sets in every pod's securityContext (operator/src/pod.rs
# RUN_AS_USER) and the chart's podSecurityContext, and work with a read-only root filesystem.

ARG RUST_VERSION=1.91
ARG DEBIAN_CODENAME=bookworm
# The base images are build arguments, so one recipe serves users and a machine without a
# registry: there, each is a local image with the same contents (a Debian made by debootstrap,
# Rust and protoc in the builder, glibc, libgcc and CA certificates in the runtime image), e.g.
#   docker build --build-arg BUILDER_IMAGE=localhost/p2p-builder:bookworm \
#                --build-arg RUNTIME_IMAGE=localhost/p2p-runtime:bookworm --target operator .
ARG BUILDER_IMAGE=rust:${RUST_VERSION}-${DEBIAN_CODENAME}
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot
ARG DEBIAN_IMAGE=debian:${DEBIAN_CODENAME}-slim

# --- builder: the workspace, release profile, lockfile enforced -------------------------------
FROM ${BUILDER_IMAGE} AS builder
# kaspa-p2p-lib and report/build.rs compile .proto files with protoc.
# Unpinned apt packages (hadolint DL3008): the base image tag fixes the Debian release, and a
# stable release drops superseded package versions, so exact pins would break rebuilds.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends protobuf-compiler \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# vendor/ is required: Cargo.toml's [patch.crates-io] points libp2p-swarm at vendor/.
COPY Cargo.toml Cargo.lock ./
COPY vendor ./vendor
COPY core ./core
COPY report ./report
COPY sensor ./sensor
COPY operator ./operator
# A workspace member (test support only, never built into an image); cargo needs its manifest.
COPY testkit ./testkit

FROM builder AS build-sensor
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p sensor \
    && install -D -m 0755 target/release/sensor /out/sensor

FROM builder AS build-operator
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p operator \
    && install -D -m 0755 target/release/operator /out/operator

# --- sensor ------------------------------------------------------------------------------------
# Configuration: the operator mounts its ConfigMap <fleet>-sensor-config at /etc/p2p-sensor and runs
# `sensor listen --config /etc/p2p-sensor/sensor.toml` (sidecars: `crawl`, `punch`; RelayNodes:
# `relay`); per-pod values come from SENSOR_* environment variables (SENSOR_METRICS_LISTEN,
# SENSOR_STORAGE_PATH, SENSOR_LISTEN_EXTERNAL_ADDRESS, SENSOR_RELAY_EXTERNAL_ADDRESSES, ...; every
# key and its variable: `docker run --rm p2p-sensor:0.1.0 config`). Data (SQLite, identity) lives
# in /var/lib/p2p-sensor, a volume in every pod.
FROM ${RUNTIME_IMAGE} AS sensor
COPY --from=build-sensor /out/sensor /usr/local/bin/sensor
USER 65532:65532
# Kaspa P2P listener: mainnet 16111 (testnet-10 16211, testnet-12 16311, simnet 16511, devnet 16611).
EXPOSE 16111/tcp 16611/tcp
# /metrics, /healthz, /readyz: listener 9102 (also `sensor relay`'s default), punch sidecar 9103,
# crawl sidecar 9104, the relay of a RelayNode 9105 (the operator sets it, so a host-network relay
# and host-network sensors share a node).
EXPOSE 9102/tcp 9103/tcp 9104/tcp 9105/tcp
# `sensor relay`: libp2p circuit relay v2, TCP and QUIC (UDP) 4001; 4002 = the alternate listeners
# of examples/relay.yaml (address-mapping test).
EXPOSE 4001/tcp 4001/udp 4002/tcp 4002/udp
ENTRYPOINT ["/usr/local/bin/sensor"]
CMD ["listen", "--config", "/etc/p2p-sensor/sensor.toml"]

# --- operator ----------------------------------------------------------------------------------
# Configuration: command-line flags or OPERATOR_* environment variables (`operator run --help`);
# the Helm chart passes them as args. In-cluster credentials come from the ServiceAccount.
FROM ${RUNTIME_IMAGE} AS operator
COPY --from=build-operator /out/operator /usr/local/bin/operator
USER 65532:65532
# gRPC collector (sensor and relay pods push their reports here): --collector-listen, chart ports.collector.
EXPOSE 50051/tcp
# HTTP /metrics, /healthz, /readyz: --http-listen, chart ports.http.
EXPOSE 8080/tcp
ENTRYPOINT ["/usr/local/bin/operator"]
CMD ["--help"]

# --- kaspad (optional lab peer for k3d) ------------------------------------------------------------
# Real rusty-kaspa 2.1.0 from crates.io, the version the end-to-end test uses. Slow: a cold
# `cargo install` compiles RocksDB (~35 min on 2 cores). debian-slim rather than distroless: the
# StatefulSet of k3d/manifests/kaspad.yaml resolves its peers with a small sh + getent wrapper.
FROM ${BUILDER_IMAGE} AS build-kaspad
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends protobuf-compiler clang libclang-dev \
    && rm -rf /var/lib/apt/lists/*
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    cargo install kaspad --version 2.1.0 --locked --root /out

FROM ${DEBIAN_IMAGE} AS kaspad
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build-kaspad /out/bin/kaspad /usr/local/bin/kaspad
USER 65532:65532
# devnet P2P 16611, gRPC RPC 16610, Borsh wRPC 17610 (mainnet: 16111, 16110, 17110).
EXPOSE 16611/tcp 16610/tcp 17610/tcp
ENTRYPOINT ["/usr/local/bin/kaspad"]
CMD ["--devnet", "--appdir=/tmp/kaspad", "--nologfiles", "--nodnsseed", "--disable-upnp", "--yes"]

# --- netem helper (scripts/experiment.sh --netem) --------------------------------------------
# Only `tc`: scripts/experiment.sh runs it with --network container:<k3d node> --cap-add NET_ADMIN
# --user 0:0 to shape that node's eth0 (a capability is only effective for root); the default
# user stays non-root like every other image here.
FROM ${DEBIAN_IMAGE} AS netem
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends iproute2 \
    && rm -rf /var/lib/apt/lists/*
USER 65532:65532
ENTRYPOINT ["tc"]
