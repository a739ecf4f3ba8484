//! `tollgate keys create`: mints a client API key as a labelled Secret
//! (see `tollgate_api::keys`), without editing the AIGateway. The manifest
//! goes to stdout (pipe it to `kubectl apply -f -`, or save it next to a
//! standalone configuration); the key itself, once, to stderr.

use std::time::{Duration, SystemTime};

use k8s_openapi::jiff::Timestamp;
use rand::RngCore;
use tollgate_api::keys;

#[derive(clap::Args)]
pub struct CreateArgs {
    /// The AIGateway the key opens (same namespace); `*` for every gateway
    /// of the namespace.
    #[arg(long)]
    gateway: String,
    #[arg(long, short, default_value = "default")]
    namespace: String,
    /// The principal's user; defaults to the Secret's name.
    #[arg(long)]
    user: Option<String>,
    #[arg(long)]
    team: Option<String>,
    #[arg(long)]
    app: Option<String>,
    /// A principal label, `key=value`; repeat for more.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// Refuse the key after this long: `90d`, `12h`, `30m`.
    #[arg(long, conflicts_with = "expires_at")]
    expires_in: Option<String>,
    /// Refuse the key after this RFC 3339 instant.
    #[arg(long)]
    expires_at: Option<String>,
    /// The Secret's name; defaults to `tollgate-key-<team|app|user>-<random>`.
    #[arg(long)]
    name: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("--expires-in {0:?}: {1}")]
    ExpiresIn(String, String),
    #[error("--expires-at {0:?} is not an RFC 3339 instant (e.g. 2027-01-31T00:00:00Z)")]
    ExpiresAt(String),
    #[error("--label {0:?} is not key=value")]
    Label(String),
    #[error(
        "--name {0:?} is not a valid Secret name (lower-case letters, digits, '-' and '.', at most 253)"
    )]
    Name(String),
}

/// The key (on stderr, once) and the Secret manifest (stdout).
pub fn create(args: &CreateArgs, now: SystemTime) -> Result<(String, String), KeysError> {
    let mut random = [0u8; 32];
    rand::rng().fill_bytes(&mut random);
    let key = format!("tg-{}", hex::encode(random));
    let expires_at = match (&args.expires_in, &args.expires_at) {
        (Some(text), _) => {
            let lasts = parse_lifetime(text).map_err(|e| KeysError::ExpiresIn(text.clone(), e))?;
            let at = Timestamp::try_from(now + lasts)
                .map_err(|e| KeysError::ExpiresIn(text.clone(), e.to_string()))?;
            Some(at.to_string())
        }
        (None, Some(text)) => {
            let at: Timestamp = text
                .parse()
                .map_err(|_| KeysError::ExpiresAt(text.clone()))?;
            Some(at.to_string())
        }
        (None, None) => None,
    };
    let name = match &args.name {
        Some(name) if valid_name(name) => name.clone(),
        Some(name) => return Err(KeysError::Name(name.clone())),
        None => {
            let who = [&args.team, &args.app, &args.user]
                .into_iter()
                .flatten()
                .next()
                .map(|w| sanitize(w))
                .filter(|w| !w.is_empty())
                .unwrap_or_else(|| "client".into());
            format!("tollgate-key-{who}-{}", hex::encode(&random[..3]))
        }
    };
    for label in &args.labels {
        if tollgate_config::compile::parse_labels(label).is_none_or(|l| l.len() != 1) {
            return Err(KeysError::Label(label.clone()));
        }
    }
    let labels = (!args.labels.is_empty()).then(|| args.labels.join(","));
    let quote = |text: &str| serde_json::Value::from(text).to_string();
    let mut annotations = vec![format!(
        "    {}: {}",
        keys::GATEWAY_ANNOTATION,
        quote(&args.gateway)
    )];
    for (annotation, value) in [
        (keys::USER_ANNOTATION, &args.user),
        (keys::TEAM_ANNOTATION, &args.team),
        (keys::APP_ANNOTATION, &args.app),
        (keys::LABELS_ANNOTATION, &labels),
        (keys::EXPIRES_AT_ANNOTATION, &expires_at),
    ] {
        if let Some(value) = value {
            annotations.push(format!("    {annotation}: {}", quote(value)));
        }
    }
    let manifest = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {namespace}\n  labels:\n    {label}: \"true\"\n  annotations:\n{annotations}\ntype: Opaque\nstringData:\n  {data}: {key}\n",
        namespace = quote(&args.namespace),
        label = keys::API_KEY_LABEL,
        annotations = annotations.join("\n"),
        data = keys::KEY_DATA,
    );
    Ok((key, manifest))
}

