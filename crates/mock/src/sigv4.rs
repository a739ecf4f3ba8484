//! AWS SigV4 verification for the Bedrock endpoints: the signature is
//! recomputed with `aws-sigv4` from what was received (path as sent, the
//! headers the client listed, the body hash) and compared, so any signing
//! bug in a client fails like it would against AWS.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use http::{HeaderMap, Method, StatusCode, Uri};
use sha2::{Digest, Sha256};

use crate::api_error::ApiError;
use crate::auth::same_secret;
use crate::config::AwsCredentials;

/// How far `x-amz-date` may be from the server clock, like AWS.
const MAX_SKEW: Duration = Duration::from_secs(300);
const SERVICE: &str = "bedrock";

fn invalid_signature(message: impl Into<std::borrow::Cow<'static, str>>) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, message).with_kind("InvalidSignatureException")
}

fn mismatch() -> ApiError {
    invalid_signature(
        "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.",
    )
}

/// The parts of `Authorization: AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...`.
struct AuthHeader<'a> {
    access_key_id: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

fn parse_authorization(value: &str) -> Option<AuthHeader<'_>> {
    let rest = value.strip_prefix("AWS4-HMAC-SHA256")?.trim_start();
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for field in rest.split(',') {
        let (key, val) = field.trim().split_once('=')?;
        match key {
            "Credential" => credential = Some(val),
            "SignedHeaders" => signed = Some(val),
            "Signature" => signature = Some(val),
            _ => {}
        }
    }
    let mut scope = credential?.split('/');
    let header = AuthHeader {
        access_key_id: scope.next()?,
        date: scope.next()?,
        region: scope.next()?,
        service: scope.next()?,
        signed_headers: signed?.split(';').collect(),
        signature: signature?,
    };
    (scope.next() == Some("aws4_request") && scope.next().is_none()).then_some(header)
}

/// Parses `YYYYMMDDTHHMMSSZ`.
pub(crate) fn parse_amz_date(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> { s.get(r)?.parse().ok() };
    let (y, m, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (hh, mm, ss) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(secs))
}

