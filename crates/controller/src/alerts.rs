//! Usage-anomaly alerts that gateways report: one Warning Event on the
//! TokenBudget and one webhook call per incident, however many replicas saw
//! it. Which alerts are new incidents is decided by [`AlertLedger`] (pure);
//! the webhook call is the IO edge.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, header};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tollgate_config::push::BudgetAlert;
use tollgate_config::snapshot::budget::Webhook;

/// How long a webhook call may take.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(5);
/// Incidents remembered at most (oldest forgotten first).
const MAX_REMEMBERED: usize = 10_000;

/// When each incident (budget, member, kind, detail) was last delivered.
#[derive(Debug, Default)]
pub struct AlertLedger {
    delivered: HashMap<(String, String, String, String), i64>,
}

impl AlertLedger {
    /// Whether `alert` starts a new incident: nothing delivered for the same
    /// budget, member, kind and detail within `cooldown_ms`.
    pub fn admit(&mut self, alert: &BudgetAlert, cooldown_ms: u64, now_ms: i64) -> bool {
        let key = (
            // A budget's alert, or an MCP server's (agent behaviour).
            format!("{}{}", alert.budget, alert.mcp_server),
            alert.member.clone(),
            alert.kind.clone(),
            alert.detail.clone(),
        );
        let cooldown = i64::try_from(cooldown_ms).unwrap_or(i64::MAX);
        if let Some(&last) = self.delivered.get(&key)
            && now_ms.saturating_sub(last) < cooldown
        {
            return false;
        }
        if self.delivered.len() >= MAX_REMEMBERED {
            let horizon = now_ms.saturating_sub(cooldown);
            self.delivered.retain(|_, last| *last >= horizon);
        }
        self.delivered.insert(key, now_ms);
        true
    }
}

/// POSTs the alert to `webhook` in the background; failures are logged.
pub fn deliver(webhook: &Webhook, body: Vec<u8>) {
    let url = webhook.url.clone();
    let Ok(request) = Request::post(&url)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
    else {
        tracing::warn!(%url, "alert webhook URL is not usable");
        return;
    };
    let connector = match hyper_rustls::HttpsConnectorBuilder::new().with_native_roots() {
        Ok(builder) => builder.https_or_http().enable_http1().build(),
        Err(error) => {
            tracing::warn!(%url, %error, "no TLS roots for the alert webhook");
            return;
        }
    };
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    tokio::spawn(async move {
        match tokio::time::timeout(WEBHOOK_TIMEOUT, client.request(request)).await {
            Ok(Ok(response)) if response.status().is_success() => {}
            Ok(Ok(response)) => {
                tracing::warn!(%url, status = %response.status(), "alert webhook refused the alert")
            }
            Ok(Err(error)) => tracing::warn!(%url, %error, "alert webhook failed"),
            Err(_) => tracing::warn!(%url, "alert webhook timed out"),
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(member: &str, detail: &str) -> BudgetAlert {
        BudgetAlert {
            kind: "spike".into(),
            budget: "ns/b".into(),
            member: member.into(),
            detail: detail.into(),
            message: "m".into(),
            at_ms: 0,
            mcp_server: String::new(),
        }
    }

    #[test]
    fn one_delivery_per_incident_whatever_the_replicas() {
        let mut ledger = AlertLedger::default();
        // Three replicas report the same spike within a second.
        assert!(ledger.admit(&alert("bot", ""), 60_000, 1_000));
        assert!(!ledger.admit(&alert("bot", ""), 60_000, 1_200));
        assert!(!ledger.admit(&alert("bot", ""), 60_000, 1_900));
        // Another member, another threshold: other incidents.
        assert!(ledger.admit(&alert("app2", ""), 60_000, 2_000));
        assert!(ledger.admit(
            &alert("bot", "ns/b|bot|Day-fixed|requests@80%"),
            60_000,
            2_000
        ));
        // After the cooldown, a new incident.
        assert!(ledger.admit(&alert("bot", ""), 60_000, 61_000));
    }
}
