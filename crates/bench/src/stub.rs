//! A tiny OpenAI-shaped HTTP/1.1 server used by the tests and by the
//! `--stub-mock` smoke mode, so the harness can be exercised without the real
//! `tollgate mock`. Not a stand-in for measurements of the real mock.

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;

const COMPLETION: &str = r#"{"id":"chatcmpl-stub","object":"chat.completion","created":0,"model":"mock-chat","choices":[{"index":0,"message":{"role":"assistant","content":"Reusing connections avoids handshakes."},"finish_reason":"stop"}],"usage":{"prompt_tokens":30,"completion_tokens":16,"total_tokens":46}}"#;

fn sse_body() -> String {
    let mut s = String::new();
    for word in ["Reusing", " connections", " avoids", " handshakes."] {
        s.push_str(&format!(
            "data: {{\"id\":\"chatcmpl-stub\",\"object\":\"chat.completion.chunk\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{word}\"}}}}]}}\n\n"
        ));
    }
    s.push_str("data: [DONE]\n\n");
    s
}

async fn handle(
    req: Request<Incoming>,
    delay: Duration,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let path = req.uri().path().to_string();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let resp = |status: StatusCode, ctype: &'static str, body: Bytes| {
        let mut r = Response::new(Full::new(body));
        *r.status_mut() = status;
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static(ctype),
        );
        r
    };
    Ok(match path.as_str() {
        "/v1/chat/completions" => {
            let stream = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("stream").and_then(|s| s.as_bool()))
                .unwrap_or(false);
            if stream {
                resp(StatusCode::OK, "text/event-stream", Bytes::from(sse_body()))
            } else {
                resp(
                    StatusCode::OK,
                    "application/json",
                    Bytes::from_static(COMPLETION.as_bytes()),
                )
            }
        }
        "/mcp" => {
            let message = serde_json::from_slice::<serde_json::Value>(&body).unwrap_or_default();
            resp(
                StatusCode::OK,
                "application/json",
                Bytes::from(mcp_answer(&message).to_string()),
            )
        }
        _ => resp(
            StatusCode::NOT_FOUND,
            "text/plain",
            Bytes::from_static(b"not found"),
        ),
    })
}

/// A stateless MCP server's answer, just enough for the harness's MCP
/// section: `tools/list` (the real mock's four tool names) and `tools/call`
/// of `add`; anything else is a JSON-RPC error.
fn mcp_answer(message: &serde_json::Value) -> serde_json::Value {
    use serde_json::json;
    let id = message.get("id").cloned().unwrap_or_default();
    let params = &message["params"];
    let result = match message["method"].as_str().unwrap_or("") {
        "tools/list" => {
            let tools = ["echo", "add", "write_note", "slow"]
                .map(|name| json!({"name": name, "inputSchema": {"type": "object"}}));
            json!({ "tools": tools })
        }
        "tools/call" if params["name"] == "add" => {
            let sum = params["arguments"]["a"].as_f64().unwrap_or(0.0)
                + params["arguments"]["b"].as_f64().unwrap_or(0.0);
            json!({"content": [{"type": "text", "text": sum.to_string()}],
                   "structuredContent": {"sum": sum}, "isError": false})
        }
        _ => {
            return json!({"jsonrpc": "2.0", "id": id,
                          "error": {"code": -32601, "message": "not in the stub"}});
        }
    };
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

/// Serves until the task is dropped/aborted.
pub async fn serve(listener: TcpListener) {
    serve_with_delay(listener, Duration::ZERO).await
}

/// Like [`serve`], but every response is delayed (tests of the
/// coordinated-omission correction need a slow server).
pub async fn serve_with_delay(listener: TcpListener, delay: Duration) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service_fn(move |r| handle(r, delay)))
                .await;
        });
    }
}

/// Binds 127.0.0.1:0 and serves in the background (tests).
pub async fn spawn(delay: Duration) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    Ok((addr, tokio::spawn(serve_with_delay(listener, delay))))
}
