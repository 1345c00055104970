//! The OpenAPI 3 document the coordinator serves at `/api/v1/openapi.json`. A test checks that
//! it parses and names every route the router serves.

pub const DOCUMENT: &str = include_str!("openapi.json");

#[cfg(test)]
mod tests {
    use hoard_common::api::coordinator as routes;

    #[test]
    fn document_parses_and_names_every_route() {
        let doc: serde_json::Value = serde_json::from_str(super::DOCUMENT).expect("valid JSON");
        assert_eq!(doc["openapi"], "3.0.3");
        let paths = doc["paths"].as_object().expect("paths");
        for (path, method) in [
            (routes::HEALTH_ROUTE, "get"),
            (routes::METRICS_ROUTE, "get"),
            (routes::OPENAPI_ROUTE, "get"),
            (routes::NODES_ROUTE, "get"),
            (routes::WORKERS_ROUTE, "get"),
            (routes::WORKERS_ROUTE, "post"),
            ("/api/v1/workers/{id}", "delete"),
            ("/api/v1/workers/{id}/heartbeat", "put"),
            (routes::JOBS_ROUTE, "get"),
            (routes::JOBS_ROUTE, "post"),
            ("/api/v1/jobs/{id}", "get"),
            ("/api/v1/jobs/{id}/stop", "post"),
            ("/api/v1/jobs/{id}/rerun", "post"),
            (routes::LEADER_ROUTE, "get"),
            (hoard_common::replica::REPLICA_RULES_ROUTE, "get"),
            (hoard_common::replica::REPLICA_RULES_ROUTE, "post"),
            (hoard_common::replica::REPLICA_RULES_ROUTE, "delete"),
            (hoard_common::replica::REPLICAS_ROUTE, "get"),
        ] {
            assert!(paths[path][method].is_object(), "{method} {path} is not documented");
        }
        assert_eq!(paths.len(), 14, "a documented path the router does not serve");
    }
}