/// `90d` as well as what specs accept (`12h`, `30m`, `1h30m`).
fn parse_lifetime(text: &str) -> Result<Duration, String> {
    if let Some(days) = text.strip_suffix('d') {
        let days: u64 = days
            .parse()
            .map_err(|_| "not a number of days".to_string())?;
        return Ok(Duration::from_secs(days.saturating_mul(86_400)));
    }
    tollgate_api::duration::parse(text).map_err(|e| e.to_string())
}

/// A DNS-1123 fragment of a principal name, for the default Secret name.
fn sanitize(text: &str) -> String {
    let lowered: String = text
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(40)
        .collect();
    lowered.trim_matches('-').to_string()
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Harness {
        #[command(flatten)]
        args: CreateArgs,
    }

    fn args(argv: &[&str]) -> CreateArgs {
        let mut full = vec!["keys"];
        full.extend_from_slice(argv);
        Harness::parse_from(full).args
    }

    const NOW: Duration = Duration::from_secs(1_800_000_000); // 2027-01-15T08:00:00Z

    #[test]
    fn a_fresh_key_and_a_labelled_secret_for_it() {
        let at = SystemTime::UNIX_EPOCH + NOW;
        let (key, manifest) = create(
            &args(&[
                "--gateway",
                "edge",
                "-n",
                "team-a",
                "--team",
                "Search Team",
                "--app",
                "ranker",
                "--label",
                "env=prod",
                "--label",
                "cost-center=42",
                "--expires-in",
                "90d",
            ]),
            at,
        )
        .unwrap();
        assert!(key.starts_with("tg-") && key.len() == 67, "{key}");
        assert!(manifest.contains(&format!("  key: {key}\n")), "{manifest}");
        assert!(manifest.contains("    tollgate.dev/api-key: \"true\""));
        assert!(manifest.contains("    tollgate.dev/gateway: \"edge\""));
        assert!(
            manifest.contains("    tollgate.dev/labels: \"env=prod,cost-center=42\""),
            "{manifest}"
        );
        assert!(manifest.contains("    tollgate.dev/team: \"Search Team\""));
        assert!(
            manifest.contains("    tollgate.dev/expires-at: \"2027-04-15T08:00:00Z\""),
            "{manifest}"
        );
        assert!(
            manifest.contains("  name: tollgate-key-search-team-"),
            "{manifest}"
        );
        // Two keys never repeat.
        let (other, _) = create(&args(&["--gateway", "edge"]), at).unwrap();
        assert_ne!(key, other);
    }

    #[test]
    fn bad_input_is_refused_with_a_reason() {
        let at = SystemTime::UNIX_EPOCH + NOW;
        assert!(matches!(
            create(&args(&["--gateway", "g", "--expires-in", "soon"]), at),
            Err(KeysError::ExpiresIn(..))
        ));
        assert!(matches!(
            create(&args(&["--gateway", "g", "--expires-at", "tomorrow"]), at),
            Err(KeysError::ExpiresAt(_))
        ));
        assert!(matches!(
            create(&args(&["--gateway", "g", "--name", "Not_Valid"]), at),
            Err(KeysError::Name(_))
        ));
        assert!(matches!(
            create(&args(&["--gateway", "g", "--label", "env"]), at),
            Err(KeysError::Label(_))
        ));
    }
}
