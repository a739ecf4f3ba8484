//! Per-snapshot state: built once when a snapshot is swapped in, then shared
//! read-only by every request that started under it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwapOption;
use tollgate_config::Snapshot;

use crate::llm::auth::{InvalidKeyDigest, KeyIndex};
use crate::llm::route::RouteTable;
use crate::llm::tokens::Tokenizer;
use crate::metrics::Metrics;
use crate::providers::Upstream;
use crate::providers::http::{Clients, PermitRegistry, UpstreamError};
use crate::state::Store;
use crate::state::memory::MemoryCounters;
use crate::state::redis::{RedisCounters, RedisStateError};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error(transparent)]
    Keys(#[from] InvalidKeyDigest),
    #[error(transparent)]
    Invalid(#[from] tollgate_config::snapshot::SnapshotError),
    #[error(transparent)]
    Redis(#[from] RedisStateError),
    #[error("route {route}: spec.prompts.{error}")]
    Prompt {
        route: String,
        error: tollgate_config::prompt::PromptError,
    },
    #[error("guard policy {policy}: {error}")]
    Guard {
        policy: String,
        error: tollgate_config::guard::GuardError,
    },
}

pub struct Runtime {
    pub snapshot: Snapshot,
    pub keys: KeyIndex,
    pub routes: RouteTable,
    /// Parallel to `snapshot.config.providers`; backends index into it.
    pub upstreams: Vec<Upstream>,
    /// Where budget counters live: Redis when configured, else this process.
    pub budget_store: Store,
    /// Seals MCP session ids, under a key every replica derives alike.
    pub mcp_sessions: crate::mcp::session::Sealer,
    /// Parallel to `snapshot.config.guard_policies`; routes index into it.
    pub guards: Vec<Arc<tollgate_config::guard::GuardPolicy>>,
    /// The prompts of the routes that have any, by route name.
    pub prompts: HashMap<Arc<str>, crate::llm::prompt::RoutePrompts>,
}

impl Runtime {
    /// The provider `name` of this snapshot, ready to call (guard judges
    /// and moderation providers name theirs).
    pub fn upstream_named(&self, name: &str) -> Result<&Upstream, String> {
        self.snapshot
            .config
            .providers
            .iter()
            .position(|p| *p.name == *name)
            .map(|index| &self.upstreams[index])
            .ok_or_else(|| format!("provider {name} is not configured"))
    }

    pub fn build(snapshot: Snapshot, gateway: &Gateway) -> Result<Self, RuntimeError> {
        // Backends index `upstreams` on the request path: check them first.
        snapshot.validate()?;
        let upstreams = snapshot
            .config
            .providers
            .iter()
            .map(|p| Upstream::new(p.clone(), &gateway.clients, &gateway.permits))
            .collect::<Result<Vec<_>, _>>()?;
        let budget_store = match &snapshot.config.redis {
            Some(redis) => Store::Redis(Arc::new(RedisCounters::new(
                redis,
                &format!(
                    "{}/{}",
                    snapshot.config.gateway.namespace, snapshot.config.gateway.name
                ),
            )?)),
            None => Store::Memory(gateway.counters.clone(), gateway.throttles.clone()),
        };
        if !snapshot.config.budgets.is_empty() {
            preload_tokenizers(&snapshot);
        }
        let guards = snapshot
            .config
            .guard_policies
            .iter()
            .map(|spec| {
                tollgate_config::guard::GuardPolicy::build(spec, crate::llm::guard::recognizers())
                    .map(Arc::new)
                    .map_err(|error| RuntimeError::Guard {
                        policy: spec.name.clone(),
                        error,
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let prompts = snapshot
            .config
            .routes
            .iter()
            .filter_map(|route| Some((route, route.prompts.as_deref()?)))
            .map(|(route, prompts)| {
                crate::llm::prompt::RoutePrompts::build(prompts)
                    .map(|built| (route.name.clone(), built))
                    .map_err(|error| RuntimeError::Prompt {
                        route: route.name.to_string(),
                        error,
                    })
            })
            .collect::<Result<HashMap<_, _>, _>>()?;
        Ok(Self {
            prompts,
            guards,
            mcp_sessions: crate::mcp::session::Sealer::new(
                &snapshot.config.digest_key,
                &snapshot.config.mcp_session_keys,
            ),
            budget_store,
            keys: KeyIndex::new(&snapshot.config.api_keys, &snapshot.config.digest_key)?,
            routes: RouteTable::new(snapshot.config.routes.clone()),
            upstreams,
            snapshot,
        })
    }
}

/// Loads, on a background thread, the vocabularies budgets will count
/// prompts with (the first backend of each route), so no request waits for
/// one; a vocabulary costs memory (o200k about 65 MiB, cl100k 30 MiB) and is
/// loaded only when a budget may need it.
fn preload_tokenizers(snapshot: &Snapshot) {
    let config = &snapshot.config;
    let mut wanted: Vec<Tokenizer> = config
        .routes
        .iter()
        .filter_map(|route| route.backends.first())
        .filter(|backend| !backend.pass_model)
        .map(|backend| {
            Tokenizer::for_model(
                config.providers[backend.provider].provider_type,
                &backend.model,
            )
        })
        .collect();
    wanted.sort_by_key(|t| *t as u8);
    wanted.dedup();
    // A failed spawn only means the first request loads it.
    let _ = std::thread::Builder::new()
        .name("tokenizer-load".into())
        .spawn(move || wanted.into_iter().for_each(Tokenizer::load));
}

/// Lets a repeated warning through at most once per [`LogThrottle::EVERY_MS`].
#[derive(Debug, Default)]
pub struct LogThrottle {
    last_ms: std::sync::atomic::AtomicI64,
}

impl LogThrottle {
    pub const EVERY_MS: i64 = 5_000;

    pub fn allow(&self) -> bool {
        let now = crate::state::window::now_ms();
        let last = self.last_ms.load(Ordering::Relaxed);
        now - last >= Self::EVERY_MS
            && self
                .last_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

/// What every connection shares: the current runtime (swapped atomically on
/// reload), metrics, the client pools and readiness.
pub struct Gateway {
    current: ArcSwapOption<Runtime>,
    pub metrics: Metrics,
    pub clients: Clients,
    pub permits: PermitRegistry,
    /// Budget usage; outlives reloads, so an edited budget keeps its count.
    pub counters: Arc<MemoryCounters>,
    pub alerts: crate::alerts::AlertHub,
    /// Token buckets of TokenBudget rate limits; outlive reloads.
    pub throttles: Arc<crate::state::throttle::Throttles>,
    /// Token issuers' key sets, by URL; outlive reloads.
    pub jwks: crate::llm::jwt::JwksCache,
    /// Prompt context sources' texts, by URL; outlive reloads.
    pub prompt_context: crate::llm::prompt::context::ContextCache,
    /// Cost by principal, for `/v1/usage`.
    pub usage: crate::usage::UsageLedger,
    /// MCP tools' read-only hints, as last listed.
    pub mcp_catalog: crate::mcp::Catalog,
    /// Which backend owns each name and URI of `/mcp`, as last listed here.
    pub mcp_routes: crate::mcp::aggregate::Routes,
    /// A circuit breaker per MCP backend.
    pub mcp_breakers: crate::mcp::Breakers,
    /// The in-process bridge to MCPServers of `transport: SSE`.
    pub mcp_legacy: crate::mcp::legacy::LegacyBridge,
    /// Kept results of read-only MCP calls and reads (`spec.cache`).
    pub mcp_cache: crate::mcp::cache::ResultCache,
    /// Each LLM provider's circuit breaker and quota on this replica.
    pub provider_health: crate::providers::health::ProviderHealth,
    /// Which era (MCP revision family) each backend speaks, as learnt.
    pub mcp_eras: crate::mcp::Eras,
    /// The gateway's own sessions with legacy-only MCP backends, for
    /// callers that speak 2026-07-28.
    pub mcp_legacy_sessions: crate::mcp::LegacySessions,
    /// Warnings that could repeat per request pass through here.
    pub log_throttle: LogThrottle,
    /// This replica's audit log (`spec.audit`); outlives reloads.
    pub audit: Arc<crate::audit::Audit>,
    draining: AtomicBool,
}

impl Gateway {
    pub fn new(clients: Clients) -> Self {
        Self {
            current: ArcSwapOption::empty(),
            metrics: Metrics::new(),
            clients,
            permits: PermitRegistry::default(),
            counters: Arc::default(),
            log_throttle: LogThrottle::default(),
            audit: Arc::default(),
            alerts: crate::alerts::AlertHub::default(),
            usage: crate::usage::UsageLedger::default(),
            mcp_catalog: crate::mcp::Catalog::default(),
            mcp_routes: crate::mcp::aggregate::Routes::default(),
            mcp_breakers: crate::mcp::Breakers::default(),
            mcp_legacy: crate::mcp::legacy::LegacyBridge::default(),
            mcp_cache: crate::mcp::cache::ResultCache::default(),
            provider_health: crate::providers::health::ProviderHealth::default(),
            mcp_eras: crate::mcp::Eras::default(),
            mcp_legacy_sessions: crate::mcp::LegacySessions::default(),
            jwks: crate::llm::jwt::JwksCache::default(),
            prompt_context: crate::llm::prompt::context::ContextCache::default(),
            throttles: Arc::default(),
            draining: AtomicBool::new(false),
        }
    }

    /// The runtime a new request should use for its whole life.
    pub fn runtime(&self) -> Option<Arc<Runtime>> {
        self.current.load_full()
    }

    /// Swaps in a new runtime; requests already running keep the old one.
    /// Call it on a tokio runtime that lives as long as the gateway: the
    /// audit log's tasks run there.
    pub fn install(&self, runtime: Runtime) {
        self.mcp_legacy.update(&runtime.snapshot.config.mcp_servers);
        self.audit.configure(runtime.snapshot.config.audit.as_ref());
        self.prompt_context.retain(
            runtime
                .prompts
                .values()
                .flat_map(|prompts| prompts.context.iter().map(|(source, _)| source)),
        );
        self.current.store(Some(Arc::new(runtime)));
    }

    pub fn is_ready(&self) -> bool {
        !self.draining.load(Ordering::Relaxed) && self.current.load().is_some()
    }

    /// Readiness goes false first, so load balancers stop sending before we stop accepting.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }
}
