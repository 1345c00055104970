//! The coordinator's REST API from the client side: membership for `COORDINATOR` mode, the
//! node list, `remove-worker`, jobs and replica rules.

use hoard_common::api::coordinator::{self as routes, JobView, NodesResponse, SubmitJob, SubmitResponse, WorkerInfo};
use hoard_common::api::ErrorBody;
use hoard_common::replica::{ReplicaRule, ReplicaRulePath, ReplicaRules, StoredReplicaRule, REPLICA_RULES_ROUTE};
use hoard_config::{SiteConfig, WorkerAddress};
use hoard_meta::{CoordinatorRecord, Liveness, MemberRecord, Membership, MetaError, WorkerRegistration};

use crate::nodes::describe_reqwest;
use crate::ClientError;

/// A REST client for the coordinators: `hoard.coordinator.addresses` (or the one coordinator's
/// address), tried in order until one answers; the one that answered is tried first next time.
#[derive(Debug, Clone)]
pub struct CoordinatorClient {
    http: reqwest::Client,
    bases: Vec<String>,
    preferred: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    token: Option<String>,
    /// Sent with every request when set; membership changes (remove-worker) need it.
    secret: Option<hoard_common::secret::ClusterSecret>,
}

impl CoordinatorClient {
    pub fn new(config: &SiteConfig) -> Result<CoordinatorClient, ClientError> {
        let http = reqwest::Client::builder()
            .connect_timeout(config.user.connect_timeout)
            .timeout(config.user.read_timeout)
            .pool_idle_timeout(config.coordinator.network.client_pool_idle_timeout())
            .no_proxy()
            .build()
            .map_err(|err| ClientError::Setup(err.to_string()))?;
        Ok(CoordinatorClient {
            http,
            bases: config
                .coordinator
                .client_addresses()
                .iter()
                .map(|address| format!("http://{address}"))
                .collect(),
            preferred: std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            token: config.security.admin_token.clone(),
            secret: None,
        })
    }

    /// Presents the cluster secret (`hoard.security.cluster.secret.file`) with every request.
    pub fn with_cluster_secret(mut self, secret: hoard_common::secret::ClusterSecret) -> CoordinatorClient {
        self.secret = Some(secret);
        self
    }

    /// Every coordinator this client asks, in order.
    pub fn addresses(&self) -> String {
        self.bases.join(", ")
    }

    /// The coordinator tried first.
    pub fn address(&self) -> &str {
        let index = self.preferred.load(std::sync::atomic::Ordering::Relaxed);
        self.bases.get(index).or(self.bases.first()).map_or("", String::as_str)
    }

