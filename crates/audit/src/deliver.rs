//! How each kind of sink hands a batch of spooled records on.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use hyper::{Method, Request, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

use crate::config::{FileSinkConfig, HttpDeliveryConfig, SinkConfig};
use crate::spool::last_seq_in_file;

/// Why a batch was not delivered; it is retried.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("request failed: {0}")]
    Request(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("delivery task failed: {0}")]
    Task(String),
}

/// Configuration problems found when the sinks are built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("invalid URL {url:?}: {why}")]
    Url { url: String, why: String },
    #[error("invalid header {name:?}: {why}")]
    Header { name: String, why: String },
    #[error("no TLS root certificates for {url}: {why}")]
    Tls { url: String, why: String },
}

pub(crate) enum Delivery {
    Stdout,
    /// `None` after a panicked write; reopened on the next batch.
    File {
        config: FileSinkConfig,
        sink: Option<FileSink>,
    },
    Http(Arc<HttpSink>),
}

impl Delivery {
    pub fn build(config: &SinkConfig, replica: &str) -> Result<Self, BuildError> {
        Ok(match config {
            SinkConfig::Stdout(_) => Delivery::Stdout,
            SinkConfig::File(file) => Delivery::File {
                config: file.clone(),
                sink: None,
            },
            SinkConfig::Webhook(webhook) => Delivery::Http(Arc::new(HttpSink::new(
                &webhook.url,
                &webhook.http,
                BodyFormat::Ndjson,
            )?)),
            SinkConfig::Otlp(otlp) => {
                let url = format!("{}/v1/logs", otlp.endpoint.trim_end_matches('/'));
                Delivery::Http(Arc::new(HttpSink::new(
                    &url,
                    &otlp.http,
                    BodyFormat::Otlp {
                        replica: replica.to_string(),
                    },
                )?))
            }
        })
    }

    pub async fn deliver(&mut self, batch: Arc<Vec<(u64, String)>>) -> Result<(), SinkError> {
        match self {
            Delivery::Stdout => blocking(move || write_stdout(&batch)).await,
            Delivery::File { config, sink } => {
                let taken = sink.take();
                let config = config.clone();
                let (back, outcome) = blocking(move || {
                    let mut file = match taken {
                        Some(file) => file,
                        None => match FileSink::open(config) {
                            Ok(file) => file,
                            Err(e) => return Ok((None, Err(e))),
                        },
                    };
                    let outcome = file.write(&batch);
                    Ok((Some(file), outcome))
                })
                .await?;
                *sink = back;
                outcome.map_err(SinkError::Io)
            }
            Delivery::Http(http) => http.post(&batch).await,
        }
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, SinkError> + Send + 'static,
) -> Result<T, SinkError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| SinkError::Task(e.to_string()))?
}