/// Formats a time as `YYYYMMDDTHHMMSSZ`.
pub(crate) fn format_amz_date(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil from days (inverse of the above).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Checks the request's SigV4 signature; `Ok` when it matches.
pub(crate) fn verify(
    creds: &AwsCredentials,
    region: &str,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    now: SystemTime,
) -> Result<(), ApiError> {
    let Some(authorization) = headers.get("authorization") else {
        return Err(
            ApiError::new(StatusCode::FORBIDDEN, "Missing Authentication Token")
                .with_kind("MissingAuthenticationTokenException"),
        );
    };
    let auth = authorization
        .to_str()
        .ok()
        .and_then(parse_authorization)
        .ok_or_else(|| {
            invalid_signature("Authorization header requires 'Credential', 'Signature' and 'SignedHeaders' parameters for AWS4-HMAC-SHA256.")
                .with_kind("IncompleteSignatureException")
        })?;
    if !same_secret(
        auth.access_key_id.as_bytes(),
        creds.access_key_id.as_bytes(),
    ) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "The security token included in the request is invalid.",
        )
        .with_kind("UnrecognizedClientException"));
    }
    let amz_date = headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            invalid_signature("Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.")
                .with_kind("IncompleteSignatureException")
        })?;
    let signed_at = parse_amz_date(amz_date)
        .ok_or_else(|| invalid_signature(format!("Invalid X-Amz-Date '{amz_date}'")))?;
    let floor = format_amz_date(now.checked_sub(MAX_SKEW).unwrap_or(UNIX_EPOCH));
    if signed_at + MAX_SKEW < now {
        return Err(invalid_signature(format!(
            "Signature expired: {amz_date} is now earlier than {floor} ({} - 5 min.)",
            format_amz_date(now)
        )));
    }
    if signed_at > now + MAX_SKEW {
        return Err(invalid_signature(format!(
            "Signature not yet current: {amz_date} is still later than {} ({} + 5 min.)",
            format_amz_date(now + MAX_SKEW),
            format_amz_date(now)
        )));
    }
    if !amz_date.starts_with(auth.date) || auth.date.len() != 8 {
        return Err(invalid_signature(format!(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{}' != '{}'",
            auth.date,
            amz_date.get(..8).unwrap_or(amz_date)
        )));
    }
    if auth.region != region {
        return Err(invalid_signature(format!(
            "Credential should be scoped to a valid region. Expected '{region}', got '{}'.",
            auth.region
        )));
    }
    if auth.service != SERVICE {
        return Err(invalid_signature(format!(
            "Credential should be scoped to correct service: '{SERVICE}'."
        )));
    }
    if let Some(expected) = &creds.session_token {
        let presented = headers
            .get("x-amz-security-token")
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        if !same_secret(presented, expected.as_bytes()) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "The security token included in the request is invalid.",
            )
            .with_kind("UnrecognizedClientException"));
        }
    }
    if !auth.signed_headers.contains(&"host") {
        return Err(mismatch());
    }

    // The host as the client saw it: the Host header (HTTP/1.1) or :authority (h2).
    let host = match headers.get("host").and_then(|v| v.to_str().ok()) {
        Some(host) => host.to_owned(),
        None => uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .ok_or_else(mismatch)?,
    };
    let mut signed: Vec<(&str, &str)> = Vec::with_capacity(auth.signed_headers.len());
    for name in &auth.signed_headers {
        match *name {
            // The signer adds these from its parameters.
            "x-amz-date" => continue,
            "host" => continue,
            _ => {}
        }
        let mut values = headers.get_all(*name).iter().peekable();
        if values.peek().is_none() {
            return Err(mismatch());
        }
        for value in values {
            signed.push((name, value.to_str().map_err(|_| mismatch())?));
        }
    }
    signed.push(("host", &host));

    let actual_hash = hex::encode(Sha256::digest(body));
    let signable_body = match headers
        .get("x-amz-content-sha256")
        .and_then(|v| v.to_str().ok())
    {
        Some("UNSIGNED-PAYLOAD") => SignableBody::UnsignedPayload,
        Some(claimed) if claimed == actual_hash => SignableBody::Precomputed(actual_hash),
        Some(_) => {
            return Err(invalid_signature(
                "The provided 'x-amz-content-sha256' header does not match what was computed.",
            ));
        }
        None => SignableBody::Precomputed(actual_hash),
    };

    let path_and_query = uri.path_and_query().map_or("/", |pq| pq.as_str());
    // The authority only has to parse; the signer reads the Host header.
    let target = format!("http://localhost{path_and_query}");
    let request = SignableRequest::new(method.as_str(), target, signed.into_iter(), signable_body)
        .map_err(|_| mismatch())?;
    let identity: Identity = Credentials::new(
        creds.access_key_id.clone(),
        creds.secret_access_key.clone(),
        None,
        None,
        "tollgate-mock",
    )
    .into();
    let mut settings = SigningSettings::default();
    // Sign exactly what the client listed, including user-agent and the like.
    settings.excluded_headers = Some(Vec::new());
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(SERVICE)
        .time(signed_at)
        .settings(settings)
        .build()
        .map_err(|_| mismatch())?
        .into();
    let expected = sign(request, &params).map_err(|_| mismatch())?;
    if same_secret(expected.signature().as_bytes(), auth.signature.as_bytes()) {
        Ok(())
    } else {
        Err(mismatch())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amz_dates_round_trip() {
        for s in ["20240229T235959Z", "19700101T000000Z", "20351231T120000Z"] {
            let t = parse_amz_date(s).unwrap();
            assert_eq!(format_amz_date(t), s);
        }
        assert_eq!(
            parse_amz_date("19700102T000001Z"),
            Some(UNIX_EPOCH + Duration::from_secs(86_401))
        );
        for bad in [
            "",
            "2024-01-01",
            "20241301T000000Z",
            "20240101T250000Z",
            "2024010xT000000Z",
        ] {
            assert!(parse_amz_date(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn authorization_parses() {
        let a = parse_authorization(
            "AWS4-HMAC-SHA256 Credential=AKID/20240101/us-east-1/bedrock/aws4_request, SignedHeaders=host;x-amz-date, Signature=abc",
        )
        .unwrap();
        assert_eq!(a.access_key_id, "AKID");
        assert_eq!(a.region, "us-east-1");
        assert_eq!(a.signed_headers, ["host", "x-amz-date"]);
        assert_eq!(a.signature, "abc");
        assert!(parse_authorization("Bearer x").is_none());
        assert!(parse_authorization("AWS4-HMAC-SHA256 Credential=A/B, Signature=x").is_none());
    }
}
