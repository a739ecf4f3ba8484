//! The certificate of the configuration channel.
//!
//! Snapshots carry provider credentials, so gateways talk to the controller
//! over TLS. The controller provisions its own CA and serving certificate and
//! keeps them in one Secret in its namespace, so every replica (and every
//! restart) serves the same certificate; the CA certificate (public) is
//! copied next to each gateway for it to trust. The same Secret holds the
//! key of every configuration hash and API-key digest
//! ([`tollgate_config::DigestKey`]), so all replicas digest alike. Issuing is pure
//! ([`issue`], [`renew`], [`needs_renewal`]); [`ensure`] is the thin IO edge.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, PostParams};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};
use tollgate_config::DigestKey;

/// How long the CA is valid; its certificate is what gateways trust.
const CA_VALIDITY: Duration = Duration::days(3650);
/// How long a serving certificate is valid.
const LEAF_VALIDITY: Duration = Duration::days(365);
/// Renew a serving certificate this long before it expires.
pub const RENEW_BEFORE: Duration = Duration::days(30);

const ANNOTATION_NOT_AFTER: &str = "tollgate.dev/not-after";
const ANNOTATION_SANS: &str = "tollgate.dev/sans";
pub const CA_CERT_KEY: &str = "ca.crt";
const CA_KEY_KEY: &str = "ca.key";
const CERT_KEY: &str = "tls.crt";
const KEY_KEY: &str = "tls.key";
const DIGEST_KEY_KEY: &str = "digest.key";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot issue a certificate: {0}")]
    Issue(#[from] rcgen::Error),
    #[error("TLS secret {0} is incomplete: missing {1}")]
    Incomplete(String, &'static str),
    #[error("TLS secret {name}: {source}")]
    Kube { name: String, source: kube::Error },
    #[error("invalid certificate or key: {0}")]
    Pem(String),
    #[error(transparent)]
    Rustls(#[from] rustls::Error),
}

/// A CA and a serving certificate it signed, all PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    pub ca_cert: String,
    pub ca_key: String,
    pub cert: String,
    pub key: String,
    /// Unix seconds the serving certificate expires.
    pub not_after: i64,
    /// Subject alternative names of the serving certificate, sorted.
    pub sans: Vec<String>,
    /// Keys snapshot hashes and client-key digests; kept across renewals.
    pub digest_key: DigestKey,
}

fn ca_params(now: OffsetDateTime) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "Tollgate controller CA");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = now - Duration::hours(1);
    params.not_after = now + CA_VALIDITY;
    params
}

/// A new CA and a serving certificate for `sans` (DNS names or IP addresses).
pub fn issue(sans: &[String], now: OffsetDateTime) -> Result<Bundle, TlsError> {
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params(now).self_signed(&ca_key)?;
    renew_with(ca_cert.pem(), &ca_key, sans, now, DigestKey::generate())
}

/// A new serving certificate for `sans`, signed by the CA in `bundle`, so
/// gateways that trust that CA keep trusting the controller.
pub fn renew(bundle: &Bundle, sans: &[String], now: OffsetDateTime) -> Result<Bundle, TlsError> {
    let ca_key = KeyPair::from_pem(&bundle.ca_key)?;
    renew_with(
        bundle.ca_cert.clone(),
        &ca_key,
        sans,
        now,
        bundle.digest_key.clone(),
    )
}

fn renew_with(
    ca_cert: String,
    ca_key: &KeyPair,
    sans: &[String],
    now: OffsetDateTime,
    digest_key: DigestKey,
) -> Result<Bundle, TlsError> {
    // The issuer needs the CA's name, key usages and key, not its certificate.
    let ca = ca_params(now);
    let issuer = Issuer::from_params(&ca, ca_key);
    let sans = normalize(sans);
    let mut params = CertificateParams::new(sans.clone())?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "tollgate-controller");
    params.distinguished_name = name;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.not_before = now - Duration::hours(1);
    params.not_after = now + LEAF_VALIDITY;
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(Bundle {
        ca_cert,
        ca_key: ca_key.serialize_pem(),
        cert: cert.pem(),
        key: key.serialize_pem(),
        not_after: params.not_after.unix_timestamp(),
        sans,
        digest_key,
    })
}

fn normalize(sans: &[String]) -> Vec<String> {
    let mut sans: Vec<String> = sans.iter().map(|s| s.trim().to_string()).collect();
    sans.retain(|s| !s.is_empty());
    sans.sort();
    sans.dedup();
    sans
}

/// Whether `bundle` must be replaced: it expires soon, or it lacks a name
/// gateways use to reach the controller.
pub fn needs_renewal(bundle: &Bundle, sans: &[String], now: OffsetDateTime) -> bool {
    let wanted = normalize(sans);
    let covered = wanted.iter().all(|san| bundle.sans.contains(san));
    !covered || bundle.not_after <= (now + RENEW_BEFORE).unix_timestamp()
}

