//! Tollgate configuration: one internal representation, the [`Snapshot`], fed
//! by both standalone files ([`load`]) and the controller, which pushes it to
//! gateway pods over the protocol in [`push`].
//!
//! * [`load`] reads manifests (files or directories of multi-document YAML),
//!   checks each document against its kind's schema and CEL rules, and
//!   collects [`Resources`].
//! * [`compile`] turns [`Resources`] into one [`Snapshot`] per AIGateway plus
//!   [`Diagnostic`]s. It does no IO and is deterministic: the same resources
//!   give the same bytes and the same hash.

pub mod compile;
pub mod diagnostics;
pub mod digest;
pub mod document;
pub mod egress;
pub mod guard;
pub mod load;
pub mod mcp_catalog;
pub mod mcp_wire;
pub mod prompt;
pub mod push;
pub mod resources;
pub mod schema;
pub mod snapshot;
pub mod window;

pub use compile::{Compiled, compile};
pub use diagnostics::{Diagnostic, ObjectRef, Severity};
pub use digest::DigestKey;
pub use load::{LoadError, Loaded, load_paths};
pub use resources::Resources;
pub use snapshot::{Snapshot, SnapshotError};
