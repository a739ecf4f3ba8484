//! Guardrails that need no IO: recognizers of personal data and secrets
//! ([`pii`]) and the validators behind them ([`validate`]). The gateway's
//! guard stage applies them per policy; `examples/pii_eval.rs` measures them
//! against the labelled corpus under `tests/pii/`.

pub mod pii;
pub mod validate;

pub use pii::{Finding, Kind, Recognizers};
