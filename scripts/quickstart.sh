#!/usr/bin/env bash
# Runs the mock provider and the gateway on the quickstart config until Ctrl-C.
set -euo pipefail
bin=${1:-target/debug/tollgate}
config=deploy/examples/quickstart.yaml

# The mock checks each provider format's credentials as the real provider
# does; the keys match the quickstart Secret.
"$bin" mock --listen 127.0.0.1:8081 \
  --anthropic-key mock-anthropic-key --gemini-key mock-gemini-key \
  --bedrock-access-key-id AKIDQUICKSTART --bedrock-secret-access-key quickstart-secret-access-key \
  --mcp-key mock-mcp-key \
  >/dev/null &
mock=$!
trap 'kill $mock $gateway 2>/dev/null; wait 2>/dev/null' EXIT INT TERM
"$bin" gateway --config "$config" &
gateway=$!

for _ in $(seq 1 100); do
  curl -fsS -o /dev/null http://127.0.0.1:9090/readyz 2>/dev/null && break
  sleep 0.1
done
cat <<MSG

Tollgate is serving $config (edit it: changes apply live). Try:

curl -s http://127.0.0.1:8080/v1/chat/completions -H 'Authorization: Bearer tg-demo-key' -H 'Content-Type: application/json' -d '{"model":"chat","messages":[{"role":"user","content":"Hello!"}]}'

The same request in Anthropic's API, answered by a Bedrock-format provider:

curl -s http://127.0.0.1:8080/v1/messages -H 'x-api-key: tg-demo-key' -H 'anthropic-version: 2023-06-01' -H 'Content-Type: application/json' -d '{"model":"bedrock","max_tokens":100,"messages":[{"role":"user","content":"Hello!"}]}'

Other aliases: claude (Anthropic format), gemini (Gemini format), embed (embeddings).

The tools of every MCP server, merged at /mcp (MCP 2026-07-28, one stateless request; /mcp/tools is the mock's alone):

curl -s http://127.0.0.1:8080/mcp -H 'Authorization: Bearer tg-demo-key' -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' -H 'MCP-Protocol-Version: 2026-07-28' -H 'Mcp-Method: tools/list' -d '{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}'

Metrics: http://127.0.0.1:9090/metrics   Stop: Ctrl-C

MSG
wait $gateway
