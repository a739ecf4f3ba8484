//! The Tollgate data plane.
//!
//! A request flows top to bottom through [`llm`]: ingress, authenticate,
//! route, select a backend, call the provider (passthrough or translated),
//! relay, settle. [`context::RequestContext`] carries it from start to end;
//! [`runtime::Runtime`] is the per-snapshot state a request holds throughout,
//! so a reload never changes a request half way.

pub mod alerts;
pub mod audit;
pub mod breaker;
pub mod context;
pub mod dialect;
pub mod error;
pub mod http;
pub mod llm;
pub mod mcp;
pub mod metrics;
pub mod payload;
pub mod providers;
pub mod runtime;
pub mod server;
pub mod sse;
pub mod standalone;
pub mod state;
pub mod subscriber;
pub mod usage;
