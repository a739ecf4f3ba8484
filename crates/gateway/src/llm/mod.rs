//! The LLM request pipeline. [`serve`] reads top to bottom, one line per
//! stage; each stage is a module with one job:
//!
//! | Stage | Module | Job |
//! | --- | --- | --- |
//! | ingress | [`ingress`] | read the body within limits; raw top-level fields; canonical form on demand |
//! | authenticate | [`auth`] | API key → `Principal` |
//! | route | [`route`] | model alias and headers → AIRoute (and `ALIAS@VERSION` → a prompt version) |
//! | prompt | [`prompt`] | the route's prompts: template version, variables, decorators, context injection |
//! | guard in | [`guard`] | the route's guard policy: PII and secrets redacted, masked or blocked; prompt injection |
//! | admit | [`admit`] | reserve the estimated cost against TokenBudgets |
//! | select | [`select`] | backend order: priority tiers, weights |
//! | tiers | [`tiers`] | smart routing (routes with tiers): the request's tier first |
//! | provider | [`forward`] | per attempt: passthrough or translate, sign, send, fall back |
//! | relay | [`relay`] | the answer to the client through the one output hook, streams transcoded; guard out |
//! | settle | [`crate::context`] | status, latency, tokens, cost: once, on every exit |
//!
//! Stages still to come (cache) slot in between route and select without
//! touching the others.

pub mod admit;
pub mod auth;
pub mod forward;
pub mod guard;
pub mod ingress;
pub mod judge;
pub mod jwt;
pub mod moderation;
pub mod prompt;
pub mod relay;
pub mod residency;
pub mod retry;
pub mod route;
pub mod sanitize;
pub mod select;
pub mod tiers;
pub mod tokens;

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use tollgate_llm::LlmError;

use crate::context::RequestContext;
use crate::dialect::Endpoint;
use crate::error::ApiError;
use crate::http::{ResponseBody, box_body, json, readiness, text};
use crate::runtime::Gateway;
use ingress::Inbound;
use relay::{Relay, StreamSetup};

/// Entry point for the client-facing port.
pub async fn handle(gateway: Arc<Gateway>, request: Request<Incoming>) -> Response<ResponseBody> {
    let path = request.uri().path();
    if let Some(endpoint) = Endpoint::of_path(path) {
        if request.method() == Method::POST {
            return serve(gateway, request, endpoint).await;
        }
        return crate::server::with_allow(
            endpoint.error(&ApiError::method_not_allowed(request.method(), path)),
            "POST",
        );
    }
    if path.starts_with("/mcp/") || path == "/mcp" {
        return crate::mcp::handle(gateway, request).await;
    }
    if path.starts_with(crate::mcp::METADATA_PREFIX) {
        return crate::mcp::resource_metadata(&gateway, &request);
    }
    match (request.method(), path) {
        (&Method::GET, "/v1/models") => models(&gateway, request.headers(), None).await,
        (&Method::GET, p) if p.starts_with("/v1/models/") => {
            let id = p["/v1/models/".len()..].to_string();
            models(&gateway, request.headers(), Some(&id)).await
        }
        // HEAD too, for probes; hyper sends the head without the body.
        (&Method::GET | &Method::HEAD, "/healthz") => text(StatusCode::OK, "ok"),
        (&Method::GET | &Method::HEAD, "/readyz") => readiness(&gateway),
        (method, path @ ("/healthz" | "/readyz")) => crate::server::with_allow(
            Endpoint::ChatCompletions.error(&ApiError::method_not_allowed(method, path)),
            "GET, HEAD",
        ),
        (method, path) if path == "/v1/models" || path.starts_with("/v1/models/") => {
            crate::server::with_allow(
                Endpoint::ChatCompletions.error(&ApiError::method_not_allowed(method, path)),
                "GET",
            )
        }
        (_, path) => Endpoint::ChatCompletions.error(&ApiError::not_found(path)),
    }
}

