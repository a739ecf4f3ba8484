//! Checks one manifest document the way the apiserver would: known kind,
//! field types and unknown fields (typed deserialization), then the CEL rules
//! of the CRD schema. Pure: the environment lookup is passed in.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::core::cel::{CompiledSchema, Validator, compile_schema};
use kube::{CustomResourceExt, Resource};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tollgate_api::{AIGateway, AIRoute, MCPServer, ModelProvider, TokenBudget};

use crate::diagnostics::{Diagnostic, ObjectRef, Severity};
use crate::resources::DEFAULT_NAMESPACE;
use crate::schema;

/// A document that passed validation.
#[derive(Debug, Clone)]
pub enum Document {
    Gateway(Box<AIGateway>),
    Provider(Box<ModelProvider>),
    Route(Box<AIRoute>),
    Budget(Box<TokenBudget>),
    McpServer(Box<MCPServer>),
    Secret(Box<Secret>),
    ConfigMap(Box<ConfigMap>),
}

impl Document {
    pub fn object_ref(&self) -> ObjectRef {
        match self {
            Document::Gateway(o) => crate::resources::object_ref(o.as_ref()),
            Document::Provider(o) => crate::resources::object_ref(o.as_ref()),
            Document::Route(o) => crate::resources::object_ref(o.as_ref()),
            Document::Budget(o) => crate::resources::object_ref(o.as_ref()),
            Document::McpServer(o) => crate::resources::object_ref(o.as_ref()),
            Document::Secret(o) => crate::resources::object_ref(o.as_ref()),
            Document::ConfigMap(o) => crate::resources::object_ref(o.as_ref()),
        }
    }
}

/// Result of checking one document: the typed object, or why not; plus
/// warnings (for example a kind Tollgate does not read).
pub struct Checked {
    pub document: Option<Document>,
    pub diagnostics: Vec<Diagnostic>,
}

/// Validates one parsed manifest. `env` resolves `${NAME}` in Secret
/// `stringData`; `schemas` holds the CRD schemas built so far by this load.
pub fn check(value: Value, env: &dyn Fn(&str) -> Option<String>, schemas: &mut Schemas) -> Checked {
    let api_version = value
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let kind = value
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let name = value
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let namespace = value
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or(DEFAULT_NAMESPACE)
        .to_string();
    let object = ObjectRef::new(
        if kind.is_empty() { "<no kind>" } else { &kind },
        &namespace,
        if name.is_empty() { "<no name>" } else { &name },
    );
    let fail = |field: &str, message: String| Checked {
        document: None,
        diagnostics: vec![Diagnostic::error(
            &object,
            field,
            tollgate_api::conditions::reason::INVALID,
            message,
        )],
    };
    if kind.is_empty() {
        return fail("kind", "required field is missing".into());
    }
    if name.is_empty() {
        return fail("metadata.name", "required field is missing".into());
    }
    let tollgate_kind = matches!(
        kind.as_str(),
        "AIGateway" | "ModelProvider" | "AIRoute" | "TokenBudget" | "MCPServer"
    );
    if tollgate_kind && api_version != tollgate_api::API_VERSION {
        return fail(
            "apiVersion",
            format!(
                "{kind} is served as {}, not {api_version:?}",
                tollgate_api::API_VERSION
            ),
        );
    }
    let result = match (api_version.as_str(), kind.as_str()) {
        (_, "AIGateway") => {
            custom::<AIGateway>(value, schemas).map(|o| Document::Gateway(Box::new(o)))
        }
        (_, "ModelProvider") => {
            custom::<ModelProvider>(value, schemas).map(|o| Document::Provider(Box::new(o)))
        }
        (_, "AIRoute") => custom::<AIRoute>(value, schemas).map(|o| Document::Route(Box::new(o))),
        (_, "TokenBudget") => {
            custom::<TokenBudget>(value, schemas).map(|o| Document::Budget(Box::new(o)))
        }
        (_, "MCPServer") => {
            custom::<MCPServer>(value, schemas).map(|o| Document::McpServer(Box::new(o)))
        }
        ("v1", "Secret") => typed::<Secret>(value, None)
            .and_then(|s| expand_secret(s, env))
            .map(|o| Document::Secret(Box::new(o))),
        ("v1", "ConfigMap") => {
            typed::<ConfigMap>(value, None).map(|o| Document::ConfigMap(Box::new(o)))
        }
        _ => {
            return Checked {
                document: None,
                diagnostics: vec![Diagnostic {
                    severity: Severity::Warning,
                    ..Diagnostic::error(
                        &object,
                        "kind",
                        "Ignored",
                        format!("{api_version} {kind} is not read by Tollgate; ignored"),
                    )
                }],
            };
        }
    };
    match result {
        Ok(document) => Checked {
            document: Some(document),
            diagnostics: Vec::new(),
        },
        Err(problems) => Checked {
            document: None,
            diagnostics: problems
                .into_iter()
                .map(|(field, message)| {
                    Diagnostic::error(
                        &object,
                        field,
                        tollgate_api::conditions::reason::INVALID,
                        message,
                    )
                })
                .collect(),
        },
    }
}

