//! Guard policies (`AIGateway.spec.guardPolicies`) built into the guard
//! crate's rules. `compile` builds each policy once to report what is wrong
//! with it; the gateway builds the same policies into what its guard stage
//! runs. One function for both, so a policy that compiles also runs.

use std::sync::Arc;

use tollgate_api::guard::{
    ContentRules, CustomRuleSpec, GuardAction, GuardPolicySpec, InjectionAction, PiiEntity,
    PiiRules,
};
use tollgate_guard::{Action, CustomRule, Kind, Matcher, Recognizers, Rules};

/// One policy, ready to run.
pub struct GuardPolicy {
    pub name: String,
    /// Rules on the request; `None`: nothing to look for.
    pub input: Option<Rules>,
    pub injection: Option<Injection>,
    /// Rules on the answer; `None`: the answer is not filtered.
    pub output: Option<Rules>,
    /// Bytes of a streamed answer held back for the output rules.
    pub stream_hold_back: usize,
    pub input_moderation: Option<Moderation>,
    pub output_moderation: Option<Moderation>,
    /// Bytes of a streamed answer's text per output moderation call.
    pub stream_moderation_window: usize,
}

/// A moderation provider: a ModelProvider of the gateway's snapshot.
#[derive(Clone, Debug, PartialEq)]
pub struct Moderation {
    pub provider: String,
    pub model: String,
    pub categories: Vec<String>,
    pub timeout_ms: u64,
    pub fail_closed: bool,
}

/// Default of a moderation's `model`.
pub const DEFAULT_MODERATION_MODEL: &str = "omni-moderation-latest";

/// Default of `output.streamModerationWindow`.
pub const DEFAULT_STREAM_MODERATION_WINDOW: usize = 256;

/// Default of `output.streamHoldBack`.
pub const DEFAULT_STREAM_HOLD_BACK: usize = tollgate_guard::DEFAULT_WINDOW;

#[derive(Clone, Debug, PartialEq)]
pub struct Injection {
    pub block: bool,
    pub threshold: f32,
    pub judge: Option<Judge>,
}

/// An LLM judge: a ModelProvider of the gateway's snapshot by name.
#[derive(Clone, Debug, PartialEq)]
pub struct Judge {
    pub provider: String,
    pub model: String,
    pub timeout_ms: u64,
    /// Refuse the request when the judge cannot answer.
    pub fail_closed: bool,
}

/// Default of a judge's `timeout`.
pub const DEFAULT_JUDGE_TIMEOUT_MS: u64 = 2_000;

/// What is wrong with a policy, and where.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{field}: {message}")]
pub struct GuardError {
    /// Relative to the policy: `input.custom[2].pattern`.
    pub field: String,
    pub message: String,
}

impl GuardPolicy {
    /// Builds `spec`, sharing `recognizers` (compiled once per process).
    pub fn build(
        spec: &GuardPolicySpec,
        recognizers: &Arc<Recognizers>,
    ) -> Result<Self, GuardError> {
        let input = match &spec.input {
            Some(input) => rules(
                recognizers,
                input.pii.as_ref(),
                &input.custom,
                "input",
                Side::Input,
            )?,
            None => None,
        };
        let injection = spec
            .input
            .as_ref()
            .and_then(|i| i.injection.as_ref())
            .map(|i| -> Result<Injection, GuardError> {
                Ok(Injection {
                    block: i.action == InjectionAction::Block,
                    threshold: i
                        .threshold
                        .map_or(tollgate_guard::injection::DEFAULT_THRESHOLD, |t| t as f32),
                    judge: i.judge.as_ref().map(judge).transpose()?,
                })
            })
            .transpose()?;
        let output = match &spec.output {
            Some(ContentRules { pii, custom, .. }) => {
                rules(recognizers, pii.as_ref(), custom, "output", Side::Output)?
            }
            None => None,
        };
        let stream_hold_back = spec
            .output
            .as_ref()
            .and_then(|o| o.stream_hold_back)
            .map_or(DEFAULT_STREAM_HOLD_BACK, |bytes| bytes as usize);
        let stream_moderation_window = spec
            .output
            .as_ref()
            .and_then(|o| o.stream_moderation_window)
            .map_or(DEFAULT_STREAM_MODERATION_WINDOW, |bytes| {
                (bytes as usize).max(1)
            });
        let input_moderation = spec
            .input
            .as_ref()
            .and_then(|i| i.moderation.as_ref())
            .map(|m| moderation(m, "input.moderation"))
            .transpose()?;
        let output_moderation = spec
            .output
            .as_ref()
            .and_then(|o| o.moderation.as_ref())
            .map(|m| moderation(m, "output.moderation"))
            .transpose()?;
        Ok(Self {
            name: spec.name.clone(),
            input,
            injection,
            output,
            stream_hold_back,
            input_moderation,
            output_moderation,
            stream_moderation_window,
        })
    }
}