/// What a request ends in, short of an error.
pub enum Answer {
    /// A full response and its status for metrics (usage is on the context).
    Full(Response<ResponseBody>, u16),
    /// A stream that has produced its first bytes: the response head, the
    /// relay, those bytes, and the relay's settings.
    Stream(Response<()>, Box<(Relay, Bytes, StreamSetup)>),
}

/// An error from the gateway itself or from translation, answered in the
/// client's shape.
#[derive(Debug)]
pub enum Failure {
    Gateway(ApiError),
    Translation(LlmError),
}

impl From<ApiError> for Failure {
    fn from(error: ApiError) -> Self {
        Failure::Gateway(error)
    }
}

impl From<LlmError> for Failure {
    fn from(error: LlmError) -> Self {
        Failure::Translation(error)
    }
}

impl Failure {
    fn respond(&self, endpoint: Endpoint) -> Response<ResponseBody> {
        match self {
            Failure::Gateway(error) => endpoint.error(error),
            Failure::Translation(error) => endpoint.llm_error(error),
        }
    }
}

/// One request, start to end: the pipeline, then delivery and settling.
async fn serve(
    gateway: Arc<Gateway>,
    request: Request<Incoming>,
    endpoint: Endpoint,
) -> Response<ResponseBody> {
    let mut context = RequestContext::new(gateway, endpoint);
    match pipeline(&mut context, request).await {
        Ok(Answer::Full(response, status)) => {
            context.settle(status);
            response
        }
        Ok(Answer::Stream(head, stream)) => {
            let (relay, first, setup) = *stream;
            head.map(|()| box_body(relay::start(relay, first, context, setup)))
        }
        Err(failure) => {
            let response = failure.respond(endpoint);
            context.settle(response.status().as_u16());
            response
        }
    }
}

/// The stages, in order.
async fn pipeline(
    context: &mut RequestContext,
    request: Request<Incoming>,
) -> Result<Answer, Failure> {
    // One snapshot for the whole request, streams included.
    let runtime = context.gateway.runtime().ok_or_else(ApiError::not_ready)?;
    let (parts, body) = request.into_parts();
    context.principal = auth::authenticate(&runtime, &context.gateway, &parts.headers).await?;
    let limit = runtime.snapshot.config.limits.max_request_body_bytes;
    let bytes = ingress::read_body(body, &parts.headers, limit).await?;
    if let Some(audit) = &mut context.audit {
        audit.request_bytes(&bytes);
    }
    let mut inbound = Inbound::parse(&bytes, context.endpoint)?;
    let (mut route, versioned) = runtime
        .routes
        .find_versioned(
            &inbound.payload.model,
            &parts.headers,
            context.principal.as_deref(),
        )
        .ok_or_else(|| ApiError::model_not_found(&inbound.payload.model))?;
    // `ALIAS@VERSION`: the alias goes on (to pass-through backends too).
    let versioned = versioned.map(|(alias, version)| (alias.to_string(), version.to_string()));
    let version_in_model = versioned.map(|(alias, version)| {
        inbound.payload.model = alias;
        version
    });
    context.route = route.name.clone();
    let served_as = context.endpoint.served_as();
    if !route.endpoints.contains(served_as) {
        let served: Vec<&str> = route.endpoints.iter().map(|e| e.path()).collect();
        return Err(ApiError::endpoint_not_served(
            &inbound.payload.model,
            served_as.path(),
            &served,
        )
        .into());
    }
    // Prompt: routes with prompts only, on the endpoints with messages.
    if route.prompts.is_some()
        && matches!(
            context.endpoint,
            Endpoint::ChatCompletions | Endpoint::Responses | Endpoint::Messages
        )
        && let Some(prompts) = runtime.prompts.get(&route.name)
    {
        prompt::apply(
            context,
            &route.name,
            prompts,
            version_in_model.as_deref(),
            &parts.headers,
            &mut inbound,
        )
        .await?;
    }
    // Guard in: routes with a policy only, on every endpoint that sends the
    // client's text to a provider.
    if let Some(policy) = route.guard.and_then(|index| runtime.guards.get(index)) {
        match context.endpoint {
            Endpoint::Embeddings => guard::inspect_embeddings(context, policy, &mut inbound)?,
            _ => guard::inspect_request(context, &runtime, policy, &mut inbound).await?,
        }
    }
    // Budgets: only when the gateway has any (count_tokens is free).
    if !runtime.snapshot.config.budgets.is_empty() && context.endpoint != Endpoint::CountTokens {
        let decision = admit::admit(context, &runtime, route, &inbound).await?;
        if let Some(model) = decision.downgrade_to {
            route = runtime
                .routes
                .find(&model, &parts.headers, context.principal.as_deref())
                .filter(|r| r.endpoints.contains(served_as))
                .ok_or_else(|| {
                    ApiError::unavailable(format!(
                        "the budget's downgrade model {model:?} is not served here"
                    ))
                })?;
            context.route = route.name.clone();
            inbound.payload.model = model;
        }
    }
    let in_flight = |index: usize| runtime.upstreams[route.backends[index].provider].in_flight();
    let mut order = select::attempt_order(route, in_flight, &mut rand::rng());
    let held_back = residency::restrict(
        &runtime.snapshot.config,
        route,
        context.principal.as_deref(),
        &mut order,
    )?;
    let tier = route.tiers.as_deref().map(|tiers| {
        let decision = tiers::decide(tiers, &inbound);
        select::tier_first(&mut order, route, decision.tier);
        let tier = &tiers.names[decision.tier];
        context
            .gateway
            .metrics
            .count_tier(&route.name, tier, decision.reason);
        (tier, decision)
    });
    let mut answer =
        forward::forward(context, &runtime, route, &inbound, &order, &parts.headers).await;
    if let Some(restrictions) = held_back {
        answer = residency::held_back(answer, &route.name, &restrictions);
    }
    match tier {
        Some((tier, decision)) => tiers::stamp(answer, tier, decision, context.endpoint),
        None => answer,
    }
}

