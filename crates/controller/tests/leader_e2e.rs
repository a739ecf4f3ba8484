//! Lease leader election against a real kube-apiserver + etcd (tests/k8s):
//! two candidates never lead at once, a crashed leader is replaced once its
//! Lease expires, and a released Lease is taken over at once.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tollgate_controller::leader::{LeaderConfig, LeaderElection};

const NAMESPACE: &str = "default";
const LEASE: &str = "tollgate-controller-leader";
const LEASE_DURATION: Duration = Duration::from_secs(2);

/// The envtest cluster, plus a fresh client per candidate.
struct Cluster(tollgate_testenv::Cluster);

impl Cluster {
    fn start() -> Cluster {
        Cluster(tollgate_testenv::Cluster::start().expect("envtest"))
    }

    /// A fresh client (own connections), as a separate replica would have.
    async fn client(&self) -> kube::Client {
        let kubeconfig = Kubeconfig::read_from(self.0.kubeconfig()).unwrap();
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .unwrap();
        kube::Client::try_from(config).unwrap()
    }
}

struct Candidate {
    election: LeaderElection,
    leading: watch::Receiver<bool>,
    task: JoinHandle<()>,
}

impl Candidate {
    async fn start(cluster: &Cluster, identity: &str) -> Candidate {
        let config = LeaderConfig {
            lease_duration: LEASE_DURATION,
            renew_deadline: Duration::from_millis(1500),
            retry_period: Duration::from_millis(200),
            ..LeaderConfig::new(NAMESPACE, LEASE, identity)
        };
        let election = LeaderElection::new(cluster.client().await, config);
        let (tx, leading) = watch::channel(false);
        let task = tokio::spawn(election.clone().run(tx));
        Candidate {
            election,
            leading,
            task,
        }
    }

    fn is_leading(&self) -> bool {
        *self.leading.borrow()
    }

    /// Stops the task the way a crash would: no release.
    async fn kill(self) -> LeaderElection {
        self.task.abort();
        let _ = self.task.await;
        self.election
    }
}

/// Polls until `cond` holds; returns how long that took, or panics after `limit`.
async fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

async fn lease(cluster: &Cluster) -> Lease {
    Api::<Lease>::namespaced(cluster.client().await, NAMESPACE)
        .get(LEASE)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_failover_on_crash_and_fast_handover_on_release() {
    let cluster = Cluster::start();
    let a = Candidate::start(&cluster, "replica-a").await;
    let b = Candidate::start(&cluster, "replica-b").await;

    // Exactly one leads; sampled over a few seconds, never both, no flapping.
    wait_for("a first leader", Duration::from_secs(10), || {
        a.is_leading() || b.is_leading()
    })
    .await;
    let a_leads = a.is_leading();
    let sampling = Instant::now();
    while sampling.elapsed() < Duration::from_secs(3) {
        let (la, lb) = (a.is_leading(), b.is_leading());
        assert!(!(la && lb), "both candidates lead");
        assert_eq!((la, lb), (a_leads, !a_leads), "leadership changed hands");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (leader, follower) = if a_leads { (a, b) } else { (b, a) };
    let (leader_id, follower_id) = if a_leads {
        ("replica-a", "replica-b")
    } else {
        ("replica-b", "replica-a")
    };
    let spec = lease(&cluster).await.spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some(leader_id));
    assert_eq!(spec.lease_duration_seconds, Some(2));
    assert_eq!(spec.lease_transitions, Some(0));

    // Crash the leader: the follower takes over once the Lease expires.
    let crashed = leader.kill().await;
    let took = wait_for(
        "takeover after crash",
        LEASE_DURATION + Duration::from_millis(1500),
        || follower.is_leading(),
    )
    .await;
    eprintln!("takeover after crash: {took:?}");
    let spec = lease(&cluster).await.spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some(follower_id));
    assert_eq!(spec.lease_transitions, Some(1));

    // The crashed replica comes back: it must follow, not lead.
    drop(crashed);
    let restarted = Candidate::start(&cluster, leader_id).await;
    let sampling = Instant::now();
    while sampling.elapsed() < Duration::from_millis(800) {
        assert!(!restarted.is_leading(), "restarted replica leads too");
        assert!(follower.is_leading(), "leader stepped down");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Graceful shutdown: stop, release; the other takes over well before expiry.
    let stopping = follower.kill().await;
    let released = Instant::now();
    stopping.release().await.unwrap();
    let limit = Duration::from_secs(1).saturating_sub(released.elapsed());
    wait_for("takeover after release", limit, || restarted.is_leading()).await;
    eprintln!("takeover after release: {:?}", released.elapsed());
    let spec = lease(&cluster).await.spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some(leader_id));
    assert_eq!(spec.lease_transitions, Some(2));

    // Releasing a Lease we do not hold is a no-op.
    stopping.release().await.unwrap();
    assert_eq!(
        lease(&cluster)
            .await
            .spec
            .unwrap()
            .holder_identity
            .as_deref(),
        Some(leader_id)
    );
    restarted.kill().await;
}
