# regate container image: a static-ish release binary on a distroless base, run as non-root.
# Build: docker build -t regate .
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin regate

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/regate /usr/local/bin/regate
USER nonroot
EXPOSE 8443
ENTRYPOINT ["/usr/local/bin/regate"]
CMD ["run", "--config", "/etc/regate/regate.yaml"]
