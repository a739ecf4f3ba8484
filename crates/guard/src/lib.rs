//! Guardrails that need no IO: recognizers of personal data and secrets
//! ([`pii`]), the validators behind them ([`validate`]), a policy's rules
//! with their actions, custom patterns and word lists included
//! ([`rules`]), reversible masking and stream scanning with a hold-back
//! window ([`redact`]), and prompt-injection heuristics ([`injection`]).
//! The gateway's guard stage applies them per policy; `examples/pii_eval.rs` measures them
//! against the labelled corpus under `tests/pii/`.

pub mod injection;
pub mod pii;
pub mod redact;
pub mod rules;
pub mod validate;

pub use pii::{Finding, Kind, Recognizers};
pub use redact::{DEFAULT_WINDOW, MaskTable, StreamScanner, StreamUnmasker};
pub use rules::{Action, Blocked, CustomRule, Matcher, RuleError, Rules};
