# Tollgate developer entry points. `make help` lists them.
CARGO ?= cargo
# Where cargo puts the binaries (CARGO_TARGET_DIR when set).
TARGET_DIR := $(abspath $(or $(CARGO_TARGET_DIR),target))
BIN_DEBUG := $(TARGET_DIR)/debug/tollgate
BIN_RELEASE := $(TARGET_DIR)/release/tollgate

.PHONY: help build run test test-rust test-k8s test-python test-mcp crds lint deny image test-image fmt bench bench-controlplane eval-pii soak chaos fuzz clean

help: ## List targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

build: ## Build the tollgate binary (debug)
	$(CARGO) build -p tollgate-cli

run: build ## Start the mock provider and the gateway on deploy/examples/quickstart.yaml
	@scripts/quickstart.sh $(BIN_DEBUG)

test: test-rust test-k8s test-python test-mcp ## Run every test: Rust, real kube-apiserver, official OpenAI/Anthropic SDKs, official MCP conformance suite

test-rust: ## Rust unit, golden and black-box tests
	$(CARGO) test --workspace

test-k8s: build ## CRDs, CEL rules, tokens, Helm chart, kustomize, RBAC, the out-of-cluster guide and the secrets sweep against a real kube-apiserver + etcd (built from Go modules, cached)
	bash tests/k8s/smoke.sh
	bash tests/k8s/chart.sh
	TOLLGATE_BIN=$(BIN_DEBUG) bash tests/k8s/out-of-cluster.sh
	TOLLGATE_BIN=$(BIN_DEBUG) bash tests/k8s/secrets.sh

test-python: build ## The official OpenAI Python SDK against the gateway
	TOLLGATE_BIN=$(BIN_DEBUG) bash tests/python/run.sh

test-mcp: build ## The official MCP conformance suite (server scenarios, every revision) against server-everything, directly and through /mcp/{path}: results must match (Node 22 from tests/node)
	TOLLGATE_BIN=$(BIN_DEBUG) bash tests/mcp-conformance/run.sh

crds: ## Regenerate crds/ from crates/api
	$(CARGO) run -q -p tollgate-cli -- crds --out-dir crds

lint: deny ## Formatting, clippy (warnings as errors) and cargo-deny
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

deny: ## Dependencies: licences, bans, duplicate versions, sources; advisories when the RustSec database is reachable
	bash scripts/deny.sh

image: ## Build the container image (buildah; see Dockerfile)
	bash scripts/image.sh

test-image: ## Build the image and check it: non-root, static, small, runs
	bash tests/image/check.sh

fmt: ## Format the code
	$(CARGO) fmt --all

bench: ## Benchmark: mock direct vs nginx vs tollgate side by side (installs nginx-light if missing)
	bash bench/run.sh

eval-pii: ## PII recognizers vs Presidio on tests/pii/corpus.jsonl: P/R/F1 per type and throughput (PRESIDIO=0: ours only)
	bash tests/pii/run.sh

bench-controlplane: ## propagation (apply -> served on 3 gateways, p50/p99 over 100 changes, vs a plain watch) and 1,000-route compile/push in a real apiserver
	$(CARGO) build --release -p tollgate-cli -p tollgate-bench
	$(TARGET_DIR)/release/tollgate-bench-controlplane --tollgate $(BIN_RELEASE)

# Soak length in seconds (`make soak SOAK_SECONDS=600`).
SOAK_SECONDS ?= 1800

soak: ## Steady mixed load + reloads for SOAK_SECONDS (1800); RSS and open fds must stay flat, every answer as expected (not part of make test)
	$(CARGO) build --release -p tollgate-cli -p tollgate-bench
	$(TARGET_DIR)/release/tollgate-soak --tollgate $(BIN_RELEASE) soak --seconds $(SOAK_SECONDS)

chaos: ## Providers that hang, reset, answer garbage, refuse, fail, cut streams; then the controller and the apiserver go away under load; failed requests counted (not part of make test)
	$(CARGO) build --release -p tollgate-cli -p tollgate-bench
	$(TARGET_DIR)/release/tollgate-soak --tollgate $(BIN_RELEASE) chaos
	TOLLGATE_BIN=$(BIN_RELEASE) SOAK_BIN=$(TARGET_DIR)/release/tollgate-soak bash tests/k8s/chaos.sh

# Seconds per fuzz target (`make fuzz FUZZ_SECONDS=600`).
FUZZ_SECONDS ?= 60

fuzz: ## Fuzz every parser of outside bytes, FUZZ_SECONDS (60) per target; fails on a crash (nightly + cargo-fuzz; not part of make test)
	FUZZ_SECONDS=$(FUZZ_SECONDS) bash fuzz/run.sh

clean:
	$(CARGO) clean
