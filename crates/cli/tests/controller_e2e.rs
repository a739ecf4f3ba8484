//! The controller against a real kube-apiserver + etcd (tests/k8s): it reads
//! the resources and writes truthful conditions, which `kubectl get` shows.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::BIN;
use serde_json::Value;

/// The envtest cluster with the calls these tests make, panicking on failure.
struct Cluster(tollgate_testenv::Cluster);

impl Cluster {
    fn start() -> Cluster {
        Cluster(tollgate_testenv::Cluster::start().expect("envtest"))
    }

    fn kubeconfig(&self) -> PathBuf {
        self.0.kubeconfig()
    }

    fn kubectl(&self, args: &[&str]) -> std::process::Output {
        self.0.kubectl_output(args).expect("kubectl runs")
    }

    fn apply(&self, path: &str) {
        self.0.apply(Path::new(path)).expect("kubectl apply");
    }
}

const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

fn condition<'a>(object: &'a Value, type_: &str) -> Option<&'a Value> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

#[test]
fn controller_writes_truthful_conditions_and_kubectl_shows_them() {
    let cluster = Cluster::start();
    cluster.apply(&format!("{REPO}/crds"));
    let out = cluster.kubectl(&[
        "wait",
        "--for=condition=Established",
        "crd",
        "--all",
        "--timeout=30s",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    cluster.apply(&format!("{REPO}/deploy/examples/quickstart.yaml"));
    let dir = tempfile::tempdir().unwrap();
    let dangling = dir.path().join("dangling.yaml");
    std::fs::write(
        &dangling,
        "apiVersion: tollgate.dev/v1alpha1\nkind: AIRoute\nmetadata: {name: dangling, namespace: default}\nspec:\n  gatewayRef: {name: quickstart}\n  models: [elsewhere, yonder]\n  backends: [{providerRef: {name: nowhere}, model: m}]\n---\napiVersion: tollgate.dev/v1alpha1\nkind: ModelProvider\nmetadata: {name: keyless, namespace: default}\nspec:\n  type: OpenAI\n  credentials: {secretRef: {name: no-such-secret, key: apiKey}}\n\
         ---\napiVersion: tollgate.dev/v1alpha1\nkind: MCPServer\nmetadata: {name: lockedout, namespace: default}\nspec:\n  gatewayRef: {name: quickstart}\n  url: http://127.0.0.1:1/mcp\n  credentials: {secretRef: {name: no-such-secret, key: token}}\n",
    )
    .unwrap();
    cluster.apply(dangling.to_str().unwrap());

    // A free port for /metrics, so the test can scrape it (the controller
    // prints nothing on stdout to learn a port 0 from).
    let metrics_addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let _controller = KillOnDrop(
        Command::new(BIN)
            .args([
                "controller",
                "--metrics-listen",
                &metrics_addr,
                "--config-listen",
                "127.0.0.1:0",
                "--tls-secret-namespace",
                "default",
            ])
            .env("KUBECONFIG", cluster.kubeconfig())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );

    // Wait (bounded) until every route carries conditions for its generation.
    let deadline = Instant::now() + Duration::from_secs(30);
    let routes = loop {
        let out = cluster.kubectl(&["get", "airoutes", "-o", "json"]);
        let list: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let items = list["items"].as_array().cloned().unwrap_or_default();
        // The quickstart's five routes plus the dangling one.
        let done = items.len() == 6
            && items.iter().all(|r| {
                condition(r, "Programmed").is_some()
                    && r["status"]["observedGeneration"] == r["metadata"]["generation"]
            });
        if done {
            break items;
        }
        assert!(Instant::now() < deadline, "conditions not written: {list}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let by_name = |name: &str| {
        routes
            .iter()
            .find(|r| r["metadata"]["name"] == name)
            .unwrap()
    };

    // Valid, but no gateway process is connected: not Programmed, and the
    // reason says why (a gateway acknowledging makes it True: push_e2e).
    let chat = by_name("chat");
    for type_ in ["Accepted", "ResolvedRefs"] {
        assert_eq!(
            condition(chat, type_).unwrap()["status"],
            "True",
            "chat {type_}"
        );
    }
    let programmed = condition(chat, "Programmed").unwrap();
    assert_eq!(
        (&programmed["status"], &programmed["reason"]),
        (&"False".into(), &"NoGatewaysConnected".into()),
        "{programmed}"
    );
    assert!(chat["status"]["lastConfirmedTime"].is_string(), "{chat}");
    let dangling = by_name("dangling");
    let refs = condition(dangling, "ResolvedRefs").unwrap();
    assert_eq!(refs["status"], "False");
    assert_eq!(refs["reason"], "ProviderNotFound");
    assert!(
        refs["message"]
            .as_str()
            .unwrap()
            .contains("spec.backends[0].providerRef.name")
    );
    let programmed = condition(dangling, "Programmed").unwrap();
    assert_eq!(
        (&programmed["status"], &programmed["reason"]),
        (&"False".into(), &"ProviderNotFound".into()),
        "a route's own problem is named, never a generic Pending"
    );
    assert_eq!(
        condition(by_name("embeddings"), "ResolvedRefs").unwrap()["status"],
        "True",
        "one bad route never blocks the others"
    );

    // The failure is also an Event on the route, for `kubectl describe`.
    let events = wait_for(
        &cluster,
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=dangling",
        ],
        "warning event",
        |v| {
            v["items"]
                .as_array()
                .is_some_and(|items| items.iter().any(|e| e["reason"] == "ProviderNotFound"))
        },
    );
    let event = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["reason"] == "ProviderNotFound")
        .unwrap();
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["involvedObject"]["kind"], "AIRoute");

    // The printer columns show the same truth.
    let table = kubectl_text(&cluster, &["get", "airoutes"]);
    let header = table.lines().next().unwrap().to_string();
    for column in [
        "GATEWAY",
        "MODELS",
        "ACCEPTED",
        "RESOLVEDREFS",
        "PROGRAMMED",
    ] {
        assert!(header.contains(column), "{table}");
    }
    assert_eq!(
        (
            cell(&table, "dangling", "MODELS"),
            cell(&table, "dangling", "ACCEPTED"),
            cell(&table, "dangling", "RESOLVEDREFS"),
        ),
        ("elsewhere, yonder".into(), "True".into(), "False".into()),
        "{table}"
    );
    let wide = kubectl_text(&cluster, &["get", "airoutes", "-o", "wide"]);
    assert!(
        wide.contains("BACKENDS")
            && wide.contains("nowhere/m")
            && wide.contains("ProviderNotFound"),
        "{wide}"
    );
    let providers = kubectl_text(&cluster, &["get", "modelproviders"]);
    assert!(
        providers.lines().next().unwrap().contains("RESOLVEDREFS"),
        "{providers}"
    );
    assert_eq!(
        (
            cell(&providers, "keyless", "TYPE"),
            cell(&providers, "keyless", "ACCEPTED"),
            cell(&providers, "keyless", "RESOLVEDREFS"),
        ),
        ("OpenAI".into(), "True".into(), "False".into()),
        "a missing Secret shows in `kubectl get`: {providers}"
    );

    // The AIGateway rolls up its routes: one of six is not served.
    let gateways = kubectl_text(&cluster, &["get", "aigw"]);
    let header = gateways.lines().next().unwrap();
    for column in ["CONNECTED", "UP-TO-DATE", "ROUTES", "PROGRAMMED"] {
        assert!(header.contains(column), "{gateways}");
    }
    let at = |column: &str| cell(&gateways, "quickstart", column);
    assert_eq!(
        (at("CONNECTED"), at("ROUTES"), at("PROGRAMMED")),
        ("0".into(), "5/6".into(), "False".into()),
        "{gateways}"
    );
    let gateways = cluster.kubectl(&["get", "aigateways", "-o", "json"]);
    let gateways: Value = serde_json::from_slice(&gateways.stdout).unwrap();
    let gateway = &gateways["items"][0];
    assert_eq!(
        condition(gateway, "Programmed").unwrap()["reason"],
        "NoGatewaysConnected"
    );
    assert_eq!(gateway["status"]["providers"], "4/5", "{gateway}");

    // MCPServers: the quickstart's is accepted and waits for a gateway;
    // one whose Secret is missing says so; the columns show both.
    let servers = wait_for(
        &cluster,
        &["get", "mcpservers"],
        "MCPServer conditions",
        |v| {
            v["items"].as_array().is_some_and(|items| {
                items.len() == 2 && items.iter().all(|s| condition(s, "Programmed").is_some())
            })
        },
    );
    let server = |name: &str| {
        servers["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["metadata"]["name"] == name)
            .unwrap()
            .clone()
    };
    let tools = server("tools");
    assert_eq!(
        condition(&tools, "Accepted").unwrap()["status"],
        "True",
        "{tools}"
    );
    assert_eq!(
        condition(&tools, "Programmed").unwrap()["reason"],
        "NoGatewaysConnected"
    );
    assert_eq!(tools["status"]["path"], "/mcp/tools");
    let locked = server("lockedout");
    let refs = condition(&locked, "ResolvedRefs").unwrap();
    assert_eq!(
        (&refs["status"], &refs["reason"]),
        (&"False".into(), &"SecretNotFound".into()),
        "{locked}"
    );
    let table = kubectl_text(&cluster, &["get", "mcpservers"]);
    assert_eq!(
        (
            cell(&table, "tools", "PATH"),
            cell(&table, "tools", "ACCEPTED")
        ),
        ("/mcp/tools".into(), "True".into()),
        "{table}"
    );

    // One category lists every kind; `kubectl explain` says what each is.
    let everything = kubectl_text(&cluster, &["get", "tollgate"]);
    for kind in [
        "aigateway.tollgate.dev/",
        "modelprovider.tollgate.dev/",
        "airoute.tollgate.dev/",
        "mcpserver.tollgate.dev/",
    ] {
        assert!(everything.contains(kind), "{kind} missing: {everything}");
    }
    for (kind, words) in [
        ("aigateway", "fleet of Tollgate data-plane pods"),
        ("modelprovider", "one upstream LLM API"),
        ("airoute", "maps the model names clients ask for"),
    ] {
        let explained = kubectl_text(&cluster, &["explain", kind]);
        assert!(
            explained.contains(words) && !explained.contains("Auto-generated"),
            "{explained}"
        );
    }

    // A fix is picked up: create the missing provider, the route resolves.
    let provider = dir.path().join("nowhere.yaml");
    std::fs::write(
        &provider,
        "apiVersion: tollgate.dev/v1alpha1\nkind: ModelProvider\nmetadata: {name: nowhere, namespace: default}\nspec: {type: Mock, endpoint: \"http://127.0.0.1:1/v1\"}\n",
    )
    .unwrap();
    cluster.apply(provider.to_str().unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = cluster.kubectl(&["get", "airoute", "dangling", "-o", "json"]);
        let route: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if condition(&route, "ResolvedRefs").is_some_and(|c| c["status"] == "True") {
            assert_eq!(
                condition(&route, "Programmed").unwrap()["reason"],
                "NoGatewaysConnected"
            );
            break;
        }
        assert!(Instant::now() < deadline, "route did not resolve: {route}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // The recovery is a Normal Event, so `describe` does not end on the Warning.
    let events = wait_for(
        &cluster,
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=dangling",
        ],
        "recovery event",
        |v| {
            v["items"].as_array().is_some_and(|items| {
                items
                    .iter()
                    .any(|e| e["type"] == "Normal" && e["reason"] == "ResolvedRefs")
            })
        },
    );
    let recovery = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "Normal")
        .unwrap();
    assert!(
        recovery["message"]
            .as_str()
            .unwrap()
            .starts_with("ResolvedRefs is True again"),
        "{recovery}"
    );

    check_workload(&cluster);
    check_mcp_run(&cluster, dir.path());
    check_metrics(&metrics_addr);
}

/// The cell of a `kubectl get` table in the row starting with `row` and the
/// column headed `column`, by the header's character offsets (cells may hold
/// spaces, as MODELS does).
fn cell(table: &str, row: &str, column: &str) -> String {
    let mut lines = table.lines();
    let header = lines.next().unwrap_or_default();
    let start = header
        .find(&format!("{column} "))
        .or_else(|| {
            header
                .ends_with(column)
                .then(|| header.len() - column.len())
        })
        .unwrap_or_else(|| panic!("no column {column}: {table}"));
    let end = header[start..]
        .find(' ')
        .and_then(|gap| {
            header[start + gap..]
                .find(|c: char| c != ' ')
                .map(|next| start + gap + next)
        })
        .unwrap_or(usize::MAX);
    let line = lines
        .find(|l| l.split_whitespace().next() == Some(row))
        .unwrap_or_else(|| panic!("no row {row}: {table}"));
    line.get(start..end.min(line.len()))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// `kubectl ARGS` standard output, asserting success.
fn kubectl_text(cluster: &Cluster, args: &[&str]) -> String {
    let out = cluster.kubectl(args);
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `GET /metrics` over plain HTTP/1.1: (Content-Type, body), or None while
/// the controller is not listening yet.
fn scrape(addr: &str) -> Option<(String, String)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let content_type = head.lines().find_map(|l| {
        l.to_ascii_lowercase()
            .strip_prefix("content-type:")
            .map(|v| v.trim().to_string())
    })?;
    Some((content_type, body.to_string()))
}

/// The value of the sample whose name and labels are exactly `series`.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// After convergence both loops have reconciled successfully, and /metrics
/// says so in the OpenMetrics format.
fn check_metrics(addr: &str) {
    let status_ok = r#"tollgate_controller_reconciles_total{loop="status",result="ok"}"#;
    let workload_ok = r#"tollgate_controller_reconciles_total{loop="workload",result="ok"}"#;
    let deadline = Instant::now() + Duration::from_secs(30);
    let (content_type, text) = loop {
        let scraped = scrape(addr);
        if let Some((_, text)) = &scraped
            && sample(text, status_ok) > 0.0
            && sample(text, workload_ok) > 0.0
        {
            break scraped.unwrap();
        }
        assert!(Instant::now() < deadline, "metrics: {scraped:?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    assert_eq!(sample(&text, "tollgate_controller_leader"), 1.0, "{text}");
    assert!(
        sample(
            &text,
            r#"tollgate_controller_status_writes_total{result="ok"}"#
        ) > 0.0,
        "{text}"
    );
    assert!(
        sample(&text, "tollgate_controller_compile_duration_seconds_count") > 0.0,
        "{text}"
    );
    assert!(
        sample(
            &text,
            r#"tollgate_controller_reconcile_duration_seconds_count{loop="workload"}"#
        ) > 0.0,
        "{text}"
    );
    assert!(
        text.contains("# TYPE tollgate_controller_config_subscribers gauge"),
        "{text}"
    );
}

/// Kills the child even when an assertion fails first.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn get_json(cluster: &Cluster, args: &[&str]) -> Value {
    let out = cluster.kubectl(args);
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

/// Polls `check` on `kubectl get -o json ARGS` until it holds (bounded).
fn wait_for(cluster: &Cluster, args: &[&str], what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut full = args.to_vec();
        full.extend(["-o", "json"]);
        let value = get_json(cluster, &full);
        if check(&value) {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: {value}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The quickstart gateway's workload exists, is owned by it, follows spec
/// changes, and its status shows the endpoint.
fn check_workload(cluster: &Cluster) {
    let gateway = get_json(cluster, &["get", "aigateway", "quickstart", "-o", "json"]);
    let uid = gateway["metadata"]["uid"].as_str().unwrap().to_string();
    for kind in [
        "deployment",
        "service",
        "serviceaccount",
        "horizontalpodautoscaler",
        "poddisruptionbudget",
    ] {
        let object = wait_for(cluster, &["get", kind, "tollgate-quickstart"], kind, |v| {
            v["metadata"]["name"].is_string()
        });
        let owner = &object["metadata"]["ownerReferences"][0];
        assert_eq!(owner["kind"], "AIGateway", "{kind}");
        assert_eq!(owner["uid"], uid.as_str(), "{kind}");
        assert_eq!(owner["controller"], true, "{kind}");
    }
    let deployment = get_json(
        cluster,
        &[
            "get",
            "deployment",
            "tollgate-quickstart",
            "-o",
            "json",
            "--show-managed-fields",
        ],
    );
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(
        pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"],
        true
    );
    assert_eq!(
        pod["containers"][0]["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let managers: Vec<String> = deployment["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["manager"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        managers.iter().all(|m| m == "tollgate-controller"),
        "one field manager: {managers:?}"
    );

    let hpa = get_json(
        cluster,
        &["get", "hpa", "tollgate-quickstart", "-o", "json"],
    );
    assert_eq!(
        (
            hpa["spec"]["minReplicas"].as_i64(),
            hpa["spec"]["maxReplicas"].as_i64()
        ),
        (Some(2), Some(10))
    );

    // A spec change rolls out to the workload.
    let out = cluster.kubectl(&[
        "patch",
        "aigateway",
        "quickstart",
        "--type=merge",
        "-p",
        r#"{"spec":{"workload":{"minReplicas":3,"maxReplicas":5}}}"#,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for(
        cluster,
        &["get", "hpa", "tollgate-quickstart"],
        "hpa follows the spec",
        |v| v["spec"]["minReplicas"] == 3 && v["spec"]["maxReplicas"] == 5,
    );
    // An invalid change is refused by the apiserver's CEL rule.
    let out = cluster.kubectl(&[
        "patch",
        "aigateway",
        "quickstart",
        "--type=merge",
        "-p",
        r#"{"spec":{"workload":{"minReplicas":9}}}"#,
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("minReplicas must not exceed maxReplicas")
    );

    // Status reports the fleet (no kubelet here, so nothing is ready) and the endpoint.
    let gateway = wait_for(
        cluster,
        &["get", "aigateway", "quickstart"],
        "gateway status",
        |v| v["status"]["endpoint"].is_string(),
    );
    assert_eq!(
        gateway["status"]["endpoint"],
        "http://tollgate-quickstart.default.svc:8080"
    );
    assert_eq!(gateway["status"]["readyReplicas"], 0);

    // Drift is corrected: a deleted Service comes back.
    let out = cluster.kubectl(&["delete", "service", "tollgate-quickstart"]);
    assert!(out.status.success());
    wait_for(
        cluster,
        &["get", "service", "tollgate-quickstart"],
        "service restored",
        |v| v["metadata"]["name"].is_string(),
    );
}

/// An MCPServer the controller runs (Stdio): its Deployment runs the bridge
/// (copied in by an init container from the controller's image) in front of
/// the command, behind a Service on the port, both owned by the MCPServer;
/// its status names the Service URL and, with no kubelet here, says no
/// replica is available. Switching it to a `url` removes both objects; the
/// apiserver refuses `url` and `run` together.
fn check_mcp_run(cluster: &Cluster, dir: &Path) {
    let manifest = dir.join("notes.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: tollgate.dev/v1alpha1\nkind: MCPServer\nmetadata: {name: notes, namespace: default}\nspec:\n  gatewayRef: {name: quickstart}\n  run:\n    image: example/notes-mcp:1\n    transport: Stdio\n    command: [notes-mcp]\n    args: [--db, /tmp/notes]\n    port: 9000\n    env: [{name: LOG, value: debug}]\n",
    )
    .unwrap();
    cluster.apply(manifest.to_str().unwrap());
    let server = get_json(cluster, &["get", "mcpserver", "notes", "-o", "json"]);
    let uid = server["metadata"]["uid"].as_str().unwrap().to_string();

    let deployment = wait_for(
        cluster,
        &["get", "deployment", "mcp-notes"],
        "MCP server Deployment",
        |v| v["metadata"]["name"].is_string(),
    );
    let service = wait_for(
        cluster,
        &["get", "service", "mcp-notes"],
        "MCP server Service",
        |v| v["metadata"]["name"].is_string(),
    );
    for object in [&deployment, &service] {
        let owner = &object["metadata"]["ownerReferences"][0];
        assert_eq!(
            (
                &owner["kind"],
                &owner["name"],
                &owner["uid"],
                &owner["controller"]
            ),
            (
                &"MCPServer".into(),
                &"notes".into(),
                &uid.as_str().into(),
                &true.into()
            ),
            "{object}"
        );
    }
    assert_eq!(deployment["spec"]["replicas"], 1);
    let pod = &deployment["spec"]["template"]["spec"];
    let init = &pod["initContainers"][0];
    let container = &pod["containers"][0];
    assert_eq!(
        init["args"],
        serde_json::json!(["mcp-bridge", "--copy-to", "/tollgate-bridge/tollgate"]),
        "{init}"
    );
    assert!(
        init["image"].as_str().unwrap().contains("tollgate"),
        "the controller's image: {init}"
    );
    assert_eq!(container["image"], "example/notes-mcp:1");
    assert_eq!(
        container["command"],
        serde_json::json!([
            "/tollgate-bridge/tollgate",
            "mcp-bridge",
            "--listen",
            "0.0.0.0:9000",
            "--path",
            "/mcp",
            "--",
            "notes-mcp",
            "--db",
            "/tmp/notes"
        ]),
        "{container}"
    );
    assert_eq!(container["ports"][0]["containerPort"], 9000);
    assert_eq!(container["readinessProbe"]["tcpSocket"]["port"], "mcp");
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let mounts = |c: &Value| {
        c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["mountPath"] == "/tollgate-bridge")
            .map(|m| m["name"].clone())
    };
    assert!(
        mounts(init).is_some() && mounts(init) == mounts(container),
        "{pod}"
    );
    let port = &service["spec"]["ports"][0];
    assert_eq!(
        (&port["port"], &port["targetPort"]),
        (&9000.into(), &"mcp".into()),
        "{service}"
    );
    let selector = service["spec"]["selector"].as_object().unwrap();
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    assert!(
        selector.iter().all(|(k, v)| &labels[k] == v),
        "{selector:?} vs {labels}"
    );

    // No kubelet: the Deployment never has an available replica, and the
    // status says so; the URL is the Service's.
    let server = wait_for(
        cluster,
        &["get", "mcpserver", "notes"],
        "Available condition",
        |v| condition(v, "Available").is_some_and(|c| c["reason"] == "NoReplicasAvailable"),
    );
    let available = condition(&server, "Available").unwrap();
    assert_eq!(available["status"], "False");
    assert!(
        available["message"]
            .as_str()
            .unwrap()
            .contains("Deployment mcp-notes"),
        "{available}"
    );
    assert_eq!(
        condition(&server, "Accepted").unwrap()["status"],
        "True",
        "{server}"
    );
    assert_eq!(
        server["status"]["url"],
        "http://mcp-notes.default.svc:9000/mcp"
    );
    let wide = kubectl_text(cluster, &["get", "mcpservers", "-o", "wide"]);
    assert_eq!(
        (
            cell(&wide, "notes", "URL"),
            cell(&wide, "notes", "AVAILABLE")
        ),
        (
            "http://mcp-notes.default.svc:9000/mcp".into(),
            "False".into()
        ),
        "{wide}"
    );

    // url and run together: refused by the apiserver's CEL rule.
    let patch = |spec: &str| {
        let body = format!(r#"{{"spec":{spec}}}"#);
        cluster.kubectl(&["patch", "mcpserver", "notes", "--type=merge", "-p", &body])
    };
    let out = patch(r#"{"url":"http://127.0.0.1:1/mcp"}"#);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("exactly one of url and run must be set"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // An external server instead: nothing runs any more.
    let out = patch(r#"{"run":null,"url":"http://127.0.0.1:1/mcp"}"#);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for kind in ["deployment", "service"] {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out =
                cluster.kubectl(&["get", kind, "mcp-notes", "--ignore-not-found", "-o", "name"]);
            if out.status.success() && out.stdout.is_empty() {
                break;
            }
            assert!(Instant::now() < deadline, "{kind} mcp-notes still exists");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let server = wait_for(
        cluster,
        &["get", "mcpserver", "notes"],
        "status follows",
        |v| v["status"]["url"] == "http://127.0.0.1:1/mcp",
    );
    assert!(condition(&server, "Available").is_none(), "{server}");
}
