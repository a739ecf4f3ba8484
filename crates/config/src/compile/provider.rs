//! ModelProvider: endpoint, credentials, timeouts and model catalog.

use std::collections::BTreeMap;

use tollgate_api::conditions::reason;
use tollgate_api::{ModelProvider, ProviderType};

use super::{
    DEFAULT_CONNECT_TIMEOUT_MS, DEFAULT_REQUEST_TIMEOUT_MS, OPENAI_ENDPOINT, SecretIndex,
    parse_duration_ms,
};
use crate::diagnostics::Diagnostic;
use crate::resources::object_ref;
use crate::snapshot::{Credential, Pricing, Provider};

pub(super) fn compile_provider(
    provider: &ModelProvider,
    secrets: &SecretIndex,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Provider> {
    let object = object_ref(provider);
    let namespace = &object.namespace;
    let spec = &provider.spec;
    let errors_before = diagnostics.len();

    let endpoint = match (&spec.endpoint, spec.provider_type) {
        (Some(endpoint), _) => endpoint.trim_end_matches('/').to_string(),
        (None, ProviderType::OpenAI) => OPENAI_ENDPOINT.to_string(),
        (None, _) => {
            diagnostics.push(Diagnostic::error(
                &object,
                "spec.endpoint",
                reason::INVALID,
                "endpoint is required unless type is OpenAI",
            ));
            String::new()
        }
    };
    if !endpoint.is_empty()
        && let Err(message) = check_endpoint(&endpoint)
    {
        diagnostics.push(Diagnostic::error(
            &object,
            "spec.endpoint",
            reason::INVALID,
            message,
        ));
    }

    let api_key = match &spec.credentials {
        Some(credentials) => match secrets.value(namespace, &credentials.secret_ref) {
            // Sent as `Authorization: Bearer <key>`: it must be a valid header value.
            Ok(key) if http::HeaderValue::from_str(&format!("Bearer {key}")).is_err() => {
                diagnostics.push(Diagnostic::error(
                    &object,
                    "spec.credentials.secretRef",
                    reason::INVALID,
                    "the key contains characters not allowed in an HTTP header (a line break?)",
                ));
                None
            }
            Ok(key) => Some(Credential(key)),
            Err((why, message)) => {
                diagnostics.push(Diagnostic::error(
                    &object,
                    "spec.credentials.secretRef",
                    why,
                    message,
                ));
                None
            }
        },
        None if spec.provider_type == ProviderType::OpenAI => {
            diagnostics.push(Diagnostic::error(
                &object,
                "spec.credentials",
                reason::INVALID,
                "credentials are required for type OpenAI",
            ));
            None
        }
        None => None,
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
        if models.insert(model.name.clone(), pricing).is_some() {
            diagnostics.push(Diagnostic::error(
                &object,
                format!("spec.models[{index}].name"),
                reason::INVALID,
                format!("model {:?} is listed twice", model.name),
            ));
        }
    }

    if diagnostics.len() > errors_before {
        return None;
    }
    Some(Provider {
        name: object.name.clone(),
        provider_type: spec.provider_type,
        base_url: endpoint,
        api_key,
        aws: None,
        region: None,
        api_version: None,
        azure_auth: None,
        connect_timeout_ms: connect.ok().flatten().unwrap_or(DEFAULT_CONNECT_TIMEOUT_MS),
        request_timeout_ms: request.ok().flatten().unwrap_or(DEFAULT_REQUEST_TIMEOUT_MS),
        max_concurrent_requests: spec.max_concurrent_requests,
        models,
    })
}

/// An absolute http(s) URL with a host, no query or fragment.
fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let uri: http::Uri = endpoint
        .parse()
        .map_err(|e| format!("not a valid URL: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err("must be an http:// or https:// URL".into()),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("URL has no host".into());
    }
    if uri.query().is_some() {
        return Err("URL must not have a query string".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::compile;
    use super::super::fixtures::{BASE, load};

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
}
