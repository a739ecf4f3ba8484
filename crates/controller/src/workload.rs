//! What runs an AIGateway in a cluster: ServiceAccount, Deployment, Service,
//! HorizontalPodAutoscaler and PodDisruptionBudget, all owned by the
//! AIGateway so deleting it removes them. Pure: the gateway in, objects out.
//!
//! The gateway pods need no Kubernetes API permissions (configuration is
//! pushed to them), so no Role is rendered and the default API token is not
//! mounted; a projected token with the controller's audience is their
//! identity towards the controller.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource,
    HTTPGetAction, ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ProjectedVolumeSource, ResourceRequirements, SeccompProfile, SecurityContext, Service,
    ServiceAccount, ServiceAccountTokenProjection, ServicePort, ServiceSpec,
    TopologySpreadConstraint, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};
use tollgate_api::AIGateway;
use tollgate_config::compile::{DEFAULT_ADMIN_PORT, DEFAULT_LISTENER_PORT};

pub const DEFAULT_MIN_REPLICAS: i32 = 2;
pub const DEFAULT_MAX_REPLICAS: i32 = 10;
pub const DEFAULT_CPU_TARGET: i32 = 70;
/// Audience of the pods' projected token, checked by the controller's TokenReview.
pub const TOKEN_AUDIENCE: &str = "tollgate.dev/controller";
const TOKEN_DIR: &str = "/var/run/secrets/tollgate.dev/token";
/// Writable state of a gateway pod: the audit spool's default directory
/// (`/var/lib/tollgate/audit`) is below it.
const STATE_DIR: &str = "/var/lib/tollgate";
/// Where the controller's CA certificate is mounted in gateway pods.
const CONTROLLER_CA_DIR: &str = "/etc/tollgate/controller-ca";

/// `app.kubernetes.io/name` of gateway pods.
const GATEWAY_APP: &str = "tollgate-gateway";

