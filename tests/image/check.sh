#!/usr/bin/env bash
# The container image (`make test-image`; not part of `make test`, since it
# builds a second, static release binary): builds it with scripts/image.sh,
# then checks it is small, non-root, static, and runs.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
name="localhost/tollgate-check:$$"
buildah=(buildah --storage-driver "${STORAGE_DRIVER:-vfs}")
passed=0 failed=0
ok() { passed=$((passed + 1)); echo "ok   - $*"; }
nok() { failed=$((failed + 1)); echo "FAIL - $*"; }

started=$SECONDS
"$repo/scripts/image.sh" "$name" >/dev/null
ok "image built in $((SECONDS - started)) s ($name)"
cleanup() { "${buildah[@]}" rmi -f "$name" >/dev/null 2>&1 || true; }
trap cleanup EXIT

inspect() { "${buildah[@]}" inspect --type image --format "$1" "$name"; }
user="$(inspect '{{.OCIv1.Config.User}}')"
[[ "$user" == 65532:65532 ]] && ok "runs as $user (the chart's runAsUser)" || nok "user '$user'"
entry="$(inspect '{{.OCIv1.Config.Entrypoint}}')"
[[ "$entry" == "[/usr/local/bin/tollgate]" ]] && ok "entrypoint $entry" || nok "entrypoint '$entry'"

# Size: the layers as stored (vfs keeps each layer as a plain directory).
size="$("${buildah[@]}" images --format '{{.Size}}' "$name" | head -n1)"
# buildah prints SI units ("26.4 MB"); numfmt wants "26.4M".
compact="${size// /}"
bytes="$(numfmt --from=si "${compact%B}" 2>/dev/null || echo 0)"
if (( bytes > 0 && bytes < 40 * 1000 * 1000 )); then ok "image size $size (< 40 MB)"
else nok "image size '$size'"; fi

ctr="$("${buildah[@]}" from -q "$name")"
mnt="$("${buildah[@]}" mount "$ctr")"
files="$(cd "$mnt" && find . -type f | sort | paste -sd' ')"
[[ "$files" == "./etc/ssl/certs/ca-certificates.crt ./usr/local/bin/tollgate" ]] &&
  ok "only the binary and the CA bundle: $files" || nok "files: $files"
if file "$mnt/usr/local/bin/tollgate" | grep -q 'statically linked\|static-pie linked'; then
  ok "binary is static: $(file -b "$mnt/usr/local/bin/tollgate" | cut -d, -f1-2)"
else nok "binary is not static: $(file -b "$mnt/usr/local/bin/tollgate")"; fi
"${buildah[@]}" umount "$ctr" >/dev/null
if out="$("${buildah[@]}" run --isolation chroot "$ctr" -- /usr/local/bin/tollgate --version 2>&1)" &&
  [[ "$out" == tollgate* ]]; then ok "runs in the image: $out"
else nok "tollgate --version in the image: $out"; fi
if out="$("${buildah[@]}" run --isolation chroot "$ctr" -- /usr/local/bin/tollgate validate /dev/null 2>&1)"; then
  ok "validate runs as uid 65532 in the image"
else nok "validate in the image: $out"; fi
"${buildah[@]}" rm "$ctr" >/dev/null

echo "image: $passed passed, $failed failed"
(( failed == 0 ))
