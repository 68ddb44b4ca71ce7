#!/usr/bin/env bash
# Makes podman usable for the image tests on machines that reach no image registry (ours):
# installs podman/buildah/runc/mmdebstrap from Debian, writes a containers.conf that works here
# (runc, explicit ulimits), and builds local stand-ins for the two public base images the
# Dockerfile names, when they are not in the local image store:
#   docker.io/library/debian:bookworm-slim  (mmdebstrap from this machine's own apt sources)
#   docker.io/library/rust:<V>-bookworm     (that + gcc + this machine's Rust toolchain and CA store;
#                                            tagged with the Dockerfile's RUST_VERSION too)
# so that the unchanged Dockerfile builds with `podman build --pull=never`. Where the real images
# can be pulled (or `docker` runs), none of this is needed. Idempotent; ~1-3 min and ~2 GB the
# first time, then a no-op. Prints the containers.conf path:
# usage: export CONTAINERS_CONF=$(bash e2e/tools/podman.sh)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
W=${TIDEGATE_OCI_DIR:-${HOME}/.cache/tidegate/oci}
mkdir -p "$W"
need=()
for t in podman buildah runc mmdebstrap; do command -v "$t" >/dev/null || need+=("$t"); done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]} (apt-get)" >&2
  apt-get -o DPkg::Lock::Timeout=600 update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq "${need[@]}" >&2
fi
nofile=$(ulimit -Hn)
{ [ "$nofile" = unlimited ] || [ "$nofile" -gt 65536 ]; } && nofile=65536
cat > "$W/containers.conf" <<CONF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=4096:4096"]
[engine]
runtime = "runc"
CONF
export CONTAINERS_CONF="$W/containers.conf"

if ! podman image exists docker.io/library/debian:bookworm-slim; then
  echo "making a stand-in for debian:bookworm-slim" >&2
  src=$(find /etc/apt/sources.list.d -name '*.sources' 2>/dev/null | sort | head -n 1)
  [ -f "$W/bookworm-slim.tar" ] || mmdebstrap --quiet --variant=minbase --mode=root bookworm \
    "$W/bookworm-slim.part.tar" "${src:-/etc/apt/sources.list}" >&2
  [ -f "$W/bookworm-slim.tar" ] || mv "$W/bookworm-slim.part.tar" "$W/bookworm-slim.tar"
  podman import --change 'CMD ["bash"]' "$W/bookworm-slim.tar" docker.io/library/debian:bookworm-slim >&2
fi

rust_version=$(rustc --version | awk '{print $2}')
rust_mm=${rust_version%.*}
wanted=$(sed -n 's/^ARG RUST_VERSION=//p' "$ROOT/Dockerfile" | head -n 1)
if ! podman image exists "docker.io/library/rust:$rust_mm-bookworm"; then
  echo "making a stand-in for rust:$rust_mm-bookworm from this machine's toolchain" >&2
  sysroot=$(rustc --print sysroot)
  c=$(buildah from --pull=never docker.io/library/debian:bookworm-slim)
  buildah run --isolation chroot "$c" -- sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends gcc libc6-dev ca-certificates pkg-config make >/dev/null && rm -rf /var/lib/apt/lists/*' >&2
  # This machine reaches package registries through its own CA store: trust it inside too.
  if [ -d /usr/local/share/ca-certificates ]; then
    buildah copy "$c" /usr/local/share/ca-certificates/ /usr/local/share/ca-certificates/ >&2
  fi
  buildah run --isolation chroot "$c" -- update-ca-certificates >&2
  buildah copy "$c" "$sysroot" /usr/local/rustup/toolchains/host >&2
  # shellcheck disable=SC2016  # $t expands inside the container's shell
  buildah run --isolation chroot "$c" -- sh -c 'mkdir -p /usr/local/cargo/bin && for t in cargo rustc rustdoc rustfmt cargo-clippy clippy-driver cargo-fmt; do ln -sf /usr/local/rustup/toolchains/host/bin/$t /usr/local/cargo/bin/$t; done' >&2
  buildah config --env RUSTUP_HOME=/usr/local/rustup --env CARGO_HOME=/usr/local/cargo \
    --env PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --cmd bash "$c" >&2
  buildah commit -q "$c" "docker.io/library/rust:$rust_mm-bookworm" >&2
  buildah rm "$c" >/dev/null
fi
for t in "$rust_version-bookworm" "${wanted:-$rust_mm}-bookworm"; do
  podman image exists "docker.io/library/rust:$t" ||
    podman tag "docker.io/library/rust:$rust_mm-bookworm" "docker.io/library/rust:$t"
done
echo "$W/containers.conf"
