//! Controller mode against an in-process fake controller (HTTP/2 over TLS,
//! the real push protocol), the real `tollgate` binary and the real mock:
//! unready until the first snapshot, snapshots applied and acknowledged,
//! broken ones rejected while the old one keeps serving, reconnection after
//! the controller goes away or ends the stream, the token re-read on every
//! connect, and the CA file honoured.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tollgate_config::Snapshot;
use tollgate_config::load::{Loaded, add_documents};
use tollgate_config::push::{self, GatewayMessage, LineBuffer};

/// One subscription request as the controller saw it.
#[derive(Clone, Debug)]
struct Subscription {
    path: String,
    authorization: String,
    pod: String,
}

#[derive(Default)]
struct Seen {
    subscriptions: Vec<Subscription>,
    messages: Vec<GatewayMessage>,
    tls_failures: usize,
}

struct State {
    seen: Mutex<Seen>,
    /// The line every stream sends first and whenever it changes.
    current: watch::Sender<Option<Bytes>>,
    /// Bumped to end every open stream cleanly (as for re-authentication).
    end_streams: watch::Sender<u64>,
}

/// A fake controller on 127.0.0.1: TLS with `cert`, ALPN h2, one subscribe
/// endpoint for `default/test`.
struct FakeController {
    addr: SocketAddr,
    state: Arc<State>,
    /// Owns the listener and, through a JoinSet, every connection: aborting
    /// it closes them all, like a controller pod going away.
    task: tokio::task::JoinHandle<()>,
}

impl FakeController {
    async fn start(
        addr: SocketAddr,
        cert: &rcgen::CertifiedKey<rcgen::KeyPair>,
        current: Option<Bytes>,
    ) -> Self {
        let config = common::tls_server_config(cert, &[b"h2"]);
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            seen: Mutex::default(),
            current: watch::channel(current).0,
            end_streams: watch::channel(0).0,
        });
        let shared = state.clone();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((tcp, _)) = listener.accept().await {
                while connections.try_join_next().is_some() {}
                let (acceptor, state) = (acceptor.clone(), shared.clone());
                connections.spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        state.seen.lock().unwrap().tls_failures += 1;
                        return;
                    };
                    let service = service_fn(move |request| subscribe(request, state.clone()));
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Self { addr, state, task }
    }

    fn push(&self, line: Vec<u8>) {
        self.state.current.send_replace(Some(Bytes::from(line)));
    }

    fn end_streams(&self) {
        self.state.end_streams.send_modify(|n| *n += 1);
    }

    async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }

    fn subscriptions(&self) -> Vec<Subscription> {
        self.state.seen.lock().unwrap().subscriptions.clone()
    }

    fn messages(&self) -> Vec<GatewayMessage> {
        self.state.seen.lock().unwrap().messages.clone()
    }

    fn tls_failures(&self) -> usize {
        self.state.seen.lock().unwrap().tls_failures
    }

    /// Waits (bounded) until `check` holds for what the controller has seen.
    async fn wait_for(&self, what: &str, check: impl Fn(&Seen) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !check(&self.state.seen.lock().unwrap()) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for the `count`th copy of `message`.
    async fn wait_for_message(&self, message: &GatewayMessage, count: usize) {
        self.wait_for(&format!("{message:?} x{count}"), |seen| {
            seen.messages.iter().filter(|m| *m == message).count() >= count
        })
        .await;
    }
}

type Body = UnsyncBoxBody<Bytes, Infallible>;

async fn subscribe(
    request: hyper::Request<Incoming>,
    state: Arc<State>,
) -> Result<hyper::Response<Body>, Infallible> {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let path = request.uri().path().to_string();
    state.seen.lock().unwrap().subscriptions.push(Subscription {
        path: path.clone(),
        authorization: header("authorization"),
        pod: header(push::POD_HEADER),
    });
    if push::parse_subscribe_path(&path) != Some(("default", "test")) {
        let body = r#"{"error":{"code":"not_found","message":"no such gateway"}}"#;
        let mut response = hyper::Response::new(Full::new(Bytes::from(body)).boxed_unsync());
        *response.status_mut() = hyper::StatusCode::NOT_FOUND;
        return Ok(response);
    }
    tokio::spawn(record_acks(request.into_body(), state.clone()));
    let (lines_tx, lines_rx) = mpsc::channel::<Bytes>(16);
    let mut current = state.current.subscribe();
    let mut end = state.end_streams.subscribe();
    tokio::spawn(async move {
        let first = current.borrow_and_update().clone();
        if let Some(line) = first
            && lines_tx.send(line).await.is_err()
        {
            return;
        }
        let mut heartbeat = tokio::time::interval(push::HEARTBEAT_INTERVAL);
        heartbeat.tick().await;
        loop {
            let line = tokio::select! {
                changed = current.changed() => match changed {
                    Ok(()) => current.borrow_and_update().clone(),
                    Err(_) => return,
                },
                _ = heartbeat.tick() => Some(Bytes::from_static(push::heartbeat_frame())),
                // Dropping the sender ends the response body cleanly.
                _ = end.changed() => return,
            };
            if let Some(line) = line
                && lines_tx.send(line).await.is_err()
            {
                return;
            }
        }
    });
    let body = StreamBody::new(futures_util::stream::unfold(
        lines_rx,
        |mut rx| async move {
            rx.recv()
                .await
                .map(|line| (Ok::<_, Infallible>(Frame::data(line)), rx))
        },
    ));
    Ok(hyper::Response::new(body.boxed_unsync()))
}