type Problems = Vec<(String, String)>;

/// A Tollgate kind, checked against its CRD's schema.
fn custom<K>(value: Value, schemas: &mut Schemas) -> Result<K, Problems>
where
    K: DeserializeOwned + CustomResourceExt + Resource<DynamicType = ()>,
{
    typed(value, schemas.get::<K>())
}

/// The schema (every unknown field, type, enum and required field), then
/// CEL, then typed deserialization, which would stop at the first error.
fn typed<K>(value: Value, schema: Option<&KindSchema>) -> Result<K, Problems>
where
    K: DeserializeOwned,
{
    if let Some(kind) = schema {
        let found = schema::check(&kind.schema, &value);
        // CEL on a wrongly shaped object reports noise, not the user's mistake.
        let shaped = !found.iter().any(|p| p.structural);
        let mut problems: Problems = found.into_iter().map(|p| (p.field, p.message)).collect();
        if shaped && let Err(errors) = Validator::new().validate_compiled(&kind.rules, &value, None)
        {
            problems.extend(
                errors
                    .iter()
                    .map(|e| (e.field_path.clone(), e.message.clone())),
            );
        }
        if !problems.is_empty() {
            return Err(problems);
        }
    }
    serde_path_to_error::deserialize::<_, K>(value).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { String::new() } else { path };
        vec![(field, e.into_inner().to_string())]
    })
}

/// A Tollgate CRD's schema, and its CEL rules compiled.
struct KindSchema {
    schema: Value,
    rules: CompiledSchema,
}

/// The CRD schemas one load has needed, each built (generated, and its CEL
/// rules compiled) the first time a document of its kind is checked. A kind
/// no document uses costs nothing, and the schemas go when the load does:
/// a gateway reads its files at start and when they change, and would
/// otherwise hold every kind's schema (over 1 MiB) for its whole life.
#[derive(Default)]
pub struct Schemas {
    by_kind: BTreeMap<String, Option<KindSchema>>,
}

impl std::fmt::Debug for Schemas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.by_kind.keys()).finish()
    }
}

impl Schemas {
    fn get<K>(&mut self) -> Option<&KindSchema>
    where
        K: CustomResourceExt + Resource<DynamicType = ()>,
    {
        self.by_kind
            .entry(K::kind(&()).into_owned())
            .or_insert_with(|| {
                let crd = K::crd();
                let version = crd.spec.versions.into_iter().next()?;
                let schema = serde_json::to_value(version.schema?.open_api_v3_schema?).ok()?;
                let rules = compile_schema(&schema);
                Some(KindSchema { schema, rules })
            })
            .as_ref()
    }
}

