//! What runs an MCPServer whose `spec.run` is set: a Deployment and a
//! Service, both named [`run_object_name`] and owned by the MCPServer, so
//! deleting it removes them. Pure: the MCPServer in, objects out.
//!
//! `Http`: the user's container serves Streamable HTTP itself. `Stdio`: an
//! init container from the controller's own image copies the static
//! `tollgate` binary into an emptyDir, and the user's container runs
//! `tollgate mcp-bridge ... -- <command> <args>`, which serves HTTP and
//! starts one server process per MCP session. Pods are locked down like the
//! gateway's (non-root, read-only root filesystem, no privilege escalation,
//! no capabilities, no API token); `/tmp` is a writable emptyDir and
//! `HOME` points there unless `run.env` sets it, since many servers cache
//! under `$HOME`.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, PodSpec, PodTemplateSpec,
    Probe, ResourceRequirements, SecretKeySelector, Service, ServicePort, ServiceSpec,
    TCPSocketAction, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tollgate_api::MCPServer;
use tollgate_api::mcp::{
    DEFAULT_RUN_PATH, DEFAULT_RUN_PORT, DEFAULT_RUN_REPLICAS, McpRun, McpTransport,
};
pub use tollgate_config::compile::run_object_name;

use crate::workload::{
    RenderError, RenderSettings, common_labels, identity, locked_down, non_root_pod,
    selector_labels,
};

/// Where the init container puts the bridge in a `Stdio` server's pod.
pub const BRIDGE_DIR: &str = "/tollgate-bridge";
/// The bridge binary inside [`BRIDGE_DIR`].
pub const BRIDGE_BIN: &str = "/tollgate-bridge/tollgate";
/// Label carrying the MCPServer's (possibly shortened) object name.
pub const SERVER_LABEL: &str = "tollgate.dev/mcp-server";
/// `app.kubernetes.io/name` of MCP server pods.
const SERVER_APP: &str = "tollgate-mcp-server";
const PORT_NAME: &str = "mcp";

/// The objects that run one MCPServer.
#[derive(Debug, Clone, PartialEq)]
pub struct McpWorkload {
    pub deployment: Deployment,
    pub service: Service,
}

