# Multi-stage build: compile with the Rust toolchain, ship only the binary and the example
# policies on a minimal, non-root runtime image. For those with a registry to pull rust and
# distroless from; scripts/build-image.sh builds the same layout (binary, its shared libraries, CA
# certificates, user 65532, policies, entrypoint and arguments) without pulling anything, and
# tests/image.rs starts it.
FROM rust:1.95-bookworm AS build
WORKDIR /src
# llvm-profdata for the profile-guided build.
RUN rustup component add llvm-tools
COPY Cargo.toml Cargo.lock clippy.toml ./
COPY src ./src
COPY engine ./engine
COPY reconciler ./reconciler
COPY benches ./benches
# The training run sends the review fixtures to a server with the shipped policies, on loopback.
COPY scripts ./scripts
COPY policies ./policies
COPY tests/fixtures ./tests/fixtures
# Instrumented build, training run, optimised build (scripts/pgo.sh; about 25 minutes): the
# server spends about a fifth less CPU per review than a plain release build (README, "Benchmarks").
RUN scripts/pgo.sh build

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/pgo/use/release/tollgate /usr/local/bin/tollgate
COPY policies /etc/tollgate/policies
USER 65532:65532
EXPOSE 8443
ENTRYPOINT ["/usr/local/bin/tollgate"]
# In a cluster the certificates come from a mounted Secret at /etc/tollgate/certs.
CMD ["serve", "--policies", "/etc/tollgate/policies", "--cert-dir", "/etc/tollgate/certs", "--log-format", "json"]