fn write_stdout(batch: &[(u64, String)]) -> Result<(), SinkError> {
    let mut out = io::stdout().lock();
    for (_, line) in batch {
        out.write_all(line.as_bytes())?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

/// `path`'s rotated file number `n` (`audit.log.1` is the newest).
pub(crate) fn rotated_path(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

pub(crate) struct FileSink {
    config: FileSinkConfig,
    file: File,
    size: u64,
    /// The newest seq in the file: a batch resent after a restart does not
    /// repeat what already reached the file.
    last_seq: Option<u64>,
}

impl FileSink {
    pub fn open(config: FileSinkConfig) -> io::Result<Self> {
        if let Some(parent) = config.path.parent()
            && !parent.as_os_str().is_empty()
        {
            fs::create_dir_all(parent)?;
        }
        let last_seq = match last_seq_in_file(&config.path)? {
            Some(seq) => Some(seq),
            None => last_seq_in_file(&rotated_path(&config.path, 1))?,
        };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&config.path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            config,
            file,
            size,
            last_seq,
        })
    }

    fn write(&mut self, batch: &[(u64, String)]) -> io::Result<()> {
        let mut pending = Vec::new();
        for (seq, line) in batch {
            if self.last_seq.is_some_and(|last| *seq <= last) {
                continue;
            }
            let len = line.len() as u64 + 1;
            if self.size + pending.len() as u64 > 0
                && self.size + pending.len() as u64 + len > self.config.max_bytes
            {
                self.file.write_all(&pending)?;
                pending.clear();
                self.rotate()?;
            }
            pending.extend_from_slice(line.as_bytes());
            pending.push(b'\n');
            self.last_seq = Some(*seq);
        }
        self.file.write_all(&pending)?;
        self.size += pending.len() as u64;
        if self.config.fsync {
            self.file.sync_data()?;
        }
        Ok(())
    }

    /// `audit.log` becomes `audit.log.1`, `.1` becomes `.2`, and the oldest
    /// beyond `maxFiles` is deleted.
    fn rotate(&mut self) -> io::Result<()> {
        if self.config.fsync {
            self.file.sync_data()?;
        }
        let path = self.config.path.clone();
        let keep = self.config.max_files;
        if keep == 0 {
            remove_if_present(&path)?;
        } else {
            remove_if_present(&rotated_path(&path, keep))?;
            for n in (1..keep).rev() {
                rename_if_present(&rotated_path(&path, n), &rotated_path(&path, n + 1))?;
            }
            rename_if_present(&path, &rotated_path(&path, 1))?;
        }
        self.file = OpenOptions::new().create(true).append(true).open(&path)?;
        self.size = 0;
        Ok(())
    }
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn rename_if_present(from: &Path, to: &Path) -> io::Result<()> {
    match fs::rename(from, to) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

enum BodyFormat {
    Ndjson,
    Otlp { replica: String },
}

pub(crate) struct HttpSink {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    uri: Uri,
    headers: Vec<(HeaderName, HeaderValue)>,
    timeout: Duration,
    format: BodyFormat,
}

impl HttpSink {
    fn new(url: &str, config: &HttpDeliveryConfig, format: BodyFormat) -> Result<Self, BuildError> {
        let uri: Uri = url
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| BuildError::Url {
                url: url.to_string(),
                why: e.to_string(),
            })?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => {
                return Err(BuildError::Url {
                    url: url.to_string(),
                    why: "needs http:// or https://".into(),
                });
            }
        };
        let mut headers = Vec::new();
        for (name, value) in &config.headers {
            let bad = |why: String| BuildError::Header {
                name: name.clone(),
                why,
            };
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| bad(e.to_string()))?;
            let mut value = HeaderValue::from_str(value).map_err(|e| bad(e.to_string()))?;
            value.set_sensitive(true);
            headers.push((name, value));
        }
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_millis(config.timeout_ms)));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let tls = if https {
            builder
                .with_provider_and_native_roots(provider)
                .map_err(|e| BuildError::Tls {
                    url: url.to_string(),
                    why: e.to_string(),
                })?
        } else {
            // Plain http never uses it; no roots needed.
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| BuildError::Tls {
                    url: url.to_string(),
                    why: e.to_string(),
                })?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
            builder.with_tls_config(config)
        };
        let connector = tls.https_or_http().enable_http1().wrap_connector(http);
        Ok(Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
            uri,
            headers,
            timeout: Duration::from_millis(config.timeout_ms.max(1)),
            format,
        })
    }

    async fn post(&self, batch: &[(u64, String)]) -> Result<(), SinkError> {
        let (body, content_type) = match &self.format {
            BodyFormat::Ndjson => (ndjson_body(batch), "application/x-ndjson"),
            BodyFormat::Otlp { replica } => (
                otlp_body(batch, replica, unix_nanos_now()),
                "application/json",
            ),
        };
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(self.uri.clone())
            .header(CONTENT_TYPE, content_type);
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| SinkError::Request(e.to_string()))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| SinkError::Request(error_chain(&e)))?;
            let status = response.status();
            // Read the body to the end so the connection can be reused.
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| SinkError::Request(e.to_string()))?
                .to_bytes();
            if status.is_success() {
                Ok(())
            } else {
                let text = String::from_utf8_lossy(&body);
                Err(SinkError::Status {
                    status: status.as_u16(),
                    body: text.chars().take(200).collect(),
                })
            }
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| SinkError::Timeout(self.timeout))?
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

