//! `tollgate usage`: which users, teams or apps drive cost. Asks each
//! gateway's admin port (`GET /v1/usage`), adds the replicas' figures up
//! per group, and prints the costliest first.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

#[derive(clap::Args, Debug)]
pub struct UsageArgs {
    /// A gateway's admin URL, e.g. http://127.0.0.1:9090. Repeat it for
    /// every replica: each counts only what it served, so they are summed.
    #[arg(long = "admin", required = true)]
    pub admins: Vec<String>,
    /// What to group by: user, team, app, key, route, provider, model
    /// (comma separated for several).
    #[arg(long, default_value = "team")]
    pub group_by: String,
    /// hour, day, week or month (the last 1, 24, 168 or 720 hours).
    #[arg(long, default_value = "day")]
    pub window: String,
    /// Rows to print.
    #[arg(long, default_value_t = 20)]
    pub top: usize,
    /// Print the merged JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    #[error("{url}: {message}")]
    Fetch { url: String, message: String },
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Row {
    pub key: BTreeMap<String, String>,
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: f64,
}

pub async fn run(args: &UsageArgs) -> Result<String, UsageError> {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut reports = Vec::new();
    for admin in &args.admins {
        let url = format!(
            "{}/v1/usage?group_by={}&window={}",
            admin.trim_end_matches('/'),
            args.group_by,
            args.window
        );
        let fail = |message: String| UsageError::Fetch {
            url: url.clone(),
            message,
        };
        let uri: hyper::Uri = url.parse().map_err(|e| fail(format!("{e}")))?;
        let response = tokio::time::timeout(Duration::from_secs(10), client.get(uri))
            .await
            .map_err(|_| fail("timed out".into()))?
            .map_err(|e| fail(e.to_string()))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| fail(e.to_string()))?
            .to_bytes();
        let value: Value = serde_json::from_slice(&body)
            .map_err(|_| fail(format!("status {status}, not JSON")))?;
        if !status.is_success() {
            let message = value["error"]["message"].as_str().unwrap_or("error");
            return Err(fail(format!("status {status}: {message}")));
        }
        reports.push(value);
    }
    let rows = merge(&reports);
    if args.json {
        let groups: Vec<Value> = rows
            .iter()
            .map(|r| {
                serde_json::json!({"key": r.key, "requests": r.requests, "inputTokens": r.input_tokens,
                    "outputTokens": r.output_tokens, "costUsd": r.cost_usd})
            })
            .collect();
        return Ok(format!(
            "{}\n",
            serde_json::json!({"window": args.window, "groupBy": args.group_by, "gateways": args.admins.len(), "groups": groups})
        ));
    }
    Ok(render(&rows, &args.group_by, &args.window, args.top))
}

/// The groups of every report, summed by key, costliest first.
pub fn merge(reports: &[Value]) -> Vec<Row> {
    let mut rows: BTreeMap<Vec<(String, String)>, Row> = BTreeMap::new();
    for report in reports {
        for group in report["groups"].as_array().into_iter().flatten() {
            let key: BTreeMap<String, String> = group["key"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect();
            let row = rows
                .entry(key.clone().into_iter().collect())
                .or_insert_with(|| Row {
                    key,
                    ..Row::default()
                });
            let n = |field: &str| group[field].as_u64().unwrap_or(0);
            row.requests += n("requests");
            row.input_tokens += n("inputTokens");
            row.output_tokens += n("outputTokens");
            row.cost_usd += group["costUsd"].as_f64().unwrap_or(0.0);
        }
    }
    let mut rows: Vec<Row> = rows.into_values().collect();
    rows.sort_by(|a, b| {
        b.cost_usd
            .total_cmp(&a.cost_usd)
            .then(b.requests.cmp(&a.requests))
    });
    rows
}

/// A table: one column per dimension, then requests, tokens and cost.
pub fn render(rows: &[Row], group_by: &str, window: &str, top: usize) -> String {
    let dimensions: Vec<&str> = group_by.split(',').map(str::trim).collect();
    let mut table: Vec<Vec<String>> = vec![
        dimensions
            .iter()
            .map(|d| d.to_uppercase())
            .chain(["REQUESTS", "INPUT", "OUTPUT", "COST_USD"].map(String::from))
            .collect(),
    ];
    for row in rows.iter().take(top) {
        let mut cells: Vec<String> = dimensions
            .iter()
            .map(|d| {
                let value = row.key.get(*d).map_or("", String::as_str);
                if value.is_empty() {
                    "-".into()
                } else {
                    value.to_string()
                }
            })
            .collect();
        cells.extend([
            row.requests.to_string(),
            row.input_tokens.to_string(),
            row.output_tokens.to_string(),
            format!("{:.6}", row.cost_usd),
        ]);
        table.push(cells);
    }
    let widths: Vec<usize> = (0..table[0].len())
        .map(|i| table.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = format!("usage over the last {window}, by {group_by}\n");
    for row in &table {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    if rows.len() > top {
        out.push_str(&format!("({} more)\n", rows.len() - top));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_are_summed_per_group_and_sorted_by_cost() {
        let a = serde_json::json!({"groups": [
            {"key": {"team": "a"}, "requests": 2, "inputTokens": 20, "outputTokens": 10, "costUsd": 0.5},
            {"key": {"team": "b"}, "requests": 1, "inputTokens": 5, "outputTokens": 5, "costUsd": 0.2},
        ]});
        let b = serde_json::json!({"groups": [
            {"key": {"team": "b"}, "requests": 3, "inputTokens": 30, "outputTokens": 30, "costUsd": 0.6},
            {"key": {"team": ""}, "requests": 1, "inputTokens": 1, "outputTokens": 1, "costUsd": 0.0},
        ]});
        let rows = merge(&[a, b]);
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].key["team"], "b");
        assert_eq!(rows[0].requests, 4);
        assert!((rows[0].cost_usd - 0.8).abs() < 1e-9);
        let text = render(&rows, "team", "day", 2);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "usage over the last day, by team");
        assert_eq!(lines[1], "TEAM  REQUESTS  INPUT  OUTPUT  COST_USD");
        assert_eq!(lines[2], "b     4         35     35      0.800000");
        assert_eq!(lines.last(), Some(&"(1 more)"));
    }
}