fn timeout_ms(text: Option<&String>, field: &str) -> Result<u64, GuardError> {
    match text {
        None => Ok(DEFAULT_JUDGE_TIMEOUT_MS),
        Some(text) => match tollgate_api::duration::parse(text) {
            Ok(d) if !d.is_zero() => Ok(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            _ => Err(GuardError {
                field: format!("{field}.timeout"),
                message: tollgate_api::duration::POSITIVE_DURATION_MESSAGE.into(),
            }),
        },
    }
}

fn moderation(
    spec: &tollgate_api::guard::ModerationSpec,
    field: &str,
) -> Result<Moderation, GuardError> {
    Ok(Moderation {
        provider: spec.provider_ref.name.clone(),
        model: spec
            .model
            .clone()
            .unwrap_or_else(|| DEFAULT_MODERATION_MODEL.to_string()),
        categories: spec.categories.clone(),
        timeout_ms: timeout_ms(spec.timeout.as_ref(), field)?,
        fail_closed: spec.on_failure == tollgate_api::budget::FailureMode::Closed,
    })
}

fn judge(spec: &tollgate_api::guard::JudgeSpec) -> Result<Judge, GuardError> {
    let timeout_ms = timeout_ms(spec.timeout.as_ref(), "input.injection.judge")?;
    Ok(Judge {
        provider: spec.provider_ref.name.clone(),
        model: spec.model.clone(),
        timeout_ms,
        fail_closed: spec.on_failure == tollgate_api::budget::FailureMode::Closed,
    })
}

#[derive(Clone, Copy, PartialEq)]
enum Side {
    Input,
    Output,
}

fn rules(
    recognizers: &Arc<Recognizers>,
    pii: Option<&PiiRules>,
    custom: &[CustomRuleSpec],
    side_name: &str,
    side: Side,
) -> Result<Option<Rules>, GuardError> {
    let action = |action: GuardAction| match (action, side) {
        (GuardAction::Block, _) => Action::Block,
        (GuardAction::Mask, Side::Input) => Action::Mask,
        // Nothing to restore an answer's mask into: the client reads it.
        (GuardAction::Redact | GuardAction::Mask, _) => Action::Redact,
    };
    let mut builtin = Vec::new();
    if let Some(pii) = pii {
        let entities: &[PiiEntity] = if pii.entities.is_empty() {
            &PiiEntity::ALL
        } else {
            &pii.entities
        };
        for entity in entities {
            let chosen = pii.actions.get(entity).copied().unwrap_or(pii.action);
            builtin.push((kind(*entity), action(chosen)));
        }
        for entity in pii.actions.keys() {
            if !entities.contains(entity) {
                return Err(GuardError {
                    field: format!("{side_name}.pii.actions"),
                    message: format!(
                        "{} has an action but is not among the entities looked for",
                        kind(*entity).as_str()
                    ),
                });
            }
        }
    }
    let mut rules_custom = Vec::with_capacity(custom.len());
    for (index, rule) in custom.iter().enumerate() {
        let matcher = match (&rule.pattern, &rule.words) {
            (Some(pattern), None) => Matcher::Pattern(pattern.clone()),
            (None, Some(words)) => Matcher::Words(words.clone()),
            _ => {
                return Err(GuardError {
                    field: format!("{side_name}.custom[{index}]"),
                    message: "a custom rule has exactly one of pattern and words".into(),
                });
            }
        };
        if custom[..index].iter().any(|r| r.name == rule.name) {
            return Err(GuardError {
                field: format!("{side_name}.custom[{index}].name"),
                message: format!("{:?} is used by another rule", rule.name),
            });
        }
        rules_custom.push(CustomRule {
            name: rule.name.clone(),
            matcher,
            action: action(rule.action),
        });
    }
    let rules = Rules::new(recognizers.clone(), &builtin, &rules_custom).map_err(|e| {
        let field = match &e {
            tollgate_guard::RuleError::Name { name }
            | tollgate_guard::RuleError::Matcher { name, .. } => {
                let index = custom.iter().position(|r| &r.name == name).unwrap_or(0);
                format!("{side_name}.custom[{index}]")
            }
            tollgate_guard::RuleError::TooMany => format!("{side_name}.custom"),
        };
        GuardError {
            field,
            message: e.to_string(),
        }
    })?;
    Ok((!rules.is_empty()).then_some(rules))
}

fn kind(entity: PiiEntity) -> Kind {
    match entity {
        PiiEntity::Email => Kind::Email,
        PiiEntity::Phone => Kind::Phone,
        PiiEntity::CreditCard => Kind::CreditCard,
        PiiEntity::UsSsn => Kind::UsSsn,
        PiiEntity::Iban => Kind::Iban,
        PiiEntity::IpAddress => Kind::IpAddress,
        PiiEntity::Secret => Kind::Secret,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(yaml: &str) -> Result<GuardPolicy, GuardError> {
        let spec: GuardPolicySpec = serde_yaml::from_str(yaml).unwrap();
        GuardPolicy::build(&spec, &Arc::new(Recognizers::new()))
    }

    #[test]
    fn a_typical_policy_builds_both_sides() {
        let policy = build(
            "name: strict\ninput:\n  pii: {action: Mask, actions: {SECRET: Block}}\n  custom: [{name: PROJECT, words: [falcon]}]\n  injection: {action: Flag, threshold: 0.7}\noutput:\n  pii: {entities: [CREDIT_CARD], action: Mask}\n",
        )
        .unwrap();
        let input = policy.input.unwrap();
        assert_eq!(input.action(Kind::Email), Some(Action::Mask));
        assert_eq!(input.action(Kind::Secret), Some(Action::Block));
        assert_eq!(input.label(Kind::Custom(0)), "PROJECT");
        let output = policy.output.unwrap();
        assert_eq!(output.action(Kind::CreditCard), Some(Action::Redact));
        assert_eq!(output.action(Kind::Email), None);
        assert_eq!(
            policy.injection,
            Some(Injection {
                block: false,
                threshold: 0.7,
                judge: None,
            })
        );
    }

    #[test]
    fn an_empty_side_costs_nothing() {
        let policy = build("name: noop\ninput: {}\noutput: {custom: []}\n").unwrap();
        assert!(policy.input.is_none() && policy.output.is_none() && policy.injection.is_none());
    }

    #[test]
    fn mistakes_name_their_field() {
        let error = build(
            "name: p\noutput:\n  custom: [{name: OK, words: [a]}, {name: BAD, pattern: '('}]\n",
        )
        .err()
        .unwrap();
        assert_eq!(error.field, "output.custom[1]");
        let error = build("name: p\ninput:\n  pii: {entities: [EMAIL], actions: {PHONE: Block}}\n")
            .err()
            .unwrap();
        assert_eq!(error.field, "input.pii.actions");
        let error =
            build("name: p\ninput:\n  custom: [{name: A, words: [x]}, {name: A, words: [y]}]\n")
                .err()
                .unwrap();
        assert_eq!(error.field, "input.custom[1].name");
    }
}