/// Controller-wide settings the gateway spec does not carry.
#[derive(Debug, Clone)]
pub struct RenderSettings {
    /// Image when the AIGateway names none.
    pub image: String,
    /// Where gateway pods subscribe for configuration.
    pub controller_url: String,
    /// PEM of the CA that signed the controller's certificate; copied next
    /// to each gateway (a ConfigMap) for its pods to trust.
    pub controller_ca: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RenderError {
    #[error("AIGateway has no {0} yet (not read from the apiserver?)")]
    Missing(&'static str),
}

/// Every object of one gateway's workload.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    pub service_account: ServiceAccount,
    /// The controller's CA certificate, mounted by the pods.
    pub controller_ca: ConfigMap,
    pub deployment: Deployment,
    pub service: Service,
    pub autoscaler: HorizontalPodAutoscaler,
    pub disruption_budget: PodDisruptionBudget,
}

/// Name of every object of the workload of gateway `name`.
pub fn workload_name(gateway: &str) -> String {
    format!("tollgate-{gateway}")
}

/// Name of the ConfigMap holding the controller's CA in the gateway's namespace.
pub fn controller_ca_name(gateway: &str) -> String {
    format!("{}-controller-ca", workload_name(gateway))
}

/// In-cluster URL of the gateway's API.
pub fn endpoint(gateway: &str, namespace: &str, port: u16) -> String {
    format!("http://{}.{namespace}.svc:{port}", workload_name(gateway))
}

pub fn render(gateway: &AIGateway, settings: &RenderSettings) -> Result<Workload, RenderError> {
    let (name, namespace, owner) = identity(gateway)?;
    let spec = &gateway.spec;
    let workload = spec.workload.clone().unwrap_or_default();
    let object_name = workload_name(&name);
    let labels = selector_labels(GATEWAY_APP, &name);
    let meta = ObjectMeta {
        name: Some(object_name.clone()),
        namespace: Some(namespace.clone()),
        labels: Some(common_labels(GATEWAY_APP, &name, "tollgate.dev/gateway")),
        owner_references: Some(vec![owner]),
        ..ObjectMeta::default()
    };
    let listener_port = spec
        .listener
        .as_ref()
        .map_or(DEFAULT_LISTENER_PORT as i32, |l| l.port as i32);
    let admin_port = spec
        .admin
        .as_ref()
        .map_or(DEFAULT_ADMIN_PORT as i32, |a| a.port as i32);
    let min_replicas = workload
        .min_replicas
        .map_or(DEFAULT_MIN_REPLICAS, |n| n as i32);
    let max_replicas = workload
        .max_replicas
        .map_or(DEFAULT_MAX_REPLICAS.max(min_replicas), |n| n as i32);

    let service_account = ServiceAccount {
        metadata: meta.clone(),
        // Pods read nothing from the API; their only credential is the projected token.
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    };

    let controller_ca = ConfigMap {
        metadata: ObjectMeta {
            name: Some(controller_ca_name(&name)),
            ..meta.clone()
        },
        data: Some(BTreeMap::from([(
            crate::tls::CA_CERT_KEY.to_string(),
            settings.controller_ca.clone(),
        )])),
        ..ConfigMap::default()
    };

    let mut container = Container {
        name: "gateway".into(),
        image: Some(
            workload
                .image
                .clone()
                .unwrap_or_else(|| settings.image.clone()),
        ),
        args: Some(vec![
            "gateway".into(),
            "--controller".into(),
            settings.controller_url.clone(),
            "--gateway".into(),
            format!("{namespace}/{name}"),
            "--listen".into(),
            format!("0.0.0.0:{listener_port}"),
            "--admin-listen".into(),
            format!("0.0.0.0:{admin_port}"),
            "--controller-token-file".into(),
            format!("{TOKEN_DIR}/token"),
            "--controller-ca-file".into(),
            format!("{CONTROLLER_CA_DIR}/{}", crate::tls::CA_CERT_KEY),
            "--shutdown-delay-secs".into(),
            "5".into(),
        ]),
        env: Some(vec![
            EnvVar {
                name: "TOLLGATE_LOG_FORMAT".into(),
                value: Some("json".into()),
                ..EnvVar::default()
            },
            EnvVar {
                name: "POD_NAME".into(),
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        field_path: "metadata.name".into(),
                        ..ObjectFieldSelector::default()
                    }),
                    ..EnvVarSource::default()
                }),
                ..EnvVar::default()
            },
        ]),
        ports: Some(vec![
            ContainerPort {
                name: Some("http".into()),
                container_port: listener_port,
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("admin".into()),
                container_port: admin_port,
                ..ContainerPort::default()
            },
        ]),
        readiness_probe: Some(http_probe("/readyz", 2)),
        liveness_probe: Some(http_probe("/healthz", 10)),
        resources: Some(workload.resources.clone().unwrap_or_else(default_resources)),
        security_context: Some(locked_down()),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "controller-token".into(),
                mount_path: TOKEN_DIR.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "controller-ca".into(),
                mount_path: CONTROLLER_CA_DIR.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
        ]),
        ..Container::default()
    };
    let mut volumes = Vec::new();
    // The audit spool needs a writable directory (the root filesystem is
    // read-only). An emptyDir keeps it across container restarts; records
    // not yet delivered when the pod is deleted are lost with it.
    if gateway.spec.audit.is_some() {
        if let Some(mounts) = &mut container.volume_mounts {
            mounts.push(VolumeMount {
                name: "state".into(),
                mount_path: STATE_DIR.into(),
                ..VolumeMount::default()
            });
        }
        volumes.push(Volume {
            name: "state".into(),
            empty_dir: Some(k8s_openapi::api::core::v1::EmptyDirVolumeSource::default()),
            ..Volume::default()
        });
    }

    let pod = PodSpec {
        service_account_name: Some(object_name.clone()),
        automount_service_account_token: Some(false),
        // Long generations must be able to finish during a rollout.
        termination_grace_period_seconds: Some(60),
        security_context: Some(non_root_pod()),
        containers: vec![container],
        volumes: Some(
            vec![
                Volume {
                    name: "controller-token".into(),
                    projected: Some(ProjectedVolumeSource {
                        sources: Some(vec![VolumeProjection {
                            service_account_token: Some(ServiceAccountTokenProjection {
                                audience: Some(TOKEN_AUDIENCE.into()),
                                expiration_seconds: Some(3600),
                                path: "token".into(),
                            }),
                            ..VolumeProjection::default()
                        }]),
                        ..ProjectedVolumeSource::default()
                    }),
                    ..Volume::default()
                },
                Volume {
                    name: "controller-ca".into(),
                    config_map: Some(ConfigMapVolumeSource {
                        name: controller_ca_name(&name),
                        ..ConfigMapVolumeSource::default()
                    }),
                    ..Volume::default()
                },
            ]
            .into_iter()
            .chain(volumes)
            .collect(),
        ),
        topology_spread_constraints: Some(vec![TopologySpreadConstraint {
            max_skew: 1,
            topology_key: "kubernetes.io/hostname".into(),
            when_unsatisfiable: "ScheduleAnyway".into(),
            label_selector: Some(LabelSelector {
                match_labels: Some(labels.clone()),
                ..LabelSelector::default()
            }),
            ..TopologySpreadConstraint::default()
        }]),
        ..PodSpec::default()
    };

    let deployment = Deployment {
        metadata: meta.clone(),
        spec: Some(DeploymentSpec {
            // No `replicas`: the autoscaler owns it; applying one would fight it.
            selector: LabelSelector {
                match_labels: Some(labels.clone()),
                ..LabelSelector::default()
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_unavailable: Some(IntOrString::Int(0)),
                    max_surge: Some(IntOrString::String("25%".into())),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(common_labels(GATEWAY_APP, &name, "tollgate.dev/gateway")),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    };

    let service = Service {
        metadata: meta.clone(),
        spec: Some(ServiceSpec {
            selector: Some(labels.clone()),
            ports: Some(vec![
                ServicePort {
                    name: Some("http".into()),
                    port: listener_port,
                    target_port: Some(IntOrString::String("http".into())),
                    ..ServicePort::default()
                },
                ServicePort {
                    name: Some("admin".into()),
                    port: admin_port,
                    target_port: Some(IntOrString::String("admin".into())),
                    ..ServicePort::default()
                },
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };

    let autoscaler = HorizontalPodAutoscaler {
        metadata: meta.clone(),
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: "Deployment".into(),
                name: object_name.clone(),
            },
            min_replicas: Some(min_replicas),
            max_replicas,
            metrics: Some(vec![MetricSpec {
                type_: "Resource".into(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".into(),
                    target: MetricTarget {
                        type_: "Utilization".into(),
                        average_utilization: Some(
                            workload
                                .target_cpu_utilization_percentage
                                .map_or(DEFAULT_CPU_TARGET, |n| n as i32),
                        ),
                        ..MetricTarget::default()
                    },
                }),
                ..MetricSpec::default()
            }]),
            ..HorizontalPodAutoscalerSpec::default()
        }),
        ..HorizontalPodAutoscaler::default()
    };

    let disruption_budget = PodDisruptionBudget {
        metadata: meta,
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(labels),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    };

    Ok(Workload {
        service_account,
        controller_ca,
        deployment,
        service,
        autoscaler,
        disruption_budget,
    })
}

/// The name and namespace of `owner`, and the reference its objects carry.
pub(crate) fn identity<K>(owner: &K) -> Result<(String, String, OwnerReference), RenderError>
where
    K: Resource<DynamicType = ()>,
{
    let meta = owner.meta();
    let name = meta.name.clone().ok_or(RenderError::Missing("name"))?;
    let namespace = meta
        .namespace
        .clone()
        .ok_or(RenderError::Missing("namespace"))?;
    Ok((name, namespace, owner_reference(owner)?))
}

/// A reference that makes `owner` the controller of an object, so deleting
/// it deletes the object.
pub(crate) fn owner_reference<K>(owner: &K) -> Result<OwnerReference, RenderError>
where
    K: Resource<DynamicType = ()>,
{
    Ok(OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.name_any(),
        uid: owner
            .meta()
            .uid
            .clone()
            .ok_or(RenderError::Missing("uid"))?,
        controller: Some(true),
        block_owner_deletion: Some(true),
    })
}

/// Labels that select the pods of `instance` of `app` (stable: a selector
/// is immutable).
pub(crate) fn selector_labels(app: &str, instance: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), app.to_string()),
        (
            "app.kubernetes.io/instance".to_string(),
            instance.to_string(),
        ),
    ])
}

