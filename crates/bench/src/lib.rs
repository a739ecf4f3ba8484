//! `tollgate-bench`: runs mock-direct, nginx and tollgate side by side on
//! loopback and reports latency (coordinated-omission corrected), CPU per
//! request, streaming first-byte time and memory. See bench/README.md.

pub mod client;
pub mod error;
pub mod load;
pub mod mcp;
pub mod procfs;
pub mod report;
pub mod runner;
pub mod schedule;
pub mod soak;
pub mod stats;
pub mod stub;
pub mod targets;

pub use error::{BenchError, Result};
