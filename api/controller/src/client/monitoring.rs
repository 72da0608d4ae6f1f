//! The client's monitoring calls: metric history and Prometheus service discovery.

use nova_http::Error;

use super::ControllerClient;
use crate::*;

impl ControllerClient {
    /// `GET /v1/metrics/query`.
    pub async fn metric_query(&self, q: &MetricQuery) -> Result<QueryAnswer, Error> {
        self.http()
            .get(&format!("/v1/metrics/query{}", q.to_query()))
            .await
    }
    /// `GET /v1/metrics/names`: the metrics the history holds.
    pub async fn metric_names(&self) -> Result<Vec<String>, Error> {
        self.http().get("/v1/metrics/names").await
    }
    /// `GET /v1/metrics/targets`: Prometheus HTTP service discovery.
    pub async fn sd_targets(&self) -> Result<Vec<SdTargetGroup>, Error> {
        self.http().get("/v1/metrics/targets").await
    }
}