/// The names gateways may use for the controller at `url`: its host, and for
/// an in-cluster `*.svc` name also the `.cluster.local` form. Plus `extra`.
pub fn sans_for(url: &str, extra: &[String]) -> Vec<String> {
    let mut sans = extra.to_vec();
    if let Ok(uri) = url.parse::<http::Uri>()
        && let Some(host) = uri.host()
    {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        sans.push(host.to_string());
        if host.ends_with(".svc") {
            sans.push(format!("{host}.cluster.local"));
        }
    }
    normalize(&sans)
}

impl Bundle {
    fn to_secret(&self, namespace: &str, name: &str) -> Secret {
        let data = [
            (CA_CERT_KEY, &self.ca_cert),
            (CA_KEY_KEY, &self.ca_key),
            (CERT_KEY, &self.cert),
            (KEY_KEY, &self.key),
            (DIGEST_KEY_KEY, &self.digest_key.to_hex()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), ByteString(v.clone().into_bytes())))
        .collect();
        Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                labels: Some(BTreeMap::from([(
                    "app.kubernetes.io/managed-by".to_string(),
                    crate::FIELD_MANAGER.to_string(),
                )])),
                annotations: Some(BTreeMap::from([
                    (ANNOTATION_NOT_AFTER.into(), self.not_after.to_string()),
                    (ANNOTATION_SANS.into(), self.sans.join(",")),
                ])),
                ..ObjectMeta::default()
            },
            type_: Some("kubernetes.io/tls".into()),
            data: Some(data),
            ..Secret::default()
        }
    }

    /// The bundle in `secret`, and whether its digest key had to be made up
    /// (a Secret written before digests were keyed): then it must be saved.
    fn from_secret(secret: &Secret) -> Result<(Bundle, bool), TlsError> {
        let name = secret.metadata.name.clone().unwrap_or_default();
        let field = |key: &'static str| {
            secret
                .data
                .as_ref()
                .and_then(|d| d.get(key))
                .and_then(|v| String::from_utf8(v.0.clone()).ok())
                .ok_or_else(|| TlsError::Incomplete(name.clone(), key))
        };
        let annotation = |key: &str| {
            secret
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(key))
                .cloned()
                .unwrap_or_default()
        };
        let stored_key = field(DIGEST_KEY_KEY)
            .ok()
            .and_then(|hex| DigestKey::from_hex(&hex).ok());
        let generated = stored_key.is_none();
        let bundle = Bundle {
            ca_cert: field(CA_CERT_KEY)?,
            ca_key: field(CA_KEY_KEY)?,
            cert: field(CERT_KEY)?,
            key: field(KEY_KEY)?,
            // Unknown expiry or names read as "renew now".
            not_after: annotation(ANNOTATION_NOT_AFTER).parse().unwrap_or(0),
            sans: normalize(
                &annotation(ANNOTATION_SANS)
                    .split(',')
                    .map(str::to_string)
                    .collect::<Vec<_>>(),
            ),
            digest_key: stored_key.unwrap_or_else(DigestKey::generate),
        };
        Ok((bundle, generated))
    }

    /// A rustls server configuration serving this certificate, HTTP/2 only.
    pub fn server_config(&self) -> Result<rustls::ServerConfig, TlsError> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let chain = CertificateDer::pem_slice_iter(self.cert.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::Pem(e.to_string()))?;
        let key = PrivateKeyDer::from_pem_slice(self.key.as_bytes())
            .map_err(|e| TlsError::Pem(e.to_string()))?;
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }
}

