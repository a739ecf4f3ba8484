//! Condition types and reasons, shared by every kind (Gateway API style).

/// The resource is syntactically and semantically valid.
pub const ACCEPTED: &str = "Accepted";
/// Every reference (provider, gateway, Secret key) resolves.
pub const RESOLVED_REFS: &str = "ResolvedRefs";
/// The resource is part of the configuration the gateways serve.
pub const PROGRAMMED: &str = "Programmed";

pub mod reason {
    pub const ACCEPTED: &str = "Accepted";
    pub const INVALID: &str = "Invalid";
    pub const RESOLVED_REFS: &str = "ResolvedRefs";
    pub const PROVIDER_NOT_FOUND: &str = "ProviderNotFound";
    pub const GATEWAY_NOT_FOUND: &str = "GatewayNotFound";
    pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
    pub const DUPLICATE_ALIAS: &str = "DuplicateAlias";
    pub const PROGRAMMED: &str = "Programmed";
    pub const PENDING: &str = "Pending";
}
