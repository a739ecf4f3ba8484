//! The Tollgate data plane.
//!
//! A request flows top to bottom through [`pipeline`]: authenticate, route,
//! select a backend, call the provider, settle usage. [`runtime::Runtime`] is
//! the per-snapshot state a request holds from start to end, so a reload never
//! changes a request half way.

pub mod auth;
pub mod error;
pub mod metrics;
pub mod payload;
pub mod pipeline;
pub mod routing;
pub mod runtime;
pub mod server;
pub mod sse;
pub mod standalone;
pub mod subscriber;
pub mod upstream;