/// Reads the controller's TLS Secret, creating or renewing it when needed.
/// Replicas racing to create it converge on whichever create won.
pub async fn ensure(
    client: &Client,
    namespace: &str,
    name: &str,
    sans: &[String],
) -> Result<Bundle, TlsError> {
    let api = Api::<Secret>::namespaced(client.clone(), namespace);
    let kube_error = |source| TlsError::Kube {
        name: format!("{namespace}/{name}"),
        source,
    };
    // A few rounds cover losing a create or update race to another replica.
    for _ in 0..5 {
        let now = OffsetDateTime::now_utc();
        match api.get_opt(name).await.map_err(kube_error)? {
            None => {
                let bundle = issue(sans, now)?;
                match api
                    .create(&PostParams::default(), &bundle.to_secret(namespace, name))
                    .await
                {
                    Ok(_) => {
                        tracing::info!(secret = %format!("{namespace}/{name}"), sans = ?bundle.sans, "issued the controller's CA and certificate");
                        return Ok(bundle);
                    }
                    Err(kube::Error::Api(status)) if status.code == 409 => continue,
                    Err(source) => return Err(kube_error(source)),
                }
            }
            Some(secret) => {
                let (current, key_generated) = Bundle::from_secret(&secret)?;
                let renewed = if needs_renewal(&current, sans, now) {
                    let wanted: Vec<String> =
                        current.sans.iter().chain(sans).cloned().collect::<Vec<_>>();
                    renew(&current, &wanted, now)?
                } else if key_generated {
                    current
                } else {
                    return Ok(current);
                };
                let mut replacement = renewed.to_secret(namespace, name);
                // Optimistic concurrency: only replace what we read.
                replacement.metadata.resource_version = secret.metadata.resource_version.clone();
                match api
                    .replace(name, &PostParams::default(), &replacement)
                    .await
                {
                    Ok(_) => {
                        tracing::info!(secret = %format!("{namespace}/{name}"), sans = ?renewed.sans, "renewed the controller's certificate");
                        return Ok(renewed);
                    }
                    Err(kube::Error::Api(status)) if status.code == 409 => continue,
                    Err(source) => return Err(kube_error(source)),
                }
            }
        }
    }
    Err(TlsError::Pem(format!(
        "secret {namespace}/{name} kept changing while it was being provisioned"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
    }

    fn sans() -> Vec<String> {
        vec![
            "tollgate-controller.tollgate-system.svc".into(),
            "127.0.0.1".into(),
        ]
    }

    #[test]
    fn a_fresh_bundle_serves_and_needs_no_renewal() {
        let bundle = issue(&sans(), now()).unwrap();
        assert!(bundle.ca_cert.starts_with("-----BEGIN CERTIFICATE-----"));
        assert_eq!(bundle.sans, normalize(&sans()));
        assert!(!needs_renewal(&bundle, &sans(), now()));
        assert!(bundle.server_config().is_ok());
    }

    #[test]
    fn renewal_is_due_near_expiry_or_for_a_new_name() {
        let bundle = issue(&sans(), now()).unwrap();
        let late = now() + LEAF_VALIDITY - RENEW_BEFORE + Duration::days(1);
        assert!(needs_renewal(&bundle, &sans(), late));
        let mut more = sans();
        more.push("tollgate.example.com".into());
        assert!(needs_renewal(&bundle, &more, now()));
        assert!(
            !needs_renewal(&bundle, &sans()[..1], now()),
            "a subset is covered"
        );
    }

    #[test]
    fn a_renewed_certificate_keeps_the_ca() {
        let bundle = issue(&sans(), now()).unwrap();
        let renewed = renew(&bundle, &sans(), now() + Duration::days(340)).unwrap();
        assert_eq!(renewed.ca_cert, bundle.ca_cert);
        assert_ne!(renewed.cert, bundle.cert);
        assert!(renewed.not_after > bundle.not_after);
        verify_chain(&renewed, "127.0.0.1", now() + Duration::days(341));
    }

    #[test]
    fn the_secret_round_trips() {
        let bundle = issue(&sans(), now()).unwrap();
        let secret = bundle.to_secret("tollgate-system", "tls");
        assert_eq!(
            Bundle::from_secret(&secret).unwrap(),
            (bundle.clone(), false)
        );
        let mut broken = secret.clone();
        broken.data.as_mut().unwrap().remove(CA_KEY_KEY);
        assert!(matches!(
            Bundle::from_secret(&broken),
            Err(TlsError::Incomplete(_, CA_KEY_KEY))
        ));
    }

    #[test]
    fn a_secret_without_a_digest_key_gets_one_and_renewal_keeps_it() {
        let bundle = issue(&sans(), now()).unwrap();
        let mut old = bundle.to_secret("tollgate-system", "tls");
        old.data.as_mut().unwrap().remove(DIGEST_KEY_KEY);
        let (read, generated) = Bundle::from_secret(&old).unwrap();
        assert!(generated, "must be written back");
        assert_eq!(read.cert, bundle.cert, "the certificate is kept");
        assert_ne!(read.digest_key, bundle.digest_key);
        let renewed = renew(&read, &sans(), now() + Duration::days(340)).unwrap();
        assert_eq!(renewed.digest_key, read.digest_key);
    }

    #[test]
    fn names_come_from_the_controller_url() {
        assert_eq!(
            sans_for("https://tollgate-controller.tollgate-system.svc:8443", &[]),
            vec![
                "tollgate-controller.tollgate-system.svc".to_string(),
                "tollgate-controller.tollgate-system.svc.cluster.local".to_string(),
            ]
        );
        assert_eq!(
            sans_for("https://127.0.0.1:9443", &["localhost".into()]),
            vec!["127.0.0.1".to_string(), "localhost".to_string()]
        );
        assert_eq!(sans_for("https://[::1]:9443", &[]), vec!["::1".to_string()]);
    }

    /// The serving certificate chains to the CA for `name`, checked by the
    /// same verifier gateways use.
    fn verify_chain(bundle: &Bundle, name: &str, at: OffsetDateTime) {
        use rustls::client::danger::ServerCertVerifier;
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(bundle.ca_cert.as_bytes()).unwrap())
            .unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            provider,
        )
        .build()
        .unwrap();
        let leaf = CertificateDer::from_pem_slice(bundle.cert.as_bytes()).unwrap();
        verifier
            .verify_server_cert(
                &leaf,
                &[],
                &ServerName::try_from(name.to_string()).unwrap(),
                &[],
                UnixTime::since_unix_epoch(std::time::Duration::from_secs(
                    at.unix_timestamp() as u64
                )),
            )
            .unwrap();
    }
}