pub(crate) fn ndjson_body(batch: &[(u64, String)]) -> Vec<u8> {
    let mut body = Vec::with_capacity(batch.iter().map(|(_, l)| l.len() + 1).sum());
    for (_, line) in batch {
        body.extend_from_slice(line.as_bytes());
        body.push(b'\n');
    }
    body
}

/// OTLP/JSON: 64-bit integers are decimal strings, enums their numbers.
pub(crate) fn otlp_body(batch: &[(u64, String)], replica: &str, observed_nanos: u64) -> Vec<u8> {
    let string_attribute =
        |key: &str, value: &str| json!({"key": key, "value": {"stringValue": value}});
    let records: Vec<Value> = batch
        .iter()
        .map(|(seq, line)| {
            let parsed: Value = serde_json::from_str(line).unwrap_or(Value::Null);
            let field = |name: &str| parsed.get(name).and_then(Value::as_str).unwrap_or("");
            let mut attributes = vec![
                string_attribute("tollgate.audit.replica", field("replica")),
                json!({"key": "tollgate.audit.seq", "value": {"intValue": seq.to_string()}}),
                string_attribute("tollgate.audit.hash", field("hash")),
            ];
            if let Some(kind) = parsed.get("kind").and_then(Value::as_str) {
                attributes.push(string_attribute("tollgate.audit.kind", kind));
            }
            let mut record = json!({
                "observedTimeUnixNano": observed_nanos.to_string(),
                "severityNumber": 9,
                "severityText": "INFO",
                "body": {"stringValue": line},
                "attributes": attributes,
            });
            if let Some(nanos) = parsed
                .get("ts")
                .and_then(Value::as_str)
                .and_then(parse_rfc3339_nanos)
            {
                record["timeUnixNano"] = Value::String(nanos.to_string());
            }
            record
        })
        .collect();
    let body = json!({
        "resourceLogs": [{
            "resource": {"attributes": [
                string_attribute("service.name", "tollgate"),
                string_attribute("service.instance.id", replica),
            ]},
            "scopeLogs": [{
                "scope": {"name": "tollgate.audit"},
                "logRecords": records,
            }],
        }],
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

pub(crate) fn unix_nanos_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (i64::from(month) + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date of a day count since 1970-01-01 (inverse of
/// [`days_from_civil`]).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `2025-03-01T12:34:56.789Z` for a time in milliseconds since the epoch.
pub(crate) fn format_rfc3339_millis(unix_millis: u64) -> String {
    let seconds = (unix_millis / 1000) as i64;
    let (year, month, day) = civil_from_days(seconds.div_euclid(86_400));
    let of_day = seconds.rem_euclid(86_400);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60,
        unix_millis % 1000
    )
}

/// Nanoseconds since the epoch of a UTC RFC 3339 time
/// (`YYYY-MM-DDTHH:MM:SS[.fraction]Z`); `None` for anything else.
pub(crate) fn parse_rfc3339_nanos(text: &str) -> Option<u64> {
    let bytes = text.as_bytes();
    if bytes.len() < 20 || bytes[4] != b'-' || bytes[7] != b'-' || bytes[10] != b'T' {
        return None;
    }
    if bytes[13] != b':' || bytes[16] != b':' {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<u32> {
        let part = text.get(range)?;
        part.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    if second > 60 {
        return None;
    }
    let rest = text.get(19..)?;
    let fraction = match rest.strip_suffix('Z')? {
        "" => 0,
        dotted => {
            let digits = dotted.strip_prefix('.')?;
            if digits.is_empty() || digits.len() > 9 || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                return None;
            }
            digits.parse::<u64>().ok()? * 10u64.pow(9 - digits.len() as u32)
        }
    };
    let days = days_from_civil(i64::from(year), month, day);
    let seconds = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second);
    u64::try_from(seconds)
        .ok()?
        .checked_mul(1_000_000_000)?
        .checked_add(fraction)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_format_and_parse_both_ways() {
        assert_eq!(format_rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_rfc3339_millis(951_827_696_789),
            "2000-02-29T12:34:56.789Z"
        );
        assert_eq!(
            parse_rfc3339_nanos("2000-02-29T12:34:56.789Z"),
            Some(951_827_696_789_000_000)
        );
        assert_eq!(
            parse_rfc3339_nanos("2024-12-31T23:59:59Z"),
            Some(1_735_689_599_000_000_000)
        );
        for millis in [1u64, 86_399_999, 1_709_251_199_999, 4_102_444_800_000] {
            let text = format_rfc3339_millis(millis);
            assert_eq!(
                parse_rfc3339_nanos(&text),
                Some(millis * 1_000_000),
                "{text}"
            );
        }
        for bad in [
            "",
            "2024-12-31",
            "2024-13-01T00:00:00Z",
            "2024-12-31T00:00:00+01:00",
        ] {
            assert_eq!(parse_rfc3339_nanos(bad), None, "{bad}");
        }
    }

    #[test]
    fn bad_urls_and_headers_are_refused_when_built() {
        let webhook = |url: &str, header: &str| {
            let mut http = HttpDeliveryConfig::default();
            http.headers.insert(header.into(), "v".into());
            SinkConfig::Webhook(crate::config::WebhookSinkConfig {
                name: None,
                url: url.into(),
                http,
            })
        };
        let build = |config| Delivery::build(&config, "gw").map(|_| ());
        assert!(matches!(
            build(webhook("ftp://host/x", "X-A")),
            Err(BuildError::Url { .. })
        ));
        assert!(matches!(
            build(webhook("not a url", "X-A")),
            Err(BuildError::Url { .. })
        ));
        assert!(matches!(
            build(webhook("http://127.0.0.1:1/x", "bad header")),
            Err(BuildError::Header { .. })
        ));
        assert!(build(webhook("http://127.0.0.1:1/x", "Authorization")).is_ok());
    }

    #[test]
    fn rotated_files_are_numbered_after_the_name() {
        assert_eq!(
            rotated_path(Path::new("/var/log/audit.log"), 3),
            Path::new("/var/log/audit.log.3")
        );
    }

    #[test]
    fn an_otlp_body_carries_each_record_as_a_log_record() {
        let line =
            r#"{"hash":"ab","kind":"llm","replica":"gw","seq":7,"ts":"1970-01-01T00:00:01.500Z"}"#;
        let body: Value =
            serde_json::from_slice(&otlp_body(&[(7, line.to_string())], "gw", 99)).unwrap();
        let resource = &body["resourceLogs"][0];
        assert_eq!(
            resource["resource"]["attributes"][0],
            json!({"key": "service.name", "value": {"stringValue": "tollgate"}})
        );
        let scope = &resource["scopeLogs"][0];
        assert_eq!(scope["scope"]["name"], "tollgate.audit");
        let record = &scope["logRecords"][0];
        assert_eq!(record["timeUnixNano"], "1500000000");
        assert_eq!(record["observedTimeUnixNano"], "99");
        assert_eq!(record["body"]["stringValue"], line);
        assert_eq!(
            record["attributes"][1],
            json!({"key": "tollgate.audit.seq", "value": {"intValue": "7"}})
        );
    }

    #[test]
    fn a_file_sink_rotates_and_skips_what_it_already_has() {
        let dir = tempfile::tempdir().unwrap();
        let config = FileSinkConfig {
            name: None,
            path: dir.path().join("audit.log"),
            max_bytes: 30,
            max_files: 2,
            fsync: false,
            batch_size: 10,
        };
        // 26 bytes with the newline: one record per file.
        let line = |seq: u64| (seq, format!("{{\"seq\":{seq},\"pad\":\"xxxxxx\"}}"));
        let mut sink = FileSink::open(config.clone()).unwrap();
        sink.write(&[line(1), line(2), line(3)]).unwrap();
        // After a restart, a resent batch adds only what is new.
        let mut sink = FileSink::open(config).unwrap();
        sink.write(&[line(3), line(4), line(5)]).unwrap();
        let read = |p: PathBuf| fs::read_to_string(p).unwrap_or_default();
        let base = dir.path().join("audit.log");
        assert_eq!(read(base.clone()), format!("{}\n", line(5).1));
        assert_eq!(read(rotated_path(&base, 1)), format!("{}\n", line(4).1));
        assert_eq!(read(rotated_path(&base, 2)), format!("{}\n", line(3).1));
        assert!(!rotated_path(&base, 3).exists());
    }
}
