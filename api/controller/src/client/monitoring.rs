//! The client's monitoring calls: metric history, Prometheus service discovery,
//! alert rules, alerts, silences, receivers, dead letters and capacity.

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

    /// `GET /v1/alert-rules`.
    pub async fn alert_rules(&self) -> Result<Vec<AlertRule>, Error> {
        self.http().get("/v1/alert-rules").await
    }
    /// `POST /v1/alert-rules`.
    pub async fn create_alert_rule(&self, r: &AlertRule) -> Result<AlertRule, Error> {
        self.http().post("/v1/alert-rules", r).await
    }
    /// `GET /v1/alert-rules/{id}`.
    pub async fn alert_rule(&self, id: &str) -> Result<AlertRule, Error> {
        self.http()
            .get(&format!("/v1/alert-rules/{}", percent_encode(id)))
            .await
    }
    /// `PUT /v1/alert-rules/{id}`.
    pub async fn put_alert_rule(&self, r: &AlertRule) -> Result<AlertRule, Error> {
        self.http()
            .put(&format!("/v1/alert-rules/{}", percent_encode(&r.id)), r)
            .await
    }
    /// `DELETE /v1/alert-rules/{id}`.
    pub async fn delete_alert_rule(&self, id: &str) -> Result<AlertRule, Error> {
        self.http()
            .delete(&format!("/v1/alert-rules/{}", percent_encode(id)))
            .await
    }
    /// `GET /v1/alerts`.
    pub async fn alerts(&self) -> Result<Vec<Alert>, Error> {
        self.http().get("/v1/alerts").await
    }
    /// `GET /v1/alerts/{id}`.
    pub async fn alert(&self, id: &str) -> Result<Alert, Error> {
        self.http()
            .get(&format!("/v1/alerts/{}", percent_encode(id)))
            .await
    }
    /// `POST /v1/alerts/{id}/ack`.
    pub async fn ack_alert(&self, id: &str) -> Result<Alert, Error> {
        self.http()
            .post(&format!("/v1/alerts/{}/ack", percent_encode(id)), &())
            .await
    }
    /// `POST /v1/alerts/{id}/silence`.
    pub async fn silence_alert(&self, id: &str, for_s: u64) -> Result<Alert, Error> {
        self.http()
            .post(
                &format!("/v1/alerts/{}/silence", percent_encode(id)),
                &SilenceBody { for_s },
            )
            .await
    }
    /// `GET /v1/silences`.
    pub async fn silences(&self) -> Result<Vec<Silence>, Error> {
        self.http().get("/v1/silences").await
    }
    /// `POST /v1/silences`.
    pub async fn create_silence(&self, s: &NewSilence) -> Result<Silence, Error> {
        self.http().post("/v1/silences", s).await
    }
    /// `DELETE /v1/silences/{id}`.
    pub async fn delete_silence(&self, id: &str) -> Result<Silence, Error> {
        self.http()
            .delete(&format!("/v1/silences/{}", percent_encode(id)))
            .await
    }
    /// `GET /v1/alert-receivers`.
    pub async fn alert_receivers(&self) -> Result<Vec<Receiver>, Error> {
        self.http().get("/v1/alert-receivers").await
    }
    /// `POST /v1/alert-receivers`.
    pub async fn create_alert_receiver(&self, r: &Receiver) -> Result<Receiver, Error> {
        self.http().post("/v1/alert-receivers", r).await
    }
    /// `DELETE /v1/alert-receivers/{id}`.
    pub async fn delete_alert_receiver(&self, id: &str) -> Result<Receiver, Error> {
        self.http()
            .delete(&format!("/v1/alert-receivers/{}", percent_encode(id)))
            .await
    }
    /// `GET /v1/alert-dead-letters`.
    pub async fn dead_letters(&self) -> Result<Vec<DeadLetter>, Error> {
        self.http().get("/v1/alert-dead-letters").await
    }
    /// `GET /v1/capacity`.
    pub async fn capacity(&self, q: &CapacityQuery) -> Result<Capacity, Error> {
        let mut query = vec![];
        for (k, v) in [
            ("vcpus", q.vcpus),
            ("mem_mib", q.mem_mib),
            ("window_s", q.window_s),
        ] {
            if let Some(v) = v {
                query.push(format!("{k}={v}"));
            }
        }
        let q = if query.is_empty() {
            String::new()
        } else {
            format!("?{}", query.join("&"))
        };
        self.http().get(&format!("/v1/capacity{q}")).await
    }
}
