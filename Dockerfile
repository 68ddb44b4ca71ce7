# Tidegate's container image: `docker build -t tidegate:0.1.0 .` (or `podman build`).
# The build stage compiles the release binary; the runtime stage is Debian slim with CA
# certificates, the binary and nothing else, run as user 65532 (non-root). It runs with a
# read-only root filesystem: Tidegate writes nothing to disk.
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
# Dependencies first, in a layer of their own: it is rebuilt only when Cargo.toml or Cargo.lock
# change, not on every change to src/. Stub targets stand in for the crate's own sources (one
# per [[bench]] the manifest declares, whatever their names). build.rs links the hot code
# together once src/hot_text.ld is there.
COPY Cargo.toml Cargo.lock build.rs ./
RUN mkdir -p src benches \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && sed -n '/^\[\[bench\]\]/,/^name/s/^name = "\(.*\)"/\1/p' Cargo.toml \
    | while read -r bench; do echo 'fn main() {}' > "benches/$bench.rs"; done \
 && cargo build --release --locked --bin tidegate \
 && rm -rf src target/release/tidegate* target/release/deps/tidegate-* \
           target/release/deps/libtidegate-* target/release/.fingerprint/tidegate-*
COPY src ./src
RUN cargo build --release --locked --bin tidegate \
 && install -D -s -m 0755 target/release/tidegate /out/tidegate

FROM debian:bookworm-slim
ARG VERSION=0.1.0
ARG SOURCE=https://github.com/tidegate/tidegate
LABEL org.opencontainers.image.title="tidegate" \
      org.opencontainers.image.description="A Kubernetes ingress controller and API gateway" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/tidegate /usr/local/bin/tidegate
# In a container the admin server must listen beyond loopback to be probed and scraped.
ENV TIDEGATE_ADMIN_ADDR=0.0.0.0:9090
USER 65532:65532
# 8080: user traffic (HTTP/1.1 and h2c); 8443: HTTPS; 9090: admin (/healthz, /readyz, /metrics, /config).
EXPOSE 8080 8443 9090
ENTRYPOINT ["tidegate"]
CMD ["run"]
