//! AWS Signature Version 4 for Bedrock requests, by `aws-sigv4` (the SDK's
//! own signer) without the SDK runtime. Inputs it would panic on (a URL
//! without a host, a time outside years 1970–9999) are refused first.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign as sigv4_sign};
use aws_sigv4::sign::v4;

use crate::error::{ErrorKind, LlmError};

/// Long-term or temporary AWS credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct AwsCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    /// STS session token, for temporary credentials.
    pub session_token: Option<String>,
}

/// Redacts the secret and the session token, so credentials can sit in
/// structs that are logged.
impl fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"** redacted **")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "** redacted **"),
            )
            .finish()
    }
}

/// Last second `aws-sigv4`'s date formatting can represent (9999-12-31T23:59:59Z).
const MAX_TIME: Duration = Duration::from_secs(253_402_300_799);

/// Signs one request and returns the headers to add: `x-amz-date`,
/// `authorization` and, for temporary credentials, `x-amz-security-token`.
/// `headers` are the ones the request will carry (each is signed; `host` is
/// taken from the URL when absent). `url` must be already percent-encoded
/// (as [`super::request_path`] makes it); the signer encodes the path once
/// more, as SigV4 requires for every service but S3.
#[allow(clippy::too_many_arguments)] // the brief's signature: one per SigV4 input
pub fn sign(
    method: &str,
    url: &str,
    headers: &[(String, String)],
    body: &[u8],
    credentials: &AwsCredentials,
    region: &str,
    service: &str,
    time: SystemTime,
) -> Result<Vec<(String, String)>, LlmError> {
    let fail = |message: String| LlmError::new(ErrorKind::Api, message);
    let uri: http::Uri = url
        .parse()
        .map_err(|e| fail(format!("cannot sign: invalid URL {url:?}: {e}")))?;
    if uri.authority().is_none() || uri.host().is_none_or(str::is_empty) {
        return Err(fail(format!("cannot sign: URL {url:?} has no host")));
    }
    match time.duration_since(UNIX_EPOCH) {
        Ok(since) if since <= MAX_TIME => {}
        _ => return Err(fail("cannot sign: time out of range".into())),
    }
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if !token(region) || !token(service) || !token(&credentials.access_key_id) {
        return Err(fail(
            "cannot sign: region, service and access key id must be plain tokens".into(),
        ));
    }
    if headers.iter().any(|(name, value)| {
        http::HeaderName::from_bytes(name.as_bytes()).is_err()
            || http::HeaderValue::from_str(value).is_err()
    }) {
        return Err(fail("cannot sign: invalid header name or value".into()));
    }

    let identity = Credentials::new(
        &credentials.access_key_id,
        &credentials.secret_access_key,
        credentials.session_token.clone(),
        None,
        "tollgate",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| fail(format!("cannot sign: {e}")))?
        .into();
    let request = SignableRequest::new(
        method,
        url,
        headers.iter().map(|(n, v)| (n.as_str(), v.as_str())),
        SignableBody::Bytes(body),
    )
    .map_err(|e| fail(format!("cannot sign: {e}")))?;
    let (instructions, _signature) = sigv4_sign(request, &params)
        .map_err(|e| fail(format!("cannot sign: {e}")))?
        .into_parts();
    let (added, _query) = instructions.into_parts();
    Ok(added
        .into_iter()
        .map(|h| (h.name().to_string(), h.value().to_string()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The aws-sig-v4-test-suite credentials and time (2015-08-30T12:36:00Z).
    fn suite() -> (AwsCredentials, SystemTime) {
        (
            AwsCredentials {
                access_key_id: "AKIDEXAMPLE".into(),
                secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
                session_token: None,
            },
            UNIX_EPOCH + Duration::from_secs(1_440_938_160),
        )
    }

    fn get(headers: &[(String, String)], name: &str) -> String {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }

    #[test]
    fn get_vanilla_and_post_vanilla_match_the_aws_suite() {
        let (credentials, time) = suite();
        for (method, signature) in [
            (
                "GET",
                "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
            ),
            (
                "POST",
                "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b",
            ),
        ] {
            let added = sign(
                method,
                "https://example.amazonaws.com/",
                &[],
                b"",
                &credentials,
                "us-east-1",
                "service",
                time,
            )
            .unwrap();
            assert_eq!(get(&added, "x-amz-date"), "20150830T123600Z");
            assert_eq!(
                get(&added, "authorization"),
                format!(
                    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature={signature}"
                )
            );
            assert_eq!(get(&added, "x-amz-security-token"), "");
        }
    }

    #[test]
    fn session_tokens_are_sent_and_signed() {
        let (mut credentials, time) = suite();
        credentials.session_token = Some("TOKEN".into());
        let added = sign(
            "POST",
            "https://bedrock-runtime.us-east-1.amazonaws.com/model/m/converse",
            &[("content-type".into(), "application/json".into())],
            b"{}",
            &credentials,
            "us-east-1",
            "bedrock",
            time,
        )
        .unwrap();
        assert_eq!(get(&added, "x-amz-security-token"), "TOKEN");
        assert!(
            get(&added, "authorization")
                .contains("SignedHeaders=content-type;host;x-amz-date;x-amz-security-token")
        );
    }

    #[test]
    fn body_path_and_time_change_the_signature() {
        let (credentials, time) = suite();
        let auth = |url: &str, body: &[u8], time: SystemTime| {
            let added = sign(
                "POST",
                url,
                &[],
                body,
                &credentials,
                "us-east-1",
                "bedrock",
                time,
            )
            .unwrap();
            get(&added, "authorization")
        };
        let url = "https://bedrock-runtime.us-east-1.amazonaws.com/model/a%3A0/converse";
        let base = auth(url, b"{}", time);
        assert_eq!(base, auth(url, b"{}", time));
        assert_ne!(base, auth(url, b"{ }", time));
        assert_ne!(
            base,
            auth(
                "https://bedrock-runtime.us-east-1.amazonaws.com/model/a%3A1/converse",
                b"{}",
                time
            )
        );
        assert_ne!(base, auth(url, b"{}", time + Duration::from_secs(1)));
    }

    #[test]
    fn unsignable_inputs_are_errors_not_panics() {
        let (credentials, time) = suite();
        let try_sign = |url: &str, time: SystemTime, headers: &[(String, String)]| {
            sign("GET", url, headers, b"", &credentials, "r", "s", time)
        };
        assert!(try_sign("/no/host", time, &[]).is_err());
        assert!(try_sign("not a url", time, &[]).is_err());
        assert!(try_sign("https://h/", UNIX_EPOCH - Duration::from_secs(1), &[]).is_err());
        assert!(try_sign("https://h/", UNIX_EPOCH + MAX_TIME + MAX_TIME, &[]).is_err());
        assert!(try_sign("https://h/", time, &[("bad name".into(), "v".into())]).is_err());
        assert!(try_sign("https://h/", time, &[("x".into(), "a\nb".into())]).is_err());
        let bad_region = sign(
            "GET",
            "https://h/",
            &[],
            b"",
            &credentials,
            "us\neast",
            "s",
            time,
        );
        assert!(bad_region.is_err());
    }

    #[test]
    fn debug_redacts_secrets() {
        let (mut credentials, _) = suite();
        credentials.session_token = Some("TOKEN".into());
        let text = format!("{credentials:?}");
        assert!(text.contains("AKIDEXAMPLE"));
        assert!(!text.contains("wJalrXUtnFEMI"));
        assert!(!text.contains("TOKEN"));
    }
}
