# The tollgate image: one static binary (gateway, controller, mock, validate)
# on an empty base, run as a non-root user. The chart's default image,
# ghcr.io/tollgate-dev/tollgate, is this file built from this repository:
#
#   make image                  # buildah, or docker/podman via IMAGE_BUILDER
#
# Build stage: a static musl binary (rustls only, no OpenSSL), so the final
# stage needs no libc.
ARG RUST_IMAGE=docker.io/library/rust:1.94-slim-bookworm
FROM ${RUST_IMAGE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools ca-certificates \
 && rm -rf /var/lib/apt/lists/*
RUN rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY . .
RUN cargo build --release --locked --target x86_64-unknown-linux-musl -p tollgate-cli \
 && install -s -D -m 0755 target/x86_64-unknown-linux-musl/release/tollgate /out/tollgate

# Runtime stage: nothing but the binary and the CA bundle for HTTPS providers.
FROM scratch AS runtime
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/tollgate /usr/local/bin/tollgate
# 65532: the conventional "nonroot" uid; the chart's securityContext expects
# a non-root user and a read-only root filesystem.
USER 65532:65532
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/tollgate"]
CMD ["--help"]
