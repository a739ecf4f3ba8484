//! ModelProvider: endpoint, credentials, timeouts and model catalog.

use std::collections::BTreeMap;

use tollgate_api::conditions::reason;
use tollgate_api::duration;
use tollgate_api::provider::{
    DEFAULT_ANTHROPIC_VERSION, DEFAULT_AZURE_API_VERSION, ENDPOINT_MESSAGE,
};
use tollgate_api::{
    AwsCredentialsRef, AzureAuthMode, ModelKind, ModelProvider, ProviderType, SecretKeyRef,
};

use super::{
    ANTHROPIC_ENDPOINT, DEFAULT_CONNECT_TIMEOUT_MS, DEFAULT_REQUEST_TIMEOUT_MS, GEMINI_ENDPOINT,
    OPENAI_ENDPOINT, SecretIndex, parse_duration_ms,
};
use crate::diagnostics::{Diagnostic, ObjectRef};
use crate::egress::EgressPolicy;
use crate::resources::object_ref;
use crate::snapshot::{
    AwsCredentials, AzureAuth, CatalogModel, CircuitBreaker, Credential, Fairness, Pricing,
    Provider,
};

pub(super) fn compile_provider(
    provider: &ModelProvider,
    secrets: &SecretIndex,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Provider> {
    let object = object_ref(provider);
    let spec = &provider.spec;
    let errors_before = diagnostics.len();

    let ty = spec.provider_type;
    let aws_ref = spec.credentials.as_ref().and_then(|c| c.aws.as_ref());
    let secret_ref = spec
        .credentials
        .as_ref()
        .and_then(|c| c.secret_ref.as_ref());

    // Type-specific blocks on another type would be silently ignored: refuse them.
    for (set, field, owner) in [
        (
            spec.bedrock.is_some(),
            "spec.bedrock",
            ProviderType::Bedrock,
        ),
        (
            spec.azure.is_some(),
            "spec.azure",
            ProviderType::AzureOpenAI,
        ),
        (
            spec.anthropic.is_some(),
            "spec.anthropic",
            ProviderType::Anthropic,
        ),
        (
            aws_ref.is_some(),
            "spec.credentials.aws",
            ProviderType::Bedrock,
        ),
    ] {
        if set && ty != owner {
            invalid(
                diagnostics,
                &object,
                field,
                format!(
                    "{} is only valid for type {}",
                    field.trim_start_matches("spec."),
                    owner.as_str()
                ),
            );
        }
    }

    let region = match (ty, &spec.bedrock) {
        (ProviderType::Bedrock, Some(bedrock)) if is_aws_region(&bedrock.region) => {
            Some(bedrock.region.clone())
        }
        (ProviderType::Bedrock, Some(_)) => {
            invalid(
                diagnostics,
                &object,
                "spec.bedrock.region",
                "region must be an AWS region such as us-east-1",
            );
            None
        }
        (ProviderType::Bedrock, None) => {
            invalid(
                diagnostics,
                &object,
                "spec.bedrock",
                "bedrock.region is required for type Bedrock",
            );
            None
        }
        _ => None,
    };

    let default_endpoint = match ty {
        ProviderType::OpenAI => Some(OPENAI_ENDPOINT.to_string()),
        ProviderType::Anthropic => Some(ANTHROPIC_ENDPOINT.to_string()),
        ProviderType::Gemini => Some(GEMINI_ENDPOINT.to_string()),
        ProviderType::Bedrock => region.as_deref().map(bedrock_endpoint),
        ProviderType::AzureOpenAI | ProviderType::OpenAICompatible | ProviderType::Mock => None,
    };
    let endpoint = match (&spec.endpoint, default_endpoint) {
        (Some(endpoint), _) => endpoint.trim_end_matches('/').to_string(),
        (None, Some(default)) => default,
        // Bedrock without a region: already reported above.
        (None, None) if ty == ProviderType::Bedrock => String::new(),
        (None, None) => {
            invalid(
                diagnostics,
                &object,
                "spec.endpoint",
                "endpoint is required unless type is OpenAI, Anthropic, Gemini or Bedrock",
            );
            String::new()
        }
    };
    let network = match (&spec.network, spec.provider_type) {
        (None, ProviderType::Mock) => EgressPolicy::OPEN,
        (network, _) => {
            let network = network.clone().unwrap_or_default();
            EgressPolicy {
                allow_loopback: network.allow_loopback.unwrap_or(false),
                allow_link_local: network.allow_link_local.unwrap_or(false),
            }
        }
    };
    if let Some(host) = endpoint
        .parse::<http::Uri>()
        .ok()
        .and_then(|uri| uri.host().map(str::to_string))
        && let Err(class) = network.check_host(&host)
    {
        let (what, field) = class.describe();
        invalid(
            diagnostics,
            &object,
            "spec.endpoint",
            format!(
                "endpoint host {host} is {what}, refused by the SSRF guard; set {field}: true to allow it"
            ),
        );
    }
    // The value as written: trimming `http://` of its slash would hide that it has no host.
    if let Some(written) = &spec.endpoint
        && !is_endpoint(written)
    {
        invalid(diagnostics, &object, "spec.endpoint", ENDPOINT_MESSAGE);
    }

    let needs_key = matches!(
        ty,
        ProviderType::OpenAI
            | ProviderType::Anthropic
            | ProviderType::Gemini
            | ProviderType::AzureOpenAI
    );
    let api_key = match secret_ref {
        Some(_) if ty == ProviderType::Bedrock => {
            invalid(
                diagnostics,
                &object,
                "spec.credentials.secretRef",
                "credentials.secretRef is not used by type Bedrock: use credentials.aws",
            );
            None
        }
        Some(reference) => header_credential(
            secrets,
            &object,
            reference,
            "spec.credentials.secretRef",
            diagnostics,
        ),
        None if needs_key => {
            invalid(
                diagnostics,
                &object,
                "spec.credentials.secretRef",
                format!("credentials.secretRef is required for type {}", ty.as_str()),
            );
            None
        }
        None if spec.credentials.is_some() && aws_ref.is_none() => {
            invalid(
                diagnostics,
                &object,
                "spec.credentials",
                "credentials need secretRef or aws",
            );
            None
        }
        None => None,
    };

    let aws = match (ty, aws_ref) {
        (ProviderType::Bedrock, Some(reference)) => {
            aws_credentials(secrets, &object, reference, diagnostics)
        }
        (ProviderType::Bedrock, None) => {
            invalid(
                diagnostics,
                &object,
                "spec.credentials.aws",
                "credentials.aws is required for type Bedrock",
            );
            None
        }
        _ => None,
    };

    let (api_version, azure_auth) = match ty {
        ProviderType::AzureOpenAI => {
            let azure = spec.azure.clone().unwrap_or_default();
            let version = azure
                .api_version
                .unwrap_or_else(|| DEFAULT_AZURE_API_VERSION.to_string());
            if !is_api_version(&version, true) {
                invalid(
                    diagnostics,
                    &object,
                    "spec.azure.apiVersion",
                    "apiVersion must look like 2024-10-21 or 2025-01-01-preview",
                );
            }
            let auth = match azure.auth {
                AzureAuthMode::ApiKey => AzureAuth::ApiKey,
                AzureAuthMode::EntraId => AzureAuth::EntraId,
            };
            (Some(version), Some(auth))
        }
        ProviderType::Anthropic => {
            let version = spec
                .anthropic
                .as_ref()
                .and_then(|a| a.version.clone())
                .unwrap_or_else(|| DEFAULT_ANTHROPIC_VERSION.to_string());
            if !is_api_version(&version, false) {
                invalid(
                    diagnostics,
                    &object,
                    "spec.anthropic.version",
                    "version must look like 2023-06-01",
                );
            }
            (Some(version), None)
        }
        _ => (None, None),
    };

    let timeouts = spec.timeouts.clone().unwrap_or_default();
    let connect = parse_duration_ms(
        timeouts.connect.as_ref(),
        Some(DEFAULT_CONNECT_TIMEOUT_MS),
        &object,
        "spec.timeouts.connect",
        diagnostics,
    );
    let request = parse_duration_ms(
        timeouts.request.as_ref(),
        Some(DEFAULT_REQUEST_TIMEOUT_MS),
        &object,
        "spec.timeouts.request",
        diagnostics,
    );

    let fairness = fairness(spec, &object, diagnostics);
    let circuit_breaker = circuit_breaker(spec, &object, diagnostics);

    let mut models = BTreeMap::new();
    for (index, model) in spec.models.iter().enumerate() {
        let pricing = model
            .pricing
            .as_ref()
            .map_or_else(Pricing::default, |p| Pricing {
                input_per_million: p.input_per_million,
                output_per_million: p.output_per_million,
                cached_input_per_million: p.cached_input_per_million.unwrap_or(p.input_per_million),
            });
        let entry = CatalogModel {
            kind: model.kind.unwrap_or_else(|| ModelKind::guess(&model.name)),
            pricing,
            context_window: model.context_window,
        };
        if models.insert(model.name.clone(), entry).is_some() {
            diagnostics.push(Diagnostic::error(
                &object,
                format!("spec.models[{index}]"),
                reason::INVALID,
                format!("Duplicate value: {{\"name\":{:?}}}", model.name),
            ));
        }
    }

    if diagnostics.len() > errors_before {
        return None;
    }
    Some(Provider {
        name: object.name.as_str().into(),
        provider_type: spec.provider_type,
        base_url: endpoint,
        network,
        api_key,
        aws,
        data_region: spec.data_region.clone().or_else(|| region.clone()),
        region,
        api_version,
        azure_auth,
        connect_timeout_ms: connect.ok().flatten().unwrap_or(DEFAULT_CONNECT_TIMEOUT_MS),
        request_timeout_ms: request.ok().flatten().unwrap_or(DEFAULT_REQUEST_TIMEOUT_MS),
        max_concurrent_requests: spec.max_concurrent_requests,
        fairness,
        circuit_breaker,
        models,
    })
}

/// `spec.circuitBreaker` over the defaults.
fn circuit_breaker(
    spec: &tollgate_api::ModelProviderSpec,
    object: &ObjectRef,
    diagnostics: &mut Vec<Diagnostic>,
) -> CircuitBreaker {
    let defaults = CircuitBreaker::default();
    let Some(settings) = &spec.circuit_breaker else {
        return defaults;
    };
    let open_for = parse_duration_ms(
        settings.open_for.as_ref(),
        Some(defaults.open_for_ms),
        object,
        "spec.circuitBreaker.openFor",
        diagnostics,
    );
    CircuitBreaker {
        consecutive_failures: settings
            .consecutive_failures
            .unwrap_or(defaults.consecutive_failures)
            .clamp(1, 1000),
        error_rate_percent: settings
            .error_rate_percent
            .unwrap_or(defaults.error_rate_percent)
            .clamp(1, 100),
        min_requests: settings
            .min_requests
            .unwrap_or(defaults.min_requests)
            .clamp(1, 32),
        open_for_ms: open_for.ok().flatten().unwrap_or(defaults.open_for_ms),
        disabled: settings.enabled == Some(false),
    }
}

/// `spec.fairness` with its defaults; only meaningful with a cap.
fn fairness(
    spec: &tollgate_api::ModelProviderSpec,
    object: &ObjectRef,
    diagnostics: &mut Vec<Diagnostic>,
) -> Fairness {
    let mut fairness = Fairness::default();
    let Some(settings) = &spec.fairness else {
        return fairness;
    };
    if spec.max_concurrent_requests.is_none() {
        invalid(
            diagnostics,
            object,
            "spec.fairness",
            "fairness needs maxConcurrentRequests",
        );
    }
    if let Some(share) = settings.max_share {
        if share > 0.0 && share <= 1.0 {
            fairness.max_share = share;
        } else {
            invalid(
                diagnostics,
                object,
                "spec.fairness.maxShare",
                "maxShare must be greater than 0 and at most 1",
            );
        }
    }
    if let Some(text) = &settings.max_queue_wait {
        match duration::parse(text) {
            Ok(wait) => {
                fairness.max_queue_wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
            }
            // The CEL rule's message, so file and cluster say the same.
            Err(_) => invalid(
                diagnostics,
                object,
                "spec.fairness.maxQueueWait",
                "must be a duration such as 0s, 500ms or 2s",
            ),
        }
    }
    fairness
}

fn invalid(
    diagnostics: &mut Vec<Diagnostic>,
    object: &ObjectRef,
    field: &str,
    message: impl Into<String>,
) {
    diagnostics.push(Diagnostic::error(object, field, reason::INVALID, message));
}

/// Bedrock Runtime's regional endpoint, the default for type Bedrock.
pub fn bedrock_endpoint(region: &str) -> String {
    format!("https://bedrock-runtime.{region}.amazonaws.com")
}

/// A Secret value that will be sent in an HTTP header, so it must be a valid
/// header value; problems are reported on `field`.
fn header_credential(
    secrets: &SecretIndex,
    object: &ObjectRef,
    reference: &SecretKeyRef,
    field: &str,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Credential> {
    match secrets.value(&object.namespace, reference) {
        Ok(key) if http::HeaderValue::from_str(&format!("Bearer {key}")).is_err() => {
            invalid(
                diagnostics,
                object,
                field,
                "the key contains characters not allowed in an HTTP header (a line break?)",
            );
            None
        }
        Ok(key) => Some(Credential(key)),
        Err((why, message)) => {
            diagnostics.push(Diagnostic::error(object, field, why, message));
            None
        }
    }
}

/// The AWS keys of a Bedrock provider. A missing Secret is reported once, on
/// `secretName`; a missing key on the field that names it.
fn aws_credentials(
    secrets: &SecretIndex,
    object: &ObjectRef,
    reference: &AwsCredentialsRef,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<AwsCredentials> {
    if !secrets.contains(&object.namespace, &reference.secret_name) {
        diagnostics.push(Diagnostic::error(
            object,
            "spec.credentials.aws.secretName",
            reason::SECRET_NOT_FOUND,
            format!(
                "Secret {:?} not found in namespace {}",
                reference.secret_name, object.namespace
            ),
        ));
        return None;
    }
    let mut read = |key: &str, field: &str| {
        let key_ref = SecretKeyRef {
            name: reference.secret_name.clone(),
            key: key.to_string(),
        };
        header_credential(
            secrets,
            object,
            &key_ref,
            &format!("spec.credentials.aws.{field}"),
            diagnostics,
        )
    };
    let access_key_id = read(&reference.access_key_id_key, "accessKeyIdKey");
    let secret_access_key = read(&reference.secret_access_key_key, "secretAccessKeyKey");
    let session_token = match &reference.session_token_key {
        Some(key) => Some(read(key, "sessionTokenKey")?),
        None => None,
    };
    Some(AwsCredentials {
        access_key_id: access_key_id?,
        secret_access_key: secret_access_key?,
        session_token,
    })
}

/// `us-east-1`, `us-gov-west-1`, `ap-southeast-2`: two letters, words, a
/// number. It becomes part of a host name, so nothing else may pass.
fn is_aws_region(region: &str) -> bool {
    let parts: Vec<&str> = region.split('-').collect();
    let [first, middle @ .., last] = parts.as_slice() else {
        return false;
    };
    region.len() <= 32
        && first.len() == 2
        && first.bytes().all(|b| b.is_ascii_lowercase())
        && !middle.is_empty()
        && middle
            .iter()
            .all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase()))
        && (1..=2).contains(&last.len())
        && last.bytes().all(|b| b.is_ascii_digit())
}

/// A dated API version, `2024-10-21`, optionally `-preview` (Azure).
fn is_api_version(version: &str, preview_allowed: bool) -> bool {
    let date = match version.strip_suffix("-preview") {
        Some(date) if preview_allowed => date,
        _ => version,
    };
    date.len() == 10
        && date.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 => b == b'-',
            _ => b.is_ascii_digit(),
        })
}

