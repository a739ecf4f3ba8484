#!/usr/bin/env bash
# Build the end-to-end test binaries from source (kube-apiserver, kubectl,
# etcd, helm) into a cache outside the repo, keyed by the pinned versions.
#
#   tests/k8s/build.sh            # build what is missing; last stdout line = bin dir
#
# Pins live in the three Go modules beside this script (kube/, etcd/, helm/;
# see README.md for why three; pin.sh re-pins). The cache key hashes their
# go.mod (comments aside) and go.sum, the Go toolchain version, the target
# platform and RECIPE below, so a version bump (or a change of build flags)
# lands in a new directory and rebuilds; the warm path (all four binaries
# present) runs no go build at all.
#
# Environment:
#   TOLLGATE_K8S_CACHE   cache root (default $HOME/.cache/tollgate/k8s)
#   TOLLGATE_K8S_JOBS    go build -p / GOMAXPROCS (default 2)
#   GOCACHE, GOMODCACHE, GOPROXY  honoured as usual
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache_root="${TOLLGATE_K8S_CACHE:-$HOME/.cache/tollgate/k8s}"
jobs="${TOLLGATE_K8S_JOBS:-2}"
# Bump when the build flags below change so old binaries are not reused.
RECIPE="cgo0-trimpath-sw-ldflagsX-v1"
BINS=(kube-apiserver kubectl etcd helm)

log() { echo "build.sh: $*" >&2; }

command -v go >/dev/null || { log "go not found in PATH"; exit 1; }
# Go only tells its version through go itself; `go env` is cheap (~10 ms).
goversion="$(GOTOOLCHAIN=local go env GOVERSION GOOS GOARCH | tr '\n' ' ')"

key="$(
  {
    echo "$RECIPE"
    echo "$goversion"
    for m in kube etcd helm; do
      echo "== $m"
      # Comment lines do not change what gets built.
      grep -v '^[[:space:]]*//' "$here/$m/go.mod"
      cat "$here/$m/go.sum"
    done
  } | sha256sum | cut -c1-16
)"
out="$cache_root/$key"
bin="$out/bin"

have_all() {
  local b
  for b in "${BINS[@]}"; do [[ -x "$bin/$b" ]] || return 1; done
}

if have_all; then
  echo "$bin"
  exit 0
fi

mkdir -p "$bin"
# One builder per key: concurrent test runs wait for the first one.
exec 9>"$out/.lock"
if ! flock -n 9; then
  log "another build for $key is running; waiting (up to 60 min)"
  flock -w 3600 9 || { log "timed out waiting for the build lock"; exit 1; }
fi
if have_all; then
  echo "$bin"
  exit 0
fi

export GOTOOLCHAIN=local CGO_ENABLED=0 GOMAXPROCS="$jobs"
# readonly: the committed go.sum files must be complete; never rewrite them.
export GOFLAGS="${GOFLAGS:-} -mod=readonly"

modver() { (cd "$here/$1" && go list -m -f '{{.Version}}' "$2"); }

build() { # module-dir binary-name package ldflags...
  local dir="$1" name="$2" pkg="$3" ld="$4"
  if [[ -x "$bin/$name" ]]; then return 0; fi
  local start=$SECONDS
  log "building $name ($pkg) ..."
  (cd "$here/$dir" && go build -p "$jobs" -trimpath -ldflags "-s -w $ld" \
      -o "$bin/.$name.tmp" "$pkg")
  mv -f "$bin/.$name.tmp" "$bin/$name"
  log "built $name in $((SECONDS - start))s"
}

total_start=$SECONDS
log "cache key $key ($goversion) -> $bin"

# Kubernetes: stamp the version the way hack/lib/version.sh does, so
# `kubectl version` and the apiserver's /version report the real release.
kver="$(modver kube k8s.io/kubernetes)"          # e.g. v1.35.4
kmaj="${kver#v}"; kmaj="${kmaj%%.*}"
kmin="${kver#v*.}"; kmin="${kmin%%.*}"
kld=""
for p in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
  kld+=" -X $p.gitVersion=$kver -X $p.gitMajor=$kmaj -X $p.gitMinor=$kmin"
  kld+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
done
build kube kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver "$kld"
build kube kubectl k8s.io/kubernetes/cmd/kubectl "$kld"

# etcd: the server module's root package is the etcd binary's main.
ever="$(modver etcd go.etcd.io/etcd/server/v3)"
build etcd etcd go.etcd.io/etcd/server/v3 \
  "-X go.etcd.io/etcd/api/v3/version.GitSHA=$ever"

# helm: the same -X flags as helm's own Makefile.
hver="$(modver helm helm.sh/helm/v3)"
hk8s="$(modver helm k8s.io/client-go)"             # v0.37.0 -> 1.37
hmin="${hk8s#v0.}"; hmin="${hmin%%.*}"
hld="-X helm.sh/helm/v3/internal/version.version=$hver"
hld+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for p in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
  hld+=" -X $p.k8sVersionMajor=1 -X $p.k8sVersionMinor=$hmin"
done
build helm helm helm.sh/helm/v3/cmd/helm "$hld"

cat >"$out/versions.txt" <<EOF
kube-apiserver $kver
kubectl $kver
etcd $ever
helm $hver
go $goversion
EOF
log "all binaries ready in $((SECONDS - total_start))s"
echo "$bin"
