# Tidegate tasks. Install just with `pip install rust-just` or `cargo install just`.

# List the recipes.
default:
    @just --list

# Build the release binary (target/release/tidegate).
build:
    cargo build --release

# Run every test (the README's test command).
test *ARGS:
    bash scripts/test.sh {{ARGS}}

# Build the test kube-apiserver once (cached in ~/.cache/tidegate/).
kube-apiserver:
    bash e2e/kube/build.sh

# Everything CI checks: format, lint, generated files, tests.
ci:
    bash .ci/run

# Format and lint.
lint:
    cargo fmt --all
    cargo clippy --all-targets -- -D warnings

# Regenerate the checked-in CRDs (crds/ and the chart's copy), then the rendered manifests.
crds:
    cargo run --quiet -- crds > crds/tidegate.dev.yaml
    cp crds/tidegate.dev.yaml charts/tidegate/crds/tidegate.dev.yaml
    just manifests

# Render manifests/tidegate.yaml from the Helm chart (default values).
manifests:
    bash scripts/manifests.sh > manifests/tidegate.yaml

# Build the container image with podman (on machines without a registry: local base stand-ins).
image TAG="tidegate:0.1.0":
    CONTAINERS_CONF=$(bash e2e/tools/podman.sh) podman build --pull=never -t {{TAG}} .

# Regenerate the compiler's golden files after an intended change.
golden:
    UPDATE_GOLDEN=1 cargo test --test compile_golden

# Run the gateway on a config file or directory (default: the quickstart YAML).
run CONFIG="examples/quickstart":
    cargo run --release -- run --config {{CONFIG}} --log-format text

# The quickstart: two echo upstreams plus the gateway, in one process.
quickstart:
    cargo run --release --example quickstart

# The side-by-side benchmark against nginx, HAProxy and Caddy.
bench:
    bash bench/run.sh

# Scale figures: 10k idle connections, config change to serving, reloads under load.
scale:
    bash bench/scale.sh

# Regenerate src/hot_text.ld (the hot code release builds lay out together), then rebuild.
hot-text:
    bash bench/hot_text.sh
    cargo build --release

# A profile-guided release build, trained on the benchmarks' loads: target/pgo/release/tidegate
# (needs llvm-profdata of rustc's LLVM version; see bench/README.md).
build-pgo:
    bash bench/pgo.sh

# Instructions per proxied request (callgrind): tidegate, then nginx for reference.
callgrind:
    cargo build --release
    bash bench/callgrind.sh target/release/tidegate --access-log off
    bash bench/callgrind.sh nginx

# TLS termination against nginx: full and resumed handshakes, keep-alive HTTPS (CPU per op).
bench-tls:
    cargo build --release
    bash bench/tls.sh target/release/tidegate

# L4 against HAProxy and nginx stream: TCP throughput and UDP datagrams/s (CPU per GB, per datagram).
bench-l4:
    cargo build --release
    bash bench/l4.sh target/release/tidegate
