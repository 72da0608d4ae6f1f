//! The client's federation calls: this cluster's identity and keys, peering (join,
//! list, leave, trust), federated tokens and their revocation, federated lists,
//! global placement and cross-cluster migration; and the calls one controller makes
//! of a peer.

use nova_http::Error;
use serde::de::DeserializeOwned;

use super::ControllerClient;
use crate::*;

impl ControllerClient {
    /// A client of the controller at `url` presenting `token`, sharing `http`'s
    /// connection pool (a controller calling its peers).
    pub fn sharing(http: &nova_http::Client, url: &str, token: &str) -> Result<Self, Error> {
        Ok(ControllerClient {
            http: http.to(url, Some(token))?,
            token: Some(token.to_owned()),
            opts: nova_http::ClientOptions::default(),
        })
    }

    /// `GET /.well-known/jwks.json`: the keys this cluster's tokens are signed with.
    pub async fn jwks(&self) -> Result<Jwks, Error> {
        self.http.get("/.well-known/jwks.json").await
    }
    /// `GET /v1/federation`: this cluster's identity and its peers.
    pub async fn federation(&self) -> Result<FederationView, Error> {
        self.http.get("/v1/federation").await
    }
    /// `PATCH /v1/federation/identity`: this cluster's name and region.
    pub async fn set_identity(&self, p: &IdentityPatch) -> Result<ClusterIdentity, Error> {
        self.http
            .call(nova_http::Method::PATCH, "/v1/federation/identity", Some(p))
            .await
    }
    /// `POST /v1/federation/keys/rotate`: a new signing key; the old one still verifies.
    pub async fn rotate_keys(&self) -> Result<ClusterIdentity, Error> {
        self.http.post("/v1/federation/keys/rotate", &()).await
    }
    /// `POST /v1/federation/peers`: peers with another cluster.
    pub async fn join_federation(&self, j: &JoinRequest) -> Result<Peer, Error> {
        self.http.post("/v1/federation/peers", j).await
    }
    /// `DELETE /v1/federation/peers/{id}`: stops peering with a cluster.
    pub async fn leave_federation(&self, peer: &str) -> Result<LeftPeer, Error> {
        self.http
            .delete(&format!("/v1/federation/peers/{}", percent_encode(peer)))
            .await
    }
    /// `PUT /v1/federation/peers/{id}/policy`: what this cluster honours of a peer.
    pub async fn set_peer_policy(&self, peer: &str, p: &PeerPolicy) -> Result<Peer, Error> {
        self.http
            .put(
                &format!("/v1/federation/peers/{}/policy", percent_encode(peer)),
                p,
            )
            .await
    }
    /// `POST /v1/federation/handshake`: one cluster introducing itself to another.
    pub async fn handshake(&self, h: &Hello) -> Result<Hello, Error> {
        self.http.post("/v1/federation/handshake", h).await
    }
    /// `GET /v1/federation/summary`: this cluster's capacity and counts.
    pub async fn federation_summary(&self) -> Result<ClusterSummary, Error> {
        self.http.get("/v1/federation/summary").await
    }
    /// `POST /v1/federation/tokens`: a federated token (JWT) for the caller.
    pub async fn federated_token(&self, t: &NewFederatedToken) -> Result<FederatedToken, Error> {
        self.http.post("/v1/federation/tokens", t).await
    }
    /// `DELETE /v1/federation/tokens/{jti}`: revokes a federated token here and at
    /// every peer that can be told.
    pub async fn revoke_federated_token(&self, jti: &str) -> Result<Revoked, Error> {
        self.http
            .delete(&format!("/v1/federation/tokens/{}", percent_encode(jti)))
            .await
    }
    /// `POST /v1/federation/revocations`: a peer telling of a token it revoked.
    pub async fn tell_revocation(&self, r: &Revocation) -> Result<Revocation, Error> {
        self.http.post("/v1/federation/revocations", r).await
    }
    /// `GET /v1/federation/revocations`: the tokens this cluster revoked that have
    /// not expired yet (what peers pull).
    pub async fn revocations(&self) -> Result<Vec<Revocation>, Error> {
        self.http.get("/v1/federation/revocations").await
    }
    /// `GET <path>?scope=federation`: a federated list (`/v1/vms`, `/v1/hosts`,
    /// `/v1/alerts`, `/v1/capacity`), waiting `timeout_ms` for each peer.
    pub async fn federated<T: DeserializeOwned>(
        &self,
        path: &str,
        timeout_ms: Option<u64>,
    ) -> Result<FederatedList<T>, Error> {
        let t = timeout_ms
            .map(|t| format!("&timeout_ms={t}"))
            .unwrap_or_default();
        self.http.get(&format!("{path}?scope=federation{t}")).await
    }
    /// [`ControllerClient::federated`]'s answer as it came, not decoded: for a
    /// controller that passes a peer's items on.
    pub async fn federated_body(&self, path: &str) -> Result<nova_http::Bytes, Error> {
        self.http
            .get_body(&format!("{path}?scope=federation"))
            .await
    }
    /// `POST /v1/federation/vms`: a VM placed by the federation scheduler.
    pub async fn create_global_vm(&self, s: &GlobalVmSpec) -> Result<GlobalPlacement, Error> {
        self.http.post("/v1/federation/vms", s).await
    }
    /// `POST /v1/federation/migrations`: asks this (destination) cluster to admit a
    /// VM arriving by cross-cluster live migration.
    pub async fn admit_migration(&self, v: &IncomingVm) -> Result<Admitted, Error> {
        self.http.post("/v1/federation/migrations", v).await
    }
    /// `GET /v1/federation/migrations/{id}`: an incoming migration here.
    pub async fn incoming_migration(&self, id: &str) -> Result<IncomingMigration, Error> {
        self.http
            .get(&format!("/v1/federation/migrations/{}", percent_encode(id)))
            .await
    }
    /// `POST /v1/federation/migrations/{id}/commit`: the VM runs here now.
    pub async fn commit_migration(
        &self,
        id: &str,
        e: &MigrationEnd,
    ) -> Result<IncomingMigration, Error> {
        self.http
            .post(
                &format!("/v1/federation/migrations/{}/commit", percent_encode(id)),
                e,
            )
            .await
    }
    /// `POST /v1/federation/migrations/{id}/abort`: nothing moved; drop it here.
    pub async fn abort_migration(
        &self,
        id: &str,
        e: &MigrationEnd,
    ) -> Result<IncomingMigration, Error> {
        self.http
            .post(
                &format!("/v1/federation/migrations/{}/abort", percent_encode(id)),
                e,
            )
            .await
    }
}
