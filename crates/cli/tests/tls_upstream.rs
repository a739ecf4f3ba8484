//! The gateway calls providers over real TLS (rustls): an HTTPS provider with
//! a freshly generated certificate is reached when its CA is trusted
//! (`SSL_CERT_FILE`) and refused with a 502 when it is not.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;

const ANSWER: &str = r#"{"id":"chatcmpl-tls","object":"chat.completion","created":0,"model":"tls-model","choices":[{"index":0,"message":{"role":"assistant","content":"over tls"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#;

/// Serves one fixed chat answer over TLS on 127.0.0.1; returns its address.
async fn start_tls_provider(cert: &rcgen::CertifiedKey<rcgen::KeyPair>) -> SocketAddr {
    let config = common::tls_server_config(cert, &[]);
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = service_fn(
                    |request: hyper::Request<hyper::body::Incoming>| async move {
                        let status = if request.uri().path() == "/v1/chat/completions" {
                            200
                        } else {
                            404
                        };
                        let mut response =
                            hyper::Response::new(Full::new(Bytes::from_static(ANSWER.as_bytes())));
                        *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                        response
                            .headers_mut()
                            .insert("content-type", "application/json".parse().unwrap());
                        Ok::<_, std::convert::Infallible>(response)
                    },
                );
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    addr
}

fn gateway_config(provider: SocketAddr) -> String {
    format!(
        r#"apiVersion: tollgate.dev/v1alpha1
kind: AIGateway
metadata: {{name: tls}}
spec: {{}}
---
apiVersion: tollgate.dev/v1alpha1
kind: ModelProvider
metadata: {{name: secure}}
spec: {{type: OpenAICompatible, endpoint: "https://localhost:{}/v1", network: {{allowLoopback: true}}}}
---
apiVersion: tollgate.dev/v1alpha1
kind: AIRoute
metadata: {{name: chat}}
spec:
  gatewayRef: {{name: tls}}
  models: [chat]
  backends: [{{providerRef: {{name: secure}}, model: tls-model}}]
"#,
        provider.port()
    )
}

fn start_gateway_with_ca(config: &std::path::Path, ca_file: Option<&std::path::Path>) -> Process {
    let mut command = gateway_command(config);
    match ca_file {
        Some(file) => command.env("SSL_CERT_FILE", file),
        None => command
            .env("SSL_CERT_FILE", "/nonexistent-ca.pem")
            .env("SSL_CERT_DIR", "/nonexistent"),
    };
    Process::from_command(&mut command)
}

#[tokio::test]
async fn trusted_tls_provider_is_reached_and_untrusted_one_is_refused() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let provider = start_tls_provider(&cert).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = write(dir.path(), "ca.pem", &cert.cert.pem());
    let config = write(dir.path(), "gw.yaml", &gateway_config(provider));
    let body = chat_body("chat", "hello", false);

    let trusting = start_gateway_with_ca(&config, Some(&ca));
    let response = client()
        .post(format!("{}/v1/chat/completions", trusting.url("data")))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["choices"][0]["message"]["content"], "over tls");

    let distrusting = start_gateway_with_ca(&config, None);
    let response = client()
        .post(format!("{}/v1/chat/completions", distrusting.url("data")))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    let error: Value = response.json().await.unwrap();
    let message = error["error"]["message"].as_str().unwrap().to_lowercase();
    assert!(
        message.contains("certificate"),
        "the reason is named: {message}"
    );
}
