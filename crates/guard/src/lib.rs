//! Guardrails that need no IO: recognizers of personal data and secrets
//! ([`pii`]), the validators behind them ([`validate`]), and redaction and
//! reversible masking, streams included ([`redact`]). The gateway's
//! guard stage applies them per policy; `examples/pii_eval.rs` measures them
//! against the labelled corpus under `tests/pii/`.

pub mod injection;
pub mod pii;
pub mod redact;
pub mod validate;

pub use pii::{Finding, Kind, Recognizers};
pub use redact::{MaskTable, StreamAction, StreamScanner, StreamUnmasker, redact};