/// `GET /v1/models` and `GET /v1/models/{id}`: the aliases this caller may
/// use, in Anthropic's shape when the caller is an Anthropic client (it
/// sends `anthropic-version`), else OpenAI's.
async fn models(
    gateway: &Gateway,
    headers: &HeaderMap,
    id: Option<&str>,
) -> Response<ResponseBody> {
    let anthropic = headers.contains_key("anthropic-version");
    let endpoint = if anthropic {
        Endpoint::Messages
    } else {
        Endpoint::ChatCompletions
    };
    let error = |e: ApiError| endpoint.error(&e);
    let Some(runtime) = gateway.runtime() else {
        return error(ApiError::not_ready());
    };
    let principal = match auth::authenticate(&runtime, gateway, headers).await {
        Ok(principal) => principal,
        Err(e) => return error(e),
    };
    let entry = |alias: &str| {
        if anthropic {
            serde_json::json!({"type": "model", "id": alias, "display_name": alias, "created_at": "1970-01-01T00:00:00Z"})
        } else {
            serde_json::json!({"id": alias, "object": "model", "created": 0, "owned_by": "tollgate"})
        }
    };
    let aliases = runtime
        .routes
        .visible_aliases(headers, principal.as_deref());
    let body = match id {
        None if anthropic => serde_json::json!({
            "data": aliases.iter().map(|a| entry(a)).collect::<Vec<_>>(),
            "has_more": false,
            "first_id": aliases.first(),
            "last_id": aliases.last(),
        }),
        None => {
            serde_json::json!({"object": "list", "data": aliases.iter().map(|a| entry(a)).collect::<Vec<_>>()})
        }
        Some(id) if aliases.contains(&id) => entry(id),
        Some(id) => return error(ApiError::model_not_found(id)),
    };
    json(StatusCode::OK, body.to_string())
}
