# regate container image: a stripped release binary on distroless, run as non-root.
#
#   docker build -t regate:0.1.0 \
#     --build-arg VERSION=0.1.0 \
#     --build-arg REVISION="$(git rev-parse HEAD)" \
#     --build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)" .
#
# The debug symbols stripped from the binary are a stage of their own, exported as a file:
#
#   docker build --target debug-symbols --output type=local,dest=out .   # out/regate.debug
#
# docs/kubernetes.md describes the build, podman's flags included.

ARG RUST_IMAGE=docker.io/library/rust:1.95-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS build
WORKDIR /src
# Only what the release binary is built from: the build context is cut down further by
# .dockerignore, so tests, docs and target/ never reach the builder.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
# The release profile keeps line tables (debug = 1) for profiling; they go into a separate
# file, and the binary that ships is stripped and points at it by a debuglink.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin regate \
 && objcopy --only-keep-debug target/release/regate /regate.debug \
 && objcopy --strip-all --add-gnu-debuglink=/regate.debug target/release/regate /regate \
 && /regate --version

FROM scratch AS debug-symbols
COPY --from=build /regate.debug /regate.debug

FROM ${RUNTIME_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="regate" \
      org.opencontainers.image.description="mTLS sidecar proxy that authorizes every request with Rego" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}"
COPY --from=build /regate /usr/local/bin/regate
# 65532 is distroless's nonroot user; numeric, so Kubernetes' runAsNonRoot can check it.
USER 65532:65532
# 8443: the mTLS listener. 9902: the read-only health listener, when health_listen sets it
# (the chart does). The admin API (9901) binds loopback and is reached with kubectl
# port-forward, so it is not exposed.
EXPOSE 8443 9902
ENTRYPOINT ["/usr/local/bin/regate"]
CMD ["run", "--config", "/etc/regate/regate.yaml"]