/// The Deployment and Service of `server`, or `None` when it has no `run`
/// (an external server: nothing to run).
pub fn render(
    server: &MCPServer,
    settings: &RenderSettings,
) -> Result<Option<McpWorkload>, RenderError> {
    let Some(run) = &server.spec.run else {
        return Ok(None);
    };
    let (name, namespace, owner) = identity(server)?;
    let object_name = run_object_name(&name);
    let selector = selector_labels(SERVER_APP, &object_name);
    let meta = ObjectMeta {
        name: Some(object_name.clone()),
        namespace: Some(namespace),
        labels: Some(common_labels(SERVER_APP, &object_name, SERVER_LABEL)),
        owner_references: Some(vec![owner]),
        ..ObjectMeta::default()
    };
    let port = i32::from(run.port.map_or(DEFAULT_RUN_PORT, |p| p as u16));
    let path = run.path.as_deref().unwrap_or(DEFAULT_RUN_PATH);

    let mut volumes = vec![empty_dir("tmp")];
    let mut mounts = vec![mount("tmp", "/tmp")];
    let mut init_containers = None;
    let (command, args) = match run.transport {
        McpTransport::Http => (non_empty(&run.command), non_empty(&run.args)),
        McpTransport::Stdio => {
            volumes.push(empty_dir("bridge"));
            mounts.push(mount("bridge", BRIDGE_DIR));
            init_containers = Some(vec![Container {
                name: "install-bridge".into(),
                image: Some(settings.image.clone()),
                // The image's entrypoint is `tollgate`; it copies itself.
                args: Some(vec![
                    "mcp-bridge".into(),
                    "--copy-to".into(),
                    BRIDGE_BIN.into(),
                ]),
                resources: Some(ResourceRequirements {
                    requests: Some(quantities(&[("cpu", "10m"), ("memory", "16Mi")])),
                    limits: Some(quantities(&[("memory", "64Mi")])),
                    ..ResourceRequirements::default()
                }),
                security_context: Some(locked_down()),
                volume_mounts: Some(vec![mount("bridge", BRIDGE_DIR)]),
                ..Container::default()
            }]);
            (Some(bridge_command(run, port, path)), None)
        }
    };

    let container = Container {
        name: "server".into(),
        image: Some(run.image.clone()),
        command,
        args,
        env: Some(env(run)),
        ports: Some(vec![ContainerPort {
            name: Some(PORT_NAME.into()),
            container_port: port,
            ..ContainerPort::default()
        }]),
        readiness_probe: Some(Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::String(PORT_NAME.into()),
                ..TCPSocketAction::default()
            }),
            period_seconds: Some(5),
            ..Probe::default()
        }),
        resources: Some(run.resources.clone().unwrap_or_else(default_resources)),
        security_context: Some(locked_down()),
        volume_mounts: Some(mounts),
        ..Container::default()
    };

    let deployment = Deployment {
        metadata: meta.clone(),
        spec: Some(DeploymentSpec {
            replicas: Some(run.replicas.unwrap_or(DEFAULT_RUN_REPLICAS) as i32),
            selector: LabelSelector {
                match_labels: Some(selector.clone()),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(common_labels(SERVER_APP, &object_name, SERVER_LABEL)),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    // MCP servers get no Kubernetes API token.
                    automount_service_account_token: Some(false),
                    security_context: Some(non_root_pod()),
                    init_containers,
                    containers: vec![container],
                    volumes: Some(volumes),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    };

    let service = Service {
        metadata: meta,
        spec: Some(ServiceSpec {
            selector: Some(selector),
            ports: Some(vec![ServicePort {
                name: Some(PORT_NAME.into()),
                port,
                target_port: Some(IntOrString::String(PORT_NAME.into())),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };
    Ok(Some(McpWorkload {
        deployment,
        service,
    }))
}

/// `tollgate mcp-bridge` in front of the server's command line.
fn bridge_command(run: &McpRun, port: i32, path: &str) -> Vec<String> {
    let mut command = vec![
        BRIDGE_BIN.to_string(),
        "mcp-bridge".into(),
        "--listen".into(),
        format!("0.0.0.0:{port}"),
        "--path".into(),
        path.to_string(),
        "--".into(),
    ];
    command.extend(run.command.iter().cloned());
    command.extend(run.args.iter().cloned());
    command
}

fn env(run: &McpRun) -> Vec<EnvVar> {
    let mut vars: Vec<EnvVar> = run
        .env
        .iter()
        .map(|var| EnvVar {
            name: var.name.clone(),
            value: var.value.clone(),
            value_from: var.secret_key_ref.as_ref().map(|secret| EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: secret.name.clone(),
                    key: secret.key.clone(),
                    ..SecretKeySelector::default()
                }),
                ..EnvVarSource::default()
            }),
        })
        .collect();
    if !vars.iter().any(|v| v.name == "HOME") {
        vars.push(EnvVar {
            name: "HOME".into(),
            value: Some("/tmp".into()),
            ..EnvVar::default()
        });
    }
    vars
}

fn non_empty(list: &[String]) -> Option<Vec<String>> {
    (!list.is_empty()).then(|| list.to_vec())
}

fn empty_dir(name: &str) -> Volume {
    Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit: Some(Quantity("256Mi".into())),
            ..EmptyDirVolumeSource::default()
        }),
        ..Volume::default()
    }
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        ..VolumeMount::default()
    }
}

fn quantities(pairs: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
        .collect()
}