/// An absolute http(s) URL with a host, no user info, query or fragment:
/// what [`tollgate_api::provider::ENDPOINT_RULE`] accepts, checked by a parser.
fn is_endpoint(endpoint: &str) -> bool {
    let Ok(uri) = endpoint.parse::<http::Uri>() else {
        return false;
    };
    endpoint.len() <= 2048
        && matches!(uri.scheme_str(), Some("http" | "https"))
        && uri.host().is_some_and(|h| !h.is_empty())
        && uri.authority().is_some_and(|a| !a.as_str().contains('@'))
        && uri.query().is_none()
        && !endpoint.contains('#')
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::compile;
    use super::super::fixtures::{BASE, load};
    use super::*;
    use crate::resources::Resources;
    use tollgate_api::{AnthropicSettings, AzureSettings, BedrockSettings};

    const SECRETS: &str = r#"
apiVersion: v1
kind: Secret
metadata: {name: keys}
stringData: {apiKey: sk-live, accessKeyId: AKIAEXAMPLE, secretAccessKey: wJalrXUtnFEMI, token: "sess\n", custom: AKIACUSTOM}
"#;

    /// Loads (schema and CEL checked) `SECRETS` plus one ModelProvider `p`.
    fn resources(spec: &str) -> Resources {
        let text = format!(
            "{SECRETS}---\napiVersion: tollgate.dev/v1alpha1\nkind: ModelProvider\nmetadata: {{name: p}}\nspec:\n{spec}"
        );
        load(&text).resources
    }

    /// Compiles the one provider, maybe after `edit` changed what CEL would refuse.
    fn provider(resources: &Resources) -> (Option<Provider>, Vec<String>) {
        let secrets = SecretIndex::new(&resources.secrets);
        let mut diagnostics = Vec::new();
        let compiled = compile_provider(&resources.providers[0], &secrets, &mut diagnostics);
        let messages = diagnostics
            .iter()
            .map(|d| format!("{}: {}: {}", d.field, d.reason, d.message))
            .collect();
        (compiled, messages)
    }

    fn ok(spec: &str) -> Provider {
        let (compiled, messages) = provider(&resources(spec));
        assert!(messages.is_empty(), "{messages:?}");
        compiled.unwrap()
    }

    fn errors(resources: &Resources) -> Vec<String> {
        let (compiled, messages) = provider(resources);
        assert!(compiled.is_none(), "a provider with errors is left out");
        messages
    }

    #[test]
    fn anthropic_defaults_endpoint_and_version() {
        let p = ok("  type: Anthropic\n  credentials: {secretRef: {name: keys, key: apiKey}}\n");
        assert_eq!(p.base_url, ANTHROPIC_ENDPOINT);
        assert_eq!(p.api_version.as_deref(), Some("2023-06-01"));
        assert_eq!(p.api_key, Some(Credential("sk-live".into())));
        assert_eq!((p.aws, p.region, p.azure_auth), (None, None, None));

        let p = ok(
            "  type: Anthropic\n  endpoint: https://proxy.example/v1/\n  anthropic: {version: \"2024-01-01\"}\n  credentials: {secretRef: {name: keys, key: apiKey}}\n",
        );
        assert_eq!(p.base_url, "https://proxy.example/v1");
        assert_eq!(p.api_version.as_deref(), Some("2024-01-01"));
    }

    #[test]
    fn gemini_defaults_endpoint() {
        let p = ok("  type: Gemini\n  credentials: {secretRef: {name: keys, key: apiKey}}\n");
        assert_eq!(p.base_url, GEMINI_ENDPOINT);
        assert_eq!(p.api_key, Some(Credential("sk-live".into())));
        assert_eq!(p.api_version, None);
    }

    #[test]
    fn azure_defaults_and_settings() {
        let spec = "  type: AzureOpenAI\n  endpoint: https://myres.openai.azure.com\n  credentials: {secretRef: {name: keys, key: apiKey}}\n";
        let p = ok(spec);
        assert_eq!(p.base_url, "https://myres.openai.azure.com");
        assert_eq!(p.api_version.as_deref(), Some("2024-10-21"));
        assert_eq!(p.azure_auth, Some(AzureAuth::ApiKey));

        let p = ok(&format!(
            "{spec}  azure: {{apiVersion: \"2025-01-01-preview\", auth: EntraId}}\n"
        ));
        assert_eq!(p.api_version.as_deref(), Some("2025-01-01-preview"));
        assert_eq!(p.azure_auth, Some(AzureAuth::EntraId));

        let mut r = resources(spec);
        r.providers[0].spec.endpoint = None;
        assert_eq!(
            errors(&r),
            [
                "spec.endpoint: InvalidSpec: endpoint is required unless type is OpenAI, Anthropic, Gemini or Bedrock"
            ]
        );
    }

    #[test]
    fn bedrock_reads_aws_keys_and_region() {
        let p = ok(
            "  type: Bedrock\n  bedrock: {region: eu-central-1}\n  credentials: {aws: {secretName: keys, sessionTokenKey: token}}\n",
        );
        assert_eq!(
            p.base_url,
            "https://bedrock-runtime.eu-central-1.amazonaws.com"
        );
        assert_eq!(p.region.as_deref(), Some("eu-central-1"));
        assert_eq!(p.api_key, None);
        let aws = p.aws.unwrap();
        assert_eq!(aws.access_key_id, Credential("AKIAEXAMPLE".into()));
        assert_eq!(aws.secret_access_key, Credential("wJalrXUtnFEMI".into()));
        assert_eq!(
            aws.session_token,
            Some(Credential("sess".into())),
            "trimmed"
        );

        let p = ok(
            "  type: Bedrock\n  endpoint: https://vpce.example.com\n  bedrock: {region: us-gov-west-1}\n  credentials: {aws: {secretName: keys, accessKeyIdKey: custom}}\n",
        );
        assert_eq!(p.base_url, "https://vpce.example.com");
        let aws = p.aws.unwrap();
        assert_eq!(aws.access_key_id, Credential("AKIACUSTOM".into()));
        assert_eq!(aws.session_token, None);
    }

    #[test]
    fn bedrock_missing_secret_or_key_names_the_field() {
        let r = resources(
            "  type: Bedrock\n  bedrock: {region: us-east-1}\n  credentials: {aws: {secretName: nope, sessionTokenKey: token}}\n",
        );
        assert_eq!(
            errors(&r),
            [
                "spec.credentials.aws.secretName: SecretNotFound: Secret \"nope\" not found in namespace default"
            ],
            "reported once, not per key"
        );
        let r = resources(
            "  type: Bedrock\n  bedrock: {region: us-east-1}\n  credentials: {aws: {secretName: keys, secretAccessKeyKey: missing, sessionTokenKey: gone}}\n",
        );
        assert_eq!(
            errors(&r),
            [
                "spec.credentials.aws.secretAccessKeyKey: SecretNotFound: Secret \"keys\" has no key \"missing\"",
                "spec.credentials.aws.sessionTokenKey: SecretNotFound: Secret \"keys\" has no key \"gone\"",
            ]
        );
    }

    #[test]
    fn bedrock_needs_region_and_aws_credentials() {
        let spec = "  type: Bedrock\n  bedrock: {region: us-east-1}\n  credentials: {aws: {secretName: keys}}\n";
        let mut r = resources(spec);
        r.providers[0].spec.bedrock = None;
        r.providers[0].spec.credentials = None;
        assert_eq!(
            errors(&r),
            [
                "spec.bedrock: InvalidSpec: bedrock.region is required for type Bedrock",
                "spec.credentials.aws: InvalidSpec: credentials.aws is required for type Bedrock",
            ]
        );

        let mut r = resources(spec);
        r.providers[0].spec.bedrock = Some(BedrockSettings {
            region: "evil.com/x".into(),
        });
        if let Some(c) = r.providers[0].spec.credentials.as_mut() {
            c.secret_ref = Some(SecretKeyRef {
                name: "keys".into(),
                key: "apiKey".into(),
            });
        }
        assert_eq!(
            errors(&r),
            [
                "spec.bedrock.region: InvalidSpec: region must be an AWS region such as us-east-1",
                "spec.credentials.secretRef: InvalidSpec: credentials.secretRef is not used by type Bedrock: use credentials.aws",
            ]
        );
    }

    #[test]
    fn blocks_of_another_type_are_refused() {
        let mut r =
            resources("  type: OpenAI\n  credentials: {secretRef: {name: keys, key: apiKey}}\n");
        let spec = &mut r.providers[0].spec;
        spec.bedrock = Some(BedrockSettings {
            region: "us-east-1".into(),
        });
        spec.azure = Some(AzureSettings::default());
        spec.anthropic = Some(AnthropicSettings::default());
        if let Some(c) = spec.credentials.as_mut() {
            c.aws = Some(AwsCredentialsRef {
                secret_name: "keys".into(),
                access_key_id_key: "accessKeyId".into(),
                secret_access_key_key: "secretAccessKey".into(),
                session_token_key: None,
            });
        }
        assert_eq!(
            errors(&r),
            [
                "spec.bedrock: InvalidSpec: bedrock is only valid for type Bedrock",
                "spec.azure: InvalidSpec: azure is only valid for type AzureOpenAI",
                "spec.anthropic: InvalidSpec: anthropic is only valid for type Anthropic",
                "spec.credentials.aws: InvalidSpec: credentials.aws is only valid for type Bedrock",
            ]
        );
    }

    #[test]
    fn hosted_types_need_an_api_key() {
        for ty in ["OpenAI", "Anthropic", "Gemini"] {
            let mut r = resources(&format!(
                "  type: {ty}\n  credentials: {{secretRef: {{name: keys, key: apiKey}}}}\n"
            ));
            r.providers[0].spec.credentials = None;
            assert_eq!(
                errors(&r),
                [format!(
                    "spec.credentials.secretRef: InvalidSpec: credentials.secretRef is required for type {ty}"
                )]
            );
        }
    }

    #[test]
    fn api_versions_and_regions_are_checked() {
        assert!(is_aws_region("us-east-1"));
        assert!(is_aws_region("ap-southeast-2"));
        assert!(is_aws_region("us-gov-west-1"));
        assert!(!is_aws_region("us-east"));
        assert!(!is_aws_region("useast-1"));
        assert!(!is_aws_region("us-east-1.evil.com"));
        assert!(!is_aws_region("us--1"));
        assert!(is_api_version("2024-10-21", false));
        assert!(is_api_version("2025-01-01-preview", true));
        assert!(!is_api_version("2025-01-01-preview", false));
        assert!(!is_api_version("2024-10-21T00:00:00Z", true));
        assert!(!is_api_version("latest", true));
    }

    #[test]
    fn missing_secret_and_catalog_misses_name_the_field() {
        let text = BASE.replace("key: openai", "key: nokey");
        let compiled = compile(&load(&text).resources);
        let messages: Vec<String> = compiled
            .diagnostics
            .iter()
            .map(ToString::to_string)
            .collect();
        assert!(messages.iter().any(|m| m == "test.yaml:ModelProvider/alpha: spec.credentials.secretRef: Secret \"keys\" has no key \"nokey\""), "{messages:?}");
        assert!(messages.iter().any(|m| m.starts_with("test.yaml:AIRoute/chat: spec.backends[1].providerRef.name: ModelProvider \"alpha\" is invalid")), "{messages:?}");

        let text = BASE.replace("model: gpt-4o-mini, weight", "model: gpt-5, weight");
        let compiled = compile(&load(&text).resources);
        assert_eq!(compiled.diagnostics[0].field, "spec.backends[1].model");
    }

    #[test]
    fn a_key_that_cannot_be_a_header_is_reported_on_the_provider() {
        let text = BASE.replace("openai: sk-test", "openai: \"sk-a\\nsk-b\"");
        let compiled = compile(&load(&text).resources);
        let d = compiled
            .diagnostics
            .iter()
            .find(|d| d.object.as_ref().is_some_and(|o| o.name == "alpha"))
            .unwrap();
        assert_eq!(d.field, "spec.credentials.secretRef");
        assert!(d.message.contains("HTTP header"), "{}", d.message);
    }

    #[test]
    fn the_ssrf_guard_refuses_internal_literal_endpoints_unless_allowed() {
        let errors = |spec: &str| provider(&resources(spec)).1;
        let metadata = errors("  type: OpenAICompatible\n  endpoint: http://169.254.169.254/v1\n");
        assert!(
            metadata.iter().any(|d| d
                .contains("169.254.169.254 is a link-local or cloud metadata address")
                && d.contains("network.allowLinkLocal")),
            "{metadata:?}"
        );
        let loopback = errors("  type: OpenAICompatible\n  endpoint: http://localhost:11434/v1\n");
        assert!(
            loopback.iter().any(|d| d.contains("network.allowLoopback")),
            "{loopback:?}"
        );
        assert!(
            errors("  type: OpenAICompatible\n  endpoint: http://localhost:11434/v1\n  network: {allowLoopback: true}\n").is_empty()
        );
        assert!(
            errors("  type: Mock\n  endpoint: http://127.0.0.1:8081/v1\n").is_empty(),
            "the mock runs beside the gateway"
        );
        assert!(
            errors("  type: OpenAICompatible\n  endpoint: http://10.0.0.8:8000/v1\n").is_empty(),
            "private ranges are where in-cluster models live"
        );
    }
}