/// Moves `stringData` into `data` (as the apiserver does), resolving `${NAME}`
/// from the environment so keys need not be written into files.
fn expand_secret(
    mut secret: Secret,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Secret, Problems> {
    let mut problems = Vec::new();
    if let Some(string_data) = secret.string_data.take() {
        let data = secret.data.get_or_insert_with(BTreeMap::new);
        for (key, text) in string_data {
            match expand_env(&text, env) {
                Ok(expanded) => {
                    data.insert(key, ByteString(expanded.into_bytes()));
                }
                Err(missing) => problems.push((
                    format!("stringData.{key}"),
                    format!("environment variable {missing} is not set"),
                )),
            }
        }
    }
    if problems.is_empty() {
        Ok(secret)
    } else {
        Err(problems)
    }
}

/// Replaces every `${NAME}`; `$$` stays a literal `$`. Returns the first missing name.
pub fn expand_env(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let Some(end) = body.find('}') else {
                out.push('$');
                rest = after;
                continue;
            };
            let name = &body[..end];
            out.push_str(&env(name).ok_or_else(|| name.to_string())?);
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn errors(value: Value) -> Vec<String> {
        check(value, &no_env, &mut Schemas::default())
            .diagnostics
            .iter()
            .map(|d| d.to_string())
            .collect()
    }

    fn route(spec: Value) -> Value {
        json!({"apiVersion": "tollgate.dev/v1alpha1", "kind": "AIRoute", "metadata": {"name": "r"}, "spec": spec})
    }

    #[test]
    fn valid_route_is_typed() {
        let checked = check(
            route(
                json!({"gatewayRef": {"name": "gw"}, "models": ["chat"], "backends": [{"providerRef": {"name": "p"}, "model": "m"}]}),
            ),
            &no_env,
            &mut Schemas::default(),
        );
        assert!(checked.diagnostics.is_empty(), "{:?}", checked.diagnostics);
        let Some(Document::Route(r)) = checked.document else {
            panic!("not a route")
        };
        assert_eq!(r.spec.backends[0].weight, 1);
    }

    #[test]
    fn cel_rules_reject_bad_values_with_field_paths() {
        let errs = errors(route(json!({
            "gatewayRef": {"name": "gw"}, "models": ["chat"],
            "backends": [{"providerRef": {"name": "p"}, "model": "m", "weight": 101}]
        })));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].contains("spec.backends[0].weight: weight must be between 0 and 100"),
            "{errs:?}"
        );

        let errs = errors(route(
            json!({"gatewayRef": {"name": "gw"}, "models": ["chat"], "backends": []}),
        ));
        assert!(
            errs.iter()
                .any(|e| e.contains("spec.backends: at least one backend is required")),
            "{errs:?}"
        );
    }

    #[test]
    fn cel_rules_keep_tiers_and_backends_in_agreement() {
        let spec = |tiers: Value, backends: Value, policy: Value| {
            let mut spec =
                json!({"gatewayRef": {"name": "gw"}, "models": ["chat"], "backends": backends});
            if !tiers.is_null() {
                spec["tiers"] = tiers;
            }
            if !policy.is_null() {
                spec["tierPolicy"] = policy;
            }
            errors(route(spec))
        };
        let two = json!([{"name": "cheap"}, {"name": "strong"}]);
        let b = |tier: &str| json!({"providerRef": {"name": "p"}, "model": "m", "tier": tier});
        let plain = json!({"providerRef": {"name": "p"}, "model": "m"});
        assert_eq!(
            spec(
                two.clone(),
                json!([b("cheap"), b("strong")]),
                json!({"classifier": "Heuristic", "defaultTier": "cheap"})
            ),
            Vec::<String>::new()
        );
        let has = |errs: Vec<String>, message: &str| {
            assert!(
                errs.iter().any(|e| e.contains(message)),
                "{message}: {errs:?}"
            )
        };
        use tollgate_api::route::*;
        has(
            spec(two.clone(), json!([b("cheap"), plain.clone()]), Value::Null),
            BACKEND_TIER_MESSAGE,
        );
        has(
            spec(Value::Null, json!([b("cheap")]), Value::Null),
            BACKEND_TIER_MESSAGE,
        );
        has(
            spec(two.clone(), json!([b("cheap"), b("cheap")]), Value::Null),
            TIER_EMPTY_MESSAGE,
        );
        has(
            spec(Value::Null, json!([plain.clone()]), json!({})),
            TIER_POLICY_MESSAGE,
        );
        has(
            spec(
                two.clone(),
                json!([b("cheap"), b("strong")]),
                json!({"defaultTier": "gold"}),
            ),
            DEFAULT_TIER_MESSAGE,
        );
        has(
            spec(
                json!([{"name": "a"}, {"name": "a"}]),
                json!([b("a")]),
                Value::Null,
            ),
            TIERS_UNIQUE_MESSAGE,
        );
        has(
            spec(json!([{"name": "a"}]), json!([b("a")]), Value::Null),
            "at least two tiers",
        );
        has(
            spec(
                json!([{"name": "A b"}, {"name": "c"}]),
                json!([b("A b"), b("c")]),
                Value::Null,
            ),
            TIER_NAME_MESSAGE,
        );
        has(
            spec(
                two,
                json!([b("cheap"), b("strong")]),
                json!({"classifier": "Embedding"}),
            ),
            "spec.tierPolicy.classifier",
        );
    }

    #[test]
    fn unknown_fields_and_wrong_types_name_the_field() {
        let errs = errors(route(json!({
            "gatewayRef": {"name": "gw"}, "models": ["chat"],
            "backends": [{"providerRef": {"name": "p"}, "model": "m", "wieght": 3}]
        })));
        assert_eq!(
            errs,
            ["AIRoute/r: spec.backends[0].wieght: unknown field \"wieght\""]
        );
        let errs = errors(route(
            json!({"gatewayRef": {"name": "gw"}, "models": "chat", "backends": []}),
        ));
        assert!(errs.iter().any(|e| e.contains("spec.models")), "{errs:?}");
    }

    #[test]
    fn every_decode_error_of_an_object_is_reported() {
        let mut errs = errors(route(json!({
            "gatewayRef": {"name": "gw"}, "modles": ["chat"],
            "backends": [{"providerRef": {"name": "p"}, "model": "m", "wieght": 3, "priority": "high"}]
        })));
        errs.sort();
        assert_eq!(
            errs,
            [
                "AIRoute/r: spec.backends[0].priority: Invalid value: \"string\": must be of type integer",
                "AIRoute/r: spec.backends[0].wieght: unknown field \"wieght\"",
                "AIRoute/r: spec.models: Required value",
                "AIRoute/r: spec.modles: unknown field \"modles\"",
            ]
        );
    }

    #[test]
    fn unknown_enum_values_read_as_kubectl_says_them() {
        let errs = errors(provider(
            json!({"type": "openai", "endpoint": "https://api.openai.com/v1"}),
        ));
        assert_eq!(
            errs,
            [
                "ModelProvider/p: spec.type: Unsupported value: \"openai\": supported values: \"OpenAI\", \"OpenAICompatible\", \"AzureOpenAI\", \"Anthropic\", \"Bedrock\", \"Gemini\", \"Mock\""
            ]
        );
    }

    #[test]
    fn endpoints_need_a_host() {
        for bad in [
            "http://",
            "https:///v1",
            "http://host/v1?x=1",
            "http://host/#x",
            "http://user@host",
            "ftp://host",
        ] {
            let errs = errors(provider(json!({"type": "Mock", "endpoint": bad})));
            assert_eq!(
                errs,
                [format!(
                    "ModelProvider/p: spec.endpoint: {}",
                    tollgate_api::provider::ENDPOINT_MESSAGE
                )],
                "{bad}"
            );
        }
        for good in [
            "http://vllm:8000/v1",
            "https://a.b/",
            "http://[::1]:80",
            "http://h",
        ] {
            assert_eq!(
                errors(provider(json!({"type": "Mock", "endpoint": good}))),
                Vec::<String>::new(),
                "{good}"
            );
        }
    }

    #[test]
    fn a_moderation_window_needs_output_moderation() {
        let gateway = |output: Value| {
            json!({"apiVersion": "tollgate.dev/v1alpha1", "kind": "AIGateway", "metadata": {"name": "gw"},
                "spec": {"guardPolicies": [{"name": "p", "output": output}]}})
        };
        let errs = errors(gateway(json!({"streamModerationWindow": 64})));
        assert!(
            errs.iter().any(|e| e.contains(
                "spec.guardPolicies[0].output: streamModerationWindow sets the window of output moderation: it needs moderation"
            )),
            "{errs:?}"
        );
        let moderated =
            json!({"streamModerationWindow": 64, "moderation": {"providerRef": {"name": "m"}}});
        assert_eq!(errors(gateway(moderated)), Vec::<String>::new());
    }

    fn provider(spec: Value) -> Value {
        json!({"apiVersion": "tollgate.dev/v1alpha1", "kind": "ModelProvider", "metadata": {"name": "p"}, "spec": spec})
    }

    #[test]
    fn provider_rules_cross_fields() {
        let errs = errors(provider(json!({"type": "OpenAICompatible"})));
        assert!(
            errs.iter().any(|e| e.contains(
                "endpoint is required unless type is OpenAI, Anthropic, Gemini or Bedrock"
            )),
            "{errs:?}"
        );
    }

    #[test]
    fn new_provider_types_accept_good_manifests() {
        let key = json!({"secretRef": {"name": "s", "key": "k"}});
        for spec in [
            json!({"type": "Anthropic", "credentials": key}),
            json!({"type": "Anthropic", "credentials": key, "anthropic": {"version": "2023-06-01"}}),
            json!({"type": "Gemini", "credentials": key}),
            json!({"type": "AzureOpenAI", "endpoint": "https://myres.openai.azure.com", "credentials": key}),
            json!({"type": "AzureOpenAI", "endpoint": "https://myres.openai.azure.com", "credentials": key,
                   "azure": {"apiVersion": "2025-01-01-preview", "auth": "EntraId"}}),
            json!({"type": "Bedrock", "bedrock": {"region": "us-east-1"},
                   "credentials": {"aws": {"secretName": "aws"}}}),
            json!({"type": "Bedrock", "bedrock": {"region": "us-gov-west-1"}, "endpoint": "https://vpce.example.com",
                   "credentials": {"aws": {"secretName": "aws", "accessKeyIdKey": "id", "secretAccessKeyKey": "secret", "sessionTokenKey": "token"}}}),
            json!({"type": "OpenAICompatible", "endpoint": "http://vllm:8000/v1"}),
        ] {
            let errs = errors(provider(spec.clone()));
            assert!(errs.is_empty(), "{spec}: {errs:?}");
        }
    }

    #[test]
    fn new_provider_rules_refuse_bad_manifests() {
        let key = json!({"secretRef": {"name": "s", "key": "k"}});
        let aws = json!({"aws": {"secretName": "aws"}});
        for (spec, message) in [
            (
                json!({"type": "AzureOpenAI", "credentials": key}),
                "endpoint is required unless type is OpenAI, Anthropic, Gemini or Bedrock",
            ),
            (
                json!({"type": "Gemini"}),
                "credentials.secretRef is required for types OpenAI, Anthropic, Gemini and AzureOpenAI",
            ),
            (
                json!({"type": "Anthropic", "credentials": aws}),
                "credentials.secretRef is required for types OpenAI, Anthropic, Gemini and AzureOpenAI",
            ),
            (
                json!({"type": "Bedrock", "credentials": aws}),
                "bedrock.region is required for type Bedrock",
            ),
            (
                json!({"type": "Bedrock", "bedrock": {"region": "us-east-1"}}),
                "credentials.aws is required for type Bedrock",
            ),
            (
                json!({"type": "Bedrock", "bedrock": {"region": "us-east-1"}, "credentials": {"aws": {"secretName": "aws"}, "secretRef": {"name": "s", "key": "k"}}}),
                "credentials.secretRef is not used by type Bedrock: use credentials.aws",
            ),
            (
                json!({"type": "Bedrock", "bedrock": {"region": "US East"}, "credentials": aws}),
                "spec.bedrock.region: region must be an AWS region such as us-east-1",
            ),
            (
                json!({"type": "OpenAI", "credentials": key, "bedrock": {"region": "us-east-1"}}),
                "bedrock is only valid for type Bedrock",
            ),
            (
                json!({"type": "OpenAI", "credentials": key, "azure": {}}),
                "azure is only valid for type AzureOpenAI",
            ),
            (
                json!({"type": "Gemini", "credentials": key, "anthropic": {}}),
                "anthropic is only valid for type Anthropic",
            ),
            (
                json!({"type": "OpenAI", "credentials": {"secretRef": {"name": "s", "key": "k"}, "aws": {"secretName": "aws"}}}),
                "credentials.aws is only valid for type Bedrock",
            ),
            (
                json!({"type": "OpenAICompatible", "endpoint": "http://x", "credentials": {}}),
                "credentials need secretRef or aws",
            ),
            (
                json!({"type": "Anthropic", "credentials": key, "anthropic": {"version": "2023-06-01T00:00:00Z"}}),
                "spec.anthropic.version: version must look like 2023-06-01",
            ),
            (
                json!({"type": "AzureOpenAI", "endpoint": "https://a.openai.azure.com", "credentials": key, "azure": {"apiVersion": "v1"}}),
                "apiVersion must look like 2024-10-21",
            ),
            (
                json!({"type": "AzureOpenAI", "endpoint": "https://a.openai.azure.com", "credentials": key, "azure": {"auth": "Password"}}),
                "spec.azure.auth",
            ),
        ] {
            let errs = errors(provider(spec.clone()));
            assert!(errs.iter().any(|e| e.contains(message)), "{spec}: {errs:?}");
        }
    }

    #[test]
    fn backend_without_model_needs_a_glob_alias() {
        let spec = |models: Value| {
            route(json!({"gatewayRef": {"name": "gw"}, "models": models,
                         "backends": [{"providerRef": {"name": "p"}}]}))
        };
        assert!(errors(spec(json!(["claude-*"]))).is_empty());
        let errs = errors(spec(json!(["chat"])));
        assert!(
            errs.iter()
                .any(|e| e
                    .contains("a backend without model passes the client's model name through")),
            "{errs:?}"
        );
    }

    #[test]
    fn foreign_kinds_are_warnings() {
        let checked = check(
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}}),
            &no_env,
            &mut Schemas::default(),
        );
        assert!(checked.document.is_none());
        assert_eq!(checked.diagnostics[0].severity, Severity::Warning);
    }

    #[test]
    fn secrets_expand_env_and_report_missing() {
        let env = |name: &str| (name == "KEY").then(|| "sk-123".to_string());
        let value = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "stringData": {"apiKey": "${KEY}"}});
        let Some(Document::Secret(secret)) = check(value, &env, &mut Schemas::default()).document
        else {
            panic!("no secret")
        };
        assert_eq!(secret.data.unwrap()["apiKey"].0, b"sk-123");

        let value = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "stringData": {"apiKey": "${MISSING}"}});
        let errs = errors(value);
        assert!(
            errs[0].contains("stringData.apiKey: environment variable MISSING is not set"),
            "{errs:?}"
        );
    }

    #[test]
    fn expand_env_handles_escapes_and_literals() {
        let env = |n: &str| (n == "A").then(|| "x".to_string());
        assert_eq!(expand_env("a${A}b", &env), Ok("axb".into()));
        assert_eq!(expand_env("$$A and $A", &env), Ok("$A and $A".into()));
        assert_eq!(expand_env("${B}", &env), Err("B".into()));
        assert_eq!(expand_env("${A", &env), Ok("${A".into()));
    }
}
