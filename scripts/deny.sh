#!/usr/bin/env bash
# cargo-deny with deny.toml: licences, bans (duplicate versions, OpenSSL),
# sources always; advisories too when the RustSec database can be had.
#
# The database lives on GitHub. Where GitHub is unreachable (this project's
# CI machines), pass a local copy: ADVISORY_DB=/path/to/advisory-db (a clone
# of github.com/rustsec/advisory-db); without one the advisories check is
# skipped and says so, rather than failing on the network.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
if ! command -v cargo-deny >/dev/null; then
  echo "deny.sh: installing cargo-deny (cargo install --locked cargo-deny)" >&2
  cargo install --locked cargo-deny@0.20.2 >&2
fi
cargo deny --all-features check bans licenses sources

if [[ -n "${ADVISORY_DB:-}" ]]; then
  # cargo-deny looks for the database under db-path in a directory named
  # after its URL; put the copy there and never fetch.
  scratch="$(mktemp -d)"
  trap 'rm -rf "$scratch"' EXIT
  git clone -q "$ADVISORY_DB" "$scratch/advisory-db-3157b0e258782691"
  sed "s|^\\[advisories\\]|[advisories]\\ndb-path = \"$scratch\"|" deny.toml >"$scratch/deny.toml"
  echo "deny.sh: advisories from $ADVISORY_DB ($(git -C "$scratch/advisory-db-3157b0e258782691" log -1 --format=%cs))" >&2
  cargo deny --all-features --offline --config "$scratch/deny.toml" check advisories
elif timeout 20 git ls-remote https://github.com/rustsec/advisory-db HEAD >/dev/null 2>&1; then
  cargo deny --all-features check advisories
else
  echo "deny.sh: advisories SKIPPED: github.com/rustsec/advisory-db unreachable and ADVISORY_DB unset" >&2
fi