async fn record_acks(mut body: Incoming, state: Arc<State>) {
    let mut lines = LineBuffer::default();
    while let Some(Ok(frame)) = body.frame().await {
        let Ok(data) = frame.into_data() else {
            continue;
        };
        for line in lines.push(&data, 1 << 20).unwrap() {
            let message: GatewayMessage = serde_json::from_slice(&line).unwrap();
            state.seen.lock().unwrap().messages.push(message);
        }
    }
}

/// The snapshot of gateway `default/test` in `common::config`, renamed to
/// `gateway` when that is not `test`.
fn snapshot(mock: &str, model: &str, gateway: &str) -> Snapshot {
    let yaml = config(mock, model).replace("name: test}", &format!("name: {gateway}}}"));
    let mut loaded = Loaded::default();
    add_documents(&mut loaded, "test.yaml", &yaml, &|_| None);
    assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
    let compiled = tollgate_config::compile(
        &loaded.resources,
        &tollgate_config::DigestKey::from_bytes([9; 32]),
    );
    assert!(
        !compiled.diagnostics.iter().any(|d| d.is_error()),
        "{:?}",
        compiled.diagnostics
    );
    compiled.snapshots.into_values().next().unwrap()
}

fn frame(snapshot: &Snapshot) -> Vec<u8> {
    push::snapshot_frame(snapshot).unwrap()
}

fn applied(snapshot: &Snapshot) -> GatewayMessage {
    GatewayMessage::Applied {
        hash: snapshot.hash.clone(),
    }
}

fn start_controlled_gateway(controller: SocketAddr, token: &Path, ca: &Path, pod: &str) -> Process {
    let mut command = Command::new(BIN);
    command
        .args(["gateway", "--controller", &format!("https://{controller}")])
        .args(["--gateway", "test", "--controller-token-file"])
        .arg(token)
        .arg("--controller-ca-file")
        .arg(ca)
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(["--workers", "2"])
        .env("POD_NAME", pod)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    Process::from_command(&mut command)
}

async fn status(url: &str) -> u16 {
    client().get(url).send().await.unwrap().status().as_u16()
}

async fn metrics(admin: &str) -> String {
    let response = client().get(format!("{admin}/metrics")).send().await;
    response.unwrap().text().await.unwrap()
}

