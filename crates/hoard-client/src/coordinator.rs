//! The coordinator's REST API from the client side: membership for `COORDINATOR` mode, the
//! node list, and `remove-worker`.

use hoard_common::api::coordinator::{self as routes, JobView, NodesResponse, SubmitJob, SubmitResponse};
use hoard_common::api::ErrorBody;
use hoard_config::{SiteConfig, WorkerAddress};
use hoard_meta::{CoordinatorRecord, Liveness, MemberRecord, Membership, MetaError, WorkerRegistration};

use crate::nodes::describe_reqwest;
use crate::ClientError;

/// A REST client for one coordinator.
#[derive(Debug, Clone)]
pub struct CoordinatorClient {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl CoordinatorClient {
    pub fn new(config: &SiteConfig) -> Result<CoordinatorClient, ClientError> {
        let http = reqwest::Client::builder()
            .connect_timeout(config.user.connect_timeout)
            .timeout(config.user.read_timeout)
            .no_proxy()
            .build()
            .map_err(|err| ClientError::Setup(err.to_string()))?;
        Ok(CoordinatorClient {
            http,
            base: format!("http://{}", config.coordinator.address()),
            token: config.security.admin_token.clone(),
        })
    }

    pub fn address(&self) -> &str {
        &self.base
    }

    async fn call<T: serde::de::DeserializeOwned>(&self, request: reqwest::RequestBuilder) -> Result<T, ClientError> {
        let request = match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        let response = request.send().await.map_err(|err| ClientError::Coordinator {
            address: self.base.clone(),
            reason: describe_reqwest(&err),
        })?;
        let status = response.status();
        if status.is_success() {
            return response.json().await.map_err(|err| ClientError::Coordinator {
                address: self.base.clone(),
                reason: format!("unreadable answer: {}", describe_reqwest(&err)),
            });
        }
        let body: Option<ErrorBody> = response.json().await.ok();
        Err(match body {
            Some(body) => ClientError::Rejected {
                code: body.code,
                message: body.error,
            },
            None => ClientError::Coordinator {
                address: self.base.clone(),
                reason: format!("answered {status}"),
            },
        })
    }

    pub async fn nodes(&self) -> Result<NodesResponse, ClientError> {
        self.call(self.http.get(format!("{}{}", self.base, routes::NODES_ROUTE)))
            .await
    }

    pub async fn submit_job(&self, submit: &SubmitJob) -> Result<SubmitResponse, ClientError> {
        self.call(
            self.http
                .post(format!("{}{}", self.base, routes::JOBS_ROUTE))
                .json(submit),
        )
        .await
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
        let mut url = format!("{}{}", self.base, routes::JOBS_ROUTE);
        if !query.is_empty() {
            url.push('?');
            url.push_str(&query.join("&"));
        }
        let jobs: Jobs = self.call(self.http.get(url)).await?;
        Ok(jobs.jobs)
    }

    pub async fn job(&self, job_id: &str) -> Result<JobView, ClientError> {
        self.call(self.http.get(format!("{}{}", self.base, routes::job_route(job_id))))
            .await
    }

    pub async fn stop_job(&self, job_id: &str) -> Result<JobView, ClientError> {
        self.call(
            self.http
                .post(format!("{}{}", self.base, routes::job_stop_route(job_id))),
        )
        .await
    }

    pub async fn rerun_job(&self, job_id: &str) -> Result<JobView, ClientError> {
        self.call(
            self.http
                .post(format!("{}{}", self.base, routes::job_rerun_route(job_id))),
        )
        .await
    }

    /// Deletes a worker's registration; the coordinator refuses while it is ONLINE unless
    /// `force`.
    pub async fn remove_worker(&self, worker_id: &str, force: bool) -> Result<WorkerRegistration, ClientError> {
        #[derive(serde::Deserialize)]
        struct Removed {
            removed: WorkerRegistration,
        }
        let url = format!("{}{}?force={force}", self.base, routes::worker_route(worker_id));
        let removed: Removed = self.call(self.http.delete(url)).await?;
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
        Ok(nodes
            .workers
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
            })
            .collect())
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
