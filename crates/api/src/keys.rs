//! API keys minted without editing the AIGateway: a Secret in the gateway's
//! namespace, labelled [`API_KEY_LABEL`], whose annotations name the gateway
//! and the principal. `tollgate keys create` writes one.

/// Label that marks a Secret as a client API key (value `"true"`).
pub const API_KEY_LABEL: &str = "tollgate.dev/api-key";
/// The AIGateway (same namespace) the key opens; `*` for every gateway of
/// the namespace.
pub const GATEWAY_ANNOTATION: &str = "tollgate.dev/gateway";
/// The principal's user; defaults to the Secret's name.
pub const USER_ANNOTATION: &str = "tollgate.dev/user";
pub const TEAM_ANNOTATION: &str = "tollgate.dev/team";
pub const APP_ANNOTATION: &str = "tollgate.dev/app";
/// The principal's labels, `key=value` pairs separated by commas.
pub const LABELS_ANNOTATION: &str = "tollgate.dev/labels";
/// RFC 3339 instant after which the key is refused (optional).
pub const EXPIRES_AT_ANNOTATION: &str = "tollgate.dev/expires-at";
/// The Secret's data entry holding the key.
pub const KEY_DATA: &str = "key";