    /// Sends `method route [body]` to the first coordinator that can be reached. Only failures
    /// to reach one move on to the next: an answer (even an error) is final.
    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        route: &str,
        body: Option<&(dyn erased::Json + Sync)>,
    ) -> Result<T, ClientError> {
        let start = self.preferred.load(std::sync::atomic::Ordering::Relaxed);
        let mut unreachable = Vec::new();
        for offset in 0..self.bases.len() {
            let index = (start + offset) % self.bases.len();
            let base = &self.bases[index];
            let mut request = self.http.request(method.clone(), format!("{base}{route}"));
            if let Some(body) = body {
                request = request.header("content-type", "application/json").body(body.to_json());
            }
            if let Some(token) = &self.token {
                request = request.bearer_auth(token);
            }
            if let Some(secret) = &self.secret {
                request = request.header(hoard_common::secret::CLUSTER_SECRET_HEADER, secret.expose());
            }
            let response = match request.send().await {
                Ok(response) => response,
                Err(err) => {
                    unreachable.push((base.clone(), describe_reqwest(&err)));
                    continue;
                }
            };
            self.preferred.store(index, std::sync::atomic::Ordering::Relaxed);
            let status = response.status();
            if status.is_success() {
                return response.json().await.map_err(|err| ClientError::Coordinator {
                    address: base.clone(),
                    reason: format!("unreadable answer: {}", describe_reqwest(&err)),
                });
            }
            let error: Option<ErrorBody> = response.json().await.ok();
            return Err(match error {
                Some(error) => ClientError::Rejected {
                    code: error.code,
                    message: error.error,
                },
                None => ClientError::Coordinator {
                    address: base.clone(),
                    reason: format!("answered {status}"),
                },
            });
        }
        Err(ClientError::Coordinator {
            address: self.bases.join(", "),
            reason: match unreachable.as_slice() {
                // The address is already named once.
                [(_, reason)] => reason.clone(),
                _ => format!(
                    "none answered ({})",
                    unreachable
                        .iter()
                        .map(|(base, reason)| format!("{base}: {reason}"))
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            },
        })
    }

    pub async fn nodes(&self) -> Result<NodesResponse, ClientError> {
        self.call(reqwest::Method::GET, routes::NODES_ROUTE, None).await
    }

    /// The coordinator holding the singleton duties.
    pub async fn leader(&self) -> Result<hoard_common::api::coordinator::CoordinatorInfo, ClientError> {
        self.call(reqwest::Method::GET, routes::LEADER_ROUTE, None).await
    }

    pub async fn submit_job(&self, submit: &SubmitJob) -> Result<SubmitResponse, ClientError> {
        self.call(reqwest::Method::POST, routes::JOBS_ROUTE, Some(submit)).await
    }

    /// Jobs, newest first, filtered by state, type and path (each optional).
    pub async fn list_jobs(
        &self,
        state: Option<&str>,
        job_type: Option<&str>,
        path: Option<&str>,
    ) -> Result<Vec<JobView>, ClientError> {
        #[derive(serde::Deserialize)]
        struct Jobs {
            jobs: Vec<JobView>,
        }
        let mut query = Vec::new();
        for (name, value) in [("state", state), ("type", job_type), ("path", path)] {
            if let Some(value) = value {
                query.push(format!("{name}={}", hoard_common::api::encode_path_for_url(value)));
            }
        }
        let mut route = routes::JOBS_ROUTE.to_string();
        if !query.is_empty() {
            route.push('?');
            route.push_str(&query.join("&"));
        }
        let jobs: Jobs = self.call(reqwest::Method::GET, &route, None).await?;
        Ok(jobs.jobs)
    }

    pub async fn job(&self, job_id: &str) -> Result<JobView, ClientError> {
        self.call(reqwest::Method::GET, &routes::job_route(job_id), None).await
    }

    pub async fn stop_job(&self, job_id: &str) -> Result<JobView, ClientError> {
        self.call(reqwest::Method::POST, &routes::job_stop_route(job_id), None)
            .await
    }

    pub async fn rerun_job(&self, job_id: &str) -> Result<JobView, ClientError> {
        self.call(reqwest::Method::POST, &routes::job_rerun_route(job_id), None)
            .await
    }

    /// Every replica rule (the default on `/` included when no rule is set there).
    pub async fn replica_rules(&self) -> Result<ReplicaRules, ClientError> {
        self.call(reqwest::Method::GET, REPLICA_RULES_ROUTE, None).await
    }

    /// Creates or updates the rule on its path; the rule as stored, with a warning when it
    /// asks for more copies than there are registered workers.
    pub async fn set_replica_rule(&self, rule: &ReplicaRule) -> Result<StoredReplicaRule, ClientError> {
        self.call(reqwest::Method::POST, REPLICA_RULES_ROUTE, Some(rule)).await
    }

    /// Removes the rule on `path` (`Rejected` with code `NOT_FOUND` when there is none).
    pub async fn remove_replica_rule(&self, path: &str) -> Result<ReplicaRulePath, ClientError> {
        let body = ReplicaRulePath { path: path.to_string() };
        self.call(reqwest::Method::DELETE, REPLICA_RULES_ROUTE, Some(&body))
            .await
    }

    /// Deletes a worker's registration; the coordinator refuses while it is ONLINE unless
    /// `force`.
    pub async fn remove_worker(&self, worker_id: &str, force: bool) -> Result<WorkerRegistration, ClientError> {
        #[derive(serde::Deserialize)]
        struct Removed {
            removed: WorkerRegistration,
        }
        let route = format!("{}?force={force}", routes::worker_route(worker_id));
        let removed: Removed = self.call(reqwest::Method::DELETE, &route, None).await?;
        Ok(removed.removed)
    }
}

/// `COORDINATOR` membership: the coordinator's list, with liveness from its heartbeats.
#[derive(Debug, Clone)]
pub struct CoordinatorMembership {
    client: CoordinatorClient,
}

impl CoordinatorMembership {
    pub fn new(client: CoordinatorClient) -> CoordinatorMembership {
        CoordinatorMembership { client }
    }
}

fn unavailable(err: ClientError) -> MetaError {
    MetaError::Unavailable(err.to_string())
}

#[async_trait::async_trait]
impl Membership for CoordinatorMembership {
    async fn members(&self) -> Result<Vec<MemberRecord>, MetaError> {
        let nodes = self.client.nodes().await.map_err(unavailable)?;
        Ok(members_of(nodes.workers))
    }

    async fn coordinators(&self) -> Result<Vec<CoordinatorRecord>, MetaError> {
        let nodes = self.client.nodes().await.map_err(unavailable)?;
        Ok(nodes
            .coordinators
            .into_iter()
            .map(|info| CoordinatorRecord {
                coordinator_id: info.coordinator_id,
                address: info.address,
                version: info.version,
                start_time_ms: info.start_time_ms,
            })
            .collect())
    }

    fn kind(&self) -> &'static str {
        "COORDINATOR"
    }
}

/// A coordinator's worker list as member records (the worker id is the ring identity): what
/// clients make of `GET /api/v1/nodes`, and the coordinator of its own registry.
pub fn members_of(workers: Vec<WorkerInfo>) -> Vec<MemberRecord> {
    workers
        .into_iter()
        .map(|worker| MemberRecord {
            ring_identity: worker.worker_id.clone(),
            worker_id: Some(worker.worker_id),
            address: WorkerAddress {
                host: worker.host,
                port: worker.rpc_port,
            },
            liveness: match worker.state.as_str() {
                "ONLINE" => Liveness::Online,
                "OFFLINE" => Liveness::Offline,
                _ => Liveness::Unknown,
            },
            capacity_bytes: Some(worker.capacity_bytes),
            used_bytes: worker.used_bytes,
            // A STATIC list's workers are not known to the coordinator: their health tells.
            cluster: (worker.state != "UNKNOWN").then_some(worker.cluster_name),
        })
        .collect()
}

/// Request bodies as JSON without making `call` generic over them.
mod erased {
    pub trait Json {
        fn to_json(&self) -> Vec<u8>;
    }

    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> Vec<u8> {
            serde_json::to_vec(self).unwrap_or_default()
        }
    }
}