fn default_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(quantities(&[("cpu", "50m"), ("memory", "64Mi")])),
        ..ResourceRequirements::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_api::LocalObjectReference;
    use tollgate_api::SecretKeyRef;
    use tollgate_api::mcp::{MCPServerSpec, McpEnvVar};

    fn run(transport: McpTransport) -> McpRun {
        McpRun {
            image: "example/notes-mcp:1".into(),
            transport,
            command: vec!["notes-mcp".into()],
            args: vec!["--db".into(), "/tmp/notes".into()],
            env: vec![
                McpEnvVar {
                    name: "LOG".into(),
                    value: Some("debug".into()),
                    secret_key_ref: None,
                },
                McpEnvVar {
                    name: "TOKEN".into(),
                    value: None,
                    secret_key_ref: Some(SecretKeyRef {
                        name: "notes".into(),
                        key: "token".into(),
                    }),
                },
            ],
            resources: None,
            port: None,
            path: None,
            replicas: None,
        }
    }

    fn server(name: &str, run: Option<McpRun>) -> MCPServer {
        let mut server = MCPServer::new(
            name,
            MCPServerSpec {
                gateway_ref: LocalObjectReference { name: "gw".into() },
                path: None,
                url: run.is_none().then(|| "http://example.com/mcp".to_string()),
                failover_urls: Vec::new(),
                translate_revisions: false,
                transport: None,
                run,
                credentials: None,
                timeout: None,
                tools: None,
                access: Vec::new(),
                rate_limits: Vec::new(),
                aggregation: None,
                catalog: None,
                anomalies: None,
                redact: None,
                cache: None,
            },
        );
        server.metadata.namespace = Some("team-a".into());
        server.metadata.uid = Some("uid-9".into());
        server
    }

    fn settings() -> RenderSettings {
        RenderSettings {
            image: "tollgate:test".into(),
            controller_url: "https://tollgate-controller.tollgate-system.svc:8443".into(),
            controller_ca: String::new(),
        }
    }

    fn pod_spec(workload: &McpWorkload) -> PodSpec {
        workload
            .deployment
            .spec
            .clone()
            .unwrap()
            .template
            .spec
            .unwrap()
    }

    #[test]
    fn an_external_server_runs_nothing() {
        assert_eq!(render(&server("ext", None), &settings()), Ok(None));
    }

    #[test]
    fn both_objects_are_owned_by_the_server_and_named_after_it() {
        let w = render(&server("notes", Some(run(McpTransport::Http))), &settings())
            .unwrap()
            .unwrap();
        for meta in [&w.deployment.metadata, &w.service.metadata] {
            assert_eq!(meta.name.as_deref(), Some("mcp-notes"));
            assert_eq!(meta.namespace.as_deref(), Some("team-a"));
            let owner = &meta.owner_references.as_ref().unwrap()[0];
            assert_eq!(
                (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
                ("MCPServer", "notes", "uid-9")
            );
            assert_eq!(owner.controller, Some(true));
            assert_eq!(
                meta.labels.as_ref().unwrap()["app.kubernetes.io/managed-by"],
                crate::FIELD_MANAGER
            );
        }
        let service = w.service.spec.clone().unwrap();
        let port = &service.ports.as_ref().unwrap()[0];
        assert_eq!(port.port, 8080);
        let labels = w
            .deployment
            .spec
            .clone()
            .unwrap()
            .template
            .metadata
            .unwrap()
            .labels
            .unwrap();
        let selector = service.selector.unwrap();
        assert!(selector.iter().all(|(k, v)| labels.get(k) == Some(v)));
        assert_eq!(w.deployment.spec.unwrap().replicas, Some(1));
    }

    #[test]
    fn an_http_server_runs_its_own_command_on_the_port() {
        let mut spec = run(McpTransport::Http);
        spec.port = Some(3000);
        let w = render(&server("notes", Some(spec)), &settings())
            .unwrap()
            .unwrap();
        let pod = pod_spec(&w);
        assert!(pod.init_containers.is_none());
        let container = &pod.containers[0];
        assert_eq!(container.image.as_deref(), Some("example/notes-mcp:1"));
        assert_eq!(
            container.command.as_deref(),
            Some(&["notes-mcp".to_string()][..])
        );
        assert_eq!(container.args.as_ref().unwrap()[0], "--db");
        assert_eq!(container.ports.as_ref().unwrap()[0].container_port, 3000);
        let probe = container.readiness_probe.as_ref().unwrap();
        assert_eq!(
            probe.tcp_socket.as_ref().unwrap().port,
            IntOrString::String("mcp".into())
        );
        // No command: the image's entrypoint.
        let mut bare = run(McpTransport::Http);
        bare.command.clear();
        bare.args.clear();
        let w = render(&server("notes", Some(bare)), &settings())
            .unwrap()
            .unwrap();
        let container = &pod_spec(&w).containers[0];
        assert_eq!((&container.command, &container.args), (&None, &None));
    }

    #[test]
    fn a_stdio_server_runs_behind_the_bridge_copied_in_by_an_init_container() {
        let mut spec = run(McpTransport::Stdio);
        spec.path = Some("/rpc".into());
        let w = render(&server("notes", Some(spec)), &settings())
            .unwrap()
            .unwrap();
        let pod = pod_spec(&w);
        let init = &pod.init_containers.as_ref().unwrap()[0];
        assert_eq!(init.image.as_deref(), Some("tollgate:test"));
        assert_eq!(
            init.args.as_deref().unwrap(),
            ["mcp-bridge", "--copy-to", BRIDGE_BIN]
        );
        let container = &pod.containers[0];
        assert_eq!(container.image.as_deref(), Some("example/notes-mcp:1"));
        assert_eq!(
            container.command.as_deref().unwrap(),
            [
                BRIDGE_BIN,
                "mcp-bridge",
                "--listen",
                "0.0.0.0:8080",
                "--path",
                "/rpc",
                "--",
                "notes-mcp",
                "--db",
                "/tmp/notes"
            ]
        );
        assert_eq!(container.args, None);
        // Both containers mount the same emptyDir at the bridge's directory.
        let volume = |c: &Container| {
            c.volume_mounts
                .as_ref()
                .unwrap()
                .iter()
                .find(|m| m.mount_path == BRIDGE_DIR)
                .unwrap()
                .name
                .clone()
        };
        assert_eq!(volume(init), volume(container));
        let shared = pod
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == volume(init))
            .unwrap();
        assert!(shared.empty_dir.is_some());
    }

    #[test]
    fn env_and_pods_are_locked_down() {
        let w = render(
            &server("notes", Some(run(McpTransport::Stdio))),
            &settings(),
        )
        .unwrap()
        .unwrap();
        let pod = pod_spec(&w);
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(
            pod.security_context.as_ref().unwrap().run_as_non_root,
            Some(true)
        );
        for container in pod
            .containers
            .iter()
            .chain(pod.init_containers.iter().flatten())
        {
            let security = container.security_context.as_ref().unwrap();
            assert_eq!(security.read_only_root_filesystem, Some(true));
            assert_eq!(security.allow_privilege_escalation, Some(false));
        }
        let env = pod.containers[0].env.clone().unwrap();
        let names: Vec<&str> = env.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["LOG", "TOKEN", "HOME"]);
        let secret = env[1]
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap();
        assert_eq!(
            (secret.name.as_str(), secret.key.as_str()),
            ("notes", "token")
        );
        // A HOME of the user's own is kept.
        let mut spec = run(McpTransport::Http);
        spec.env.push(McpEnvVar {
            name: "HOME".into(),
            value: Some("/data".into()),
            secret_key_ref: None,
        });
        let w = render(&server("notes", Some(spec)), &settings())
            .unwrap()
            .unwrap();
        let env = pod_spec(&w).containers[0].env.clone().unwrap();
        let homes: Vec<_> = env.iter().filter(|e| e.name == "HOME").collect();
        assert_eq!(homes.len(), 1);
        assert_eq!(homes[0].value.as_deref(), Some("/data"));
    }

    #[test]
    fn long_names_are_cut_to_a_service_name_deterministically() {
        let long = "a".repeat(70);
        let w = render(&server(&long, Some(run(McpTransport::Http))), &settings())
            .unwrap()
            .unwrap();
        let name = w.service.metadata.name.clone().unwrap();
        assert!(name.len() <= 63, "{name}");
        assert_eq!(name, run_object_name(&long));
        assert_eq!(
            w.deployment.metadata.labels.unwrap()[SERVER_LABEL],
            name,
            "label values are limited to 63 characters too"
        );
    }

    #[test]
    fn a_server_without_uid_cannot_own_anything() {
        let mut s = server("notes", Some(run(McpTransport::Http)));
        s.metadata.uid = None;
        assert_eq!(render(&s, &settings()), Err(RenderError::Missing("uid")));
    }
}
