//! Harness errors. Target failures (a request erroring, a target not
//! starting) are *data* recorded in the report; these are the failures that
//! make the harness itself unable to continue.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),

    #[error("failed to spawn {bin}: {source}")]
    Spawn {
        bin: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{what} did not become ready: {reason}")]
    NotReady { what: String, reason: String },

    #[error("cannot parse {what}: {detail}")]
    Parse { what: String, detail: String },

    #[error("connect to {addr} failed: {source}")]
    Connect {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },

    #[error("HTTP error: {0}")]
    Http(#[from] hyper::Error),

    #[error("histogram error: {0}")]
    Histogram(String),

    #[error("JSON error: {0}")]
    Json(#[from] serde_json::Error),
}

pub type Result<T> = std::result::Result<T, BenchError>;