/// The selector labels, the controller's `managed-by` (which its watches
/// select on) and `key: instance`.
pub(crate) fn common_labels(app: &str, instance: &str, key: &str) -> BTreeMap<String, String> {
    let mut labels = selector_labels(app, instance);
    labels.insert(
        "app.kubernetes.io/managed-by".into(),
        crate::FIELD_MANAGER.into(),
    );
    labels.insert(key.into(), instance.into());
    labels
}

/// A container with no way up: non-root, read-only root filesystem, no
/// privilege escalation, no capabilities.
pub(crate) fn locked_down() -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        read_only_root_filesystem: Some(true),
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Capabilities::default()
        }),
        ..SecurityContext::default()
    }
}

/// Pods as uid/gid 65532 with the runtime's default seccomp profile.
pub(crate) fn non_root_pod() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(65532),
        run_as_group: Some(65532),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..SeccompProfile::default()
        }),
        ..PodSecurityContext::default()
    }
}

fn http_probe(path: &str, period: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("admin".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        ..Probe::default()
    }
}

fn default_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), Quantity("100m".into())),
            ("memory".to_string(), Quantity("64Mi".into())),
        ])),
        limits: Some(BTreeMap::from([(
            "memory".to_string(),
            Quantity("256Mi".into()),
        )])),
        ..ResourceRequirements::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_api::{AIGatewaySpec, WorkloadSpec};

    fn gateway(workload: Option<WorkloadSpec>) -> AIGateway {
        let mut gateway = AIGateway::new(
            "edge",
            AIGatewaySpec {
                workload,
                ..AIGatewaySpec::default()
            },
        );
        gateway.metadata.namespace = Some("team-a".into());
        gateway.metadata.uid = Some("uid-1".into());
        gateway
    }

    fn settings() -> RenderSettings {
        RenderSettings {
            image: "tollgate:test".into(),
            controller_url: "https://tollgate-controller.tollgate-system.svc:8443".into(),
            controller_ca: "-----BEGIN CERTIFICATE-----\n".into(),
        }
    }

    #[test]
    fn every_object_is_owned_by_the_gateway_and_named_after_it() {
        let w = render(&gateway(None), &settings()).unwrap();
        let metas = [
            &w.service_account.metadata,
            &w.deployment.metadata,
            &w.service.metadata,
            &w.autoscaler.metadata,
            &w.disruption_budget.metadata,
        ];
        for meta in metas {
            assert_eq!(meta.name.as_deref(), Some("tollgate-edge"));
            assert_eq!(meta.namespace.as_deref(), Some("team-a"));
            let owner = &meta.owner_references.as_ref().unwrap()[0];
            assert_eq!(
                (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
                ("AIGateway", "edge", "uid-1")
            );
            assert_eq!(owner.controller, Some(true));
        }
    }

    #[test]
    fn pods_trust_the_controller_ca_and_listen_on_the_spec_ports() {
        let mut gw = gateway(None);
        gw.spec.listener = Some(tollgate_api::gateway::PortSpec { port: 8000 });
        let w = render(&gw, &settings()).unwrap();
        assert_eq!(
            w.controller_ca.metadata.name.as_deref(),
            Some("tollgate-edge-controller-ca")
        );
        assert_eq!(
            w.controller_ca.metadata.owner_references.as_ref().unwrap()[0].uid,
            "uid-1"
        );
        assert_eq!(
            w.controller_ca.data.as_ref().unwrap()["ca.crt"],
            settings().controller_ca
        );
        let pod = w.deployment.spec.unwrap().template.spec.unwrap();
        let args = pod.containers[0].args.clone().unwrap();
        let after = |flag: &str| {
            let i = args.iter().position(|a| a == flag).unwrap();
            args[i + 1].clone()
        };
        assert_eq!(after("--listen"), "0.0.0.0:8000");
        assert_eq!(after("--admin-listen"), "0.0.0.0:9090");
        assert_eq!(after("--gateway"), "team-a/edge");
        let ca_file = after("--controller-ca-file");
        let mount = pod.containers[0]
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| ca_file.starts_with(&m.mount_path))
            .unwrap();
        let volume = pod
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == mount.name)
            .unwrap();
        assert_eq!(
            volume.config_map.as_ref().unwrap().name,
            "tollgate-edge-controller-ca"
        );
    }

    #[test]
    fn pods_are_locked_down() {
        let w = render(&gateway(None), &settings()).unwrap();
        let pod = w.deployment.spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(
            w.service_account.automount_service_account_token,
            Some(false)
        );
        let container = &pod.containers[0];
        let security = container.security_context.as_ref().unwrap();
        assert_eq!(security.run_as_non_root, Some(true));
        assert_eq!(security.read_only_root_filesystem, Some(true));
        assert_eq!(security.allow_privilege_escalation, Some(false));
        assert_eq!(
            security.capabilities.as_ref().unwrap().drop.as_deref(),
            Some(&["ALL".to_string()][..])
        );
        assert_eq!(
            container
                .readiness_probe
                .as_ref()
                .unwrap()
                .http_get
                .as_ref()
                .unwrap()
                .path
                .as_deref(),
            Some("/readyz")
        );
        let token = pod.volumes.unwrap()[0]
            .projected
            .clone()
            .unwrap()
            .sources
            .unwrap()[0]
            .service_account_token
            .clone()
            .unwrap();
        assert_eq!(token.audience.as_deref(), Some(TOKEN_AUDIENCE));
    }

    #[test]
    fn autoscaling_follows_the_spec_and_replicas_are_left_to_it() {
        let spec = WorkloadSpec {
            min_replicas: Some(3),
            max_replicas: Some(7),
            target_cpu_utilization_percentage: Some(55),
            image: Some("custom:1".into()),
            ..WorkloadSpec::default()
        };
        let w = render(&gateway(Some(spec)), &settings()).unwrap();
        let hpa = w.autoscaler.spec.unwrap();
        assert_eq!((hpa.min_replicas, hpa.max_replicas), (Some(3), 7));
        assert_eq!(
            hpa.metrics.unwrap()[0]
                .resource
                .as_ref()
                .unwrap()
                .target
                .average_utilization,
            Some(55)
        );
        let deployment = w.deployment.spec.unwrap();
        assert_eq!(deployment.replicas, None);
        assert_eq!(
            deployment.template.spec.unwrap().containers[0]
                .image
                .as_deref(),
            Some("custom:1")
        );
        let defaults = render(&gateway(None), &settings())
            .unwrap()
            .autoscaler
            .spec
            .unwrap();
        assert_eq!(
            (defaults.min_replicas, defaults.max_replicas),
            (Some(DEFAULT_MIN_REPLICAS), DEFAULT_MAX_REPLICAS)
        );
    }

    #[test]
    fn service_selects_exactly_the_pods() {
        let w = render(&gateway(None), &settings()).unwrap();
        let selector = w.service.spec.unwrap().selector.unwrap();
        let pod_labels = w
            .deployment
            .spec
            .unwrap()
            .template
            .metadata
            .unwrap()
            .labels
            .unwrap();
        assert!(selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)));
        assert_eq!(
            endpoint("edge", "team-a", 8080),
            "http://tollgate-edge.team-a.svc:8080"
        );
    }

    #[test]
    fn a_gateway_without_uid_cannot_own_anything() {
        let mut g = gateway(None);
        g.metadata.uid = None;
        assert_eq!(render(&g, &settings()), Err(RenderError::Missing("uid")));
    }
}
