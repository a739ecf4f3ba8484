//! Condition types and reasons, shared by every kind (Gateway API style).

/// The resource is syntactically and semantically valid.
pub const ACCEPTED: &str = "Accepted";
/// Every reference (provider, gateway, Secret key) resolves.
pub const RESOLVED_REFS: &str = "ResolvedRefs";
/// The resource is part of the configuration the gateways serve.
pub const PROGRAMMED: &str = "Programmed";
/// An MCPServer the controller runs (`spec.run`): its Deployment has
/// replicas available to serve.
pub const AVAILABLE: &str = "Available";
/// A ModelProvider served by a gateway: its circuit breaker is closed on
/// every connected replica of the gateways that serve it.
pub const CIRCUIT_CLOSED: &str = "CircuitClosed";

/// Why a condition holds. A `False` condition's reason names the problem.
pub mod reason {
    pub const ACCEPTED: &str = "Accepted";
    /// A field is invalid (the message names it).
    pub const INVALID: &str = "InvalidSpec";
    pub const RESOLVED_REFS: &str = "ResolvedRefs";
    pub const PROVIDER_NOT_FOUND: &str = "ProviderNotFound";
    pub const GATEWAY_NOT_FOUND: &str = "GatewayNotFound";
    pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
    pub const CONFIG_MAP_NOT_FOUND: &str = "ConfigMapNotFound";
    /// An MCPServer a route names is missing, invalid, or served by
    /// another gateway.
    pub const MCP_SERVER_NOT_FOUND: &str = "MCPServerNotFound";
    /// Reasons that mean "a reference does not resolve" rather than
    /// "invalid".
    pub const REFERENCES: [&str; 5] = [
        PROVIDER_NOT_FOUND,
        GATEWAY_NOT_FOUND,
        SECRET_NOT_FOUND,
        CONFIG_MAP_NOT_FOUND,
        MCP_SERVER_NOT_FOUND,
    ];
    /// Whether `reason` is one of [`REFERENCES`].
    pub fn is_reference(reason: &str) -> bool {
        REFERENCES.contains(&reason)
    }
    pub const DUPLICATE_ALIAS: &str = "DuplicateAlias";
    pub const PROGRAMMED: &str = "Programmed";
    /// Valid and compiled, but no gateway process is connected to serve it.
    pub const NO_GATEWAYS_CONNECTED: &str = "NoGatewaysConnected";
    /// Gateways are connected; none has acknowledged this configuration yet.
    pub const PROGRAMMING: &str = "Programming";
    /// A provider that no served route uses.
    pub const NOT_REFERENCED: &str = "NotReferenced";
    /// A route whose AIGateway is itself not accepted.
    pub const GATEWAY_NOT_ACCEPTED: &str = "GatewayNotAccepted";
    /// `Available`: at least one replica of the Deployment is available.
    pub const AVAILABLE: &str = "Available";
    /// `Available` False: the Deployment has no available replica (pods
    /// starting, crashing, or unschedulable).
    pub const NO_REPLICAS_AVAILABLE: &str = "NoReplicasAvailable";
    /// `Available` False: `run.replicas` is 0.
    pub const SCALED_TO_ZERO: &str = "ScaledToZero";
    /// `Available` False: the controller has not created the Deployment yet.
    pub const DEPLOYMENT_PENDING: &str = "DeploymentPending";
    /// `CircuitClosed` True: no replica reports the breaker open or probing.
    pub const CIRCUIT_CLOSED: &str = "CircuitClosed";
    /// `CircuitClosed` False: open on at least one replica (its requests
    /// fall back to other backends there).
    pub const CIRCUIT_OPEN: &str = "CircuitOpen";
    /// `CircuitClosed` False: open nowhere, but probing on some replica.
    pub const CIRCUIT_HALF_OPEN: &str = "CircuitHalfOpen";
}
