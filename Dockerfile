# Multi-stage build: compile with the Rust toolchain, ship only the binary and the example
# policies on a minimal, non-root runtime image.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock clippy.toml ./
COPY src ./src
COPY engine ./engine
COPY reconciler ./reconciler
COPY benches ./benches
RUN cargo build --release --locked --bin tollgate

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/tollgate /usr/local/bin/tollgate
COPY policies /etc/tollgate/policies
USER 65532:65532
EXPOSE 8443
ENTRYPOINT ["/usr/local/bin/tollgate"]
# In a cluster the certificates come from a mounted Secret at /etc/tollgate/certs.
CMD ["serve", "--policies", "/etc/tollgate/policies", "--cert-dir", "/etc/tollgate/certs", "--log-format", "json"]