/// Polls `/metrics` (bounded) until it has a line equal to `line`.
async fn wait_for_metric(admin: &str, line: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !metrics(admin).await.lines().any(|l| l == line) {
        assert!(Instant::now() < deadline, "no metric line {line:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The upstream model the gateway routed `chat` to.
async fn served_model(data: &str) -> String {
    let response = post_chat(data, &chat_body("chat", "hello", false)).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["model"].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_follows_the_controller() {
    let mock = start_mock();
    let mock_url = mock.url("data").to_string();
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let stranger = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let ca = write(dir.path(), "ca.pem", &cert.cert.pem());
    let wrong_ca = write(dir.path(), "wrong-ca.pem", &stranger.cert.pem());
    let token = write(dir.path(), "token", "  token-one\n");

    let controller = FakeController::start("127.0.0.1:0".parse().unwrap(), &cert, None).await;
    let gateway = start_controlled_gateway(controller.addr, &token, &ca, "pod-a");
    let distrusting = start_controlled_gateway(controller.addr, &token, &wrong_ca, "pod-b");
    let (data, admin) = (gateway.url("data"), gateway.url("admin"));

    // Subscribed, but nothing to serve yet.
    controller
        .wait_for("the first subscription", |seen| {
            !seen.subscriptions.is_empty()
        })
        .await;
    assert_eq!(status(&format!("{admin}/readyz")).await, 503);
    assert_eq!(status(&format!("{data}/readyz")).await, 503);
    let response = post_chat(data, &chat_body("chat", "hello", false)).await;
    assert_eq!(response.status(), 503);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "not_ready", "{error}");
    assert!(error["error"]["message"].is_string(), "{error}");
    assert!(
        metrics(admin)
            .await
            .contains("tollgate_controller_connected 1")
    );

    // The first snapshot: ready, serving, acknowledged with the subscriber's identity.
    let first = snapshot(&mock_url, "model-one", "test");
    controller.push(frame(&first));
    controller.wait_for_message(&applied(&first), 1).await;
    assert_eq!(status(&format!("{admin}/readyz")).await, 200);
    assert_eq!(served_model(data).await, "model-one");
    let subscription = controller.subscriptions()[0].clone();
    assert_eq!(subscription.path, "/v1/gateways/default/test/subscribe");
    assert_eq!(subscription.authorization, "Bearer token-one");
    assert_eq!(subscription.pod, "pod-a");

    // A newer snapshot changes the answers.
    let second = snapshot(&mock_url, "model-two", "test");
    controller.push(frame(&second));
    controller.wait_for_message(&applied(&second), 1).await;
    assert_eq!(served_model(data).await, "model-two");
    assert_eq!(config_hash(admin).await, second.hash);

    // Another gateway's snapshot and a tampered one are refused; the second keeps serving.
    let foreign = snapshot(&mock_url, "model-two", "other");
    controller.push(frame(&foreign));
    controller
        .wait_for("the foreign snapshot's rejection", |seen| {
            seen.messages.iter().any(|m| matches!(m, GatewayMessage::Rejected { hash, error } if *hash == foreign.hash && error.contains("default/other")))
        })
        .await;
    let tampered = snapshot(&mock_url, "model-tampered", "test");
    let line = String::from_utf8(frame(&tampered)).unwrap();
    controller.push(line.replace("model-tampered", "model-evil").into_bytes());
    controller
        .wait_for("the tampered snapshot's rejection", |seen| {
            seen.messages.iter().any(|m| matches!(m, GatewayMessage::Rejected { hash, error } if *hash == tampered.hash && error.contains("hash mismatch")))
        })
        .await;
    assert_eq!(served_model(data).await, "model-two");
    assert_eq!(config_hash(admin).await, second.hash);
    wait_for_metric(
        admin,
        r#"tollgate_config_reloads_total{result="rejected"} 2"#,
    )
    .await;

    // The controller ends the stream (re-authentication): the gateway is back
    // at once with the token as the file now says; the same snapshot is only acknowledged.
    controller.push(frame(&second));
    controller.wait_for_message(&applied(&second), 2).await;
    write(dir.path(), "token", "token-two\n");
    let before = controller.subscriptions().len();
    let ended = Instant::now();
    controller.end_streams();
    controller
        .wait_for("a new subscription", |seen| {
            seen.subscriptions.len() > before
        })
        .await;
    assert!(
        ended.elapsed() < Duration::from_secs(2),
        "reconnected quickly"
    );
    assert_eq!(
        controller.subscriptions().last().unwrap().authorization,
        "Bearer token-two"
    );
    controller.wait_for_message(&applied(&second), 3).await;
    wait_for_metric(
        admin,
        r#"tollgate_config_reloads_total{result="unchanged"} 2"#,
    )
    .await;

    // The CA file is honoured: the other gateway never got through.
    assert!(controller.tls_failures() >= 1, "pod-b tried");
    assert!(controller.subscriptions().iter().all(|s| s.pod == "pod-a"));
    assert_eq!(
        status(&format!("{}/readyz", distrusting.url("admin"))).await,
        503
    );

    // The controller goes away: the gateway keeps serving its last snapshot.
    let addr = controller.addr;
    controller.kill().await;
    wait_for_metric(admin, "tollgate_controller_connected 0").await;
    assert_eq!(served_model(data).await, "model-two");
    assert_eq!(status(&format!("{admin}/readyz")).await, 200);

    // A new controller on the same address is found again and its snapshot applied.
    write(dir.path(), "token", "token-three");
    let third = snapshot(&mock_url, "model-three", "test");
    let controller = FakeController::start(addr, &cert, Some(frame(&third).into())).await;
    controller.wait_for_message(&applied(&third), 1).await;
    assert_eq!(served_model(data).await, "model-three");
    let pod_a: Vec<_> = controller
        .subscriptions()
        .into_iter()
        .filter(|s| s.pod == "pod-a")
        .collect();
    assert_eq!(pod_a[0].authorization, "Bearer token-three");
    assert!(
        controller
            .messages()
            .iter()
            .all(|m| matches!(m, GatewayMessage::Applied { .. }))
    );
    assert_eq!(
        status(&format!("{}/readyz", distrusting.url("admin"))).await,
        503
    );

    // SIGTERM stops the subscriber with the rest.
    let mut gateway = gateway;
    assert!(gateway.terminate().success());
    controller.kill().await;
}
