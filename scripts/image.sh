#!/usr/bin/env bash
# Builds the tollgate image from ./Dockerfile with buildah (Debian's
# package; no daemon needed) and prints its name.
#
#   scripts/image.sh [NAME]        # default ghcr.io/tollgate-dev/tollgate:<version>
#
# Where the build stage's base image cannot be pulled (an offline machine),
# it falls back to the same two stages done here: the static musl binary
# built by cargo on this machine, then the Dockerfile's runtime stage
# (scratch + CA bundle + binary, user 65532) assembled with buildah.
# IMAGE_MODE=dockerfile|local forces one path.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml" | head -n1)"
name="${1:-ghcr.io/tollgate-dev/tollgate:$version}"
buildah=(buildah --storage-driver "${STORAGE_DRIVER:-vfs}")
target=x86_64-unknown-linux-musl
rust_image="$(sed -n 's/^ARG RUST_IMAGE=//p' "$repo/Dockerfile")"

command -v buildah >/dev/null || { echo "image.sh: buildah is not installed (apt-get install buildah)" >&2; exit 2; }

mode="${IMAGE_MODE:-}"
if [[ -z "$mode" ]]; then
  if timeout 60 "${buildah[@]}" pull -q "$rust_image" >/dev/null 2>&1; then mode=dockerfile; else
    echo "image.sh: cannot pull $rust_image (no registry access): building the binary here" >&2
    mode=local
  fi
fi

case "$mode" in
dockerfile)
  "${buildah[@]}" bud --isolation chroot --layers=false -f "$repo/Dockerfile" -t "$name" "$repo" >&2
  ;;
local)
  rustup target list --installed | grep -qx "$target" || rustup target add "$target" >&2
  command -v musl-gcc >/dev/null || { echo "image.sh: musl-gcc missing (apt-get install musl-tools)" >&2; exit 2; }
  (cd "$repo" && cargo build --release --locked --target "$target" -p tollgate-cli >&2)
  # Stripped, as the Dockerfile's `install -s` does (the release profile
  # keeps line tables for profiling).
  bin="$(mktemp -d)/tollgate"
  install -s -m 0755 "$repo/target/$target/release/tollgate" "$bin"
  # The Dockerfile's runtime stage, step for step.
  ctr="$("${buildah[@]}" from scratch)"
  trap '"${buildah[@]}" rm "$ctr" >/dev/null 2>&1 || true; rm -rf "$(dirname "$bin")"' EXIT
  "${buildah[@]}" copy --chmod 0644 "$ctr" /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt >/dev/null
  "${buildah[@]}" copy --chmod 0755 "$ctr" "$bin" /usr/local/bin/tollgate >/dev/null
  "${buildah[@]}" config --user 65532:65532 --port 8080 --port 9090 \
    --entrypoint '["/usr/local/bin/tollgate"]' --cmd '--help' "$ctr"
  "${buildah[@]}" commit -q "$ctr" "$name" >/dev/null
  ;;
*) echo "image.sh: IMAGE_MODE must be dockerfile or local" >&2; exit 2 ;;
esac
echo "$name"
