//! Federation: what clusters say to each other and what their users ask of the
//! federation. A cluster's public identity and signing keys ([`ClusterIdentity`],
//! [`Jwks`]), the handshake two clusters exchange when they peer ([`Hello`]), the
//! peers a cluster keeps ([`Peer`]) with the trust policy that maps a peer's tenants
//! and roles to its own ([`TrustPolicy`]), the claims of a federated token
//! ([`FederatedClaims`]), federated lists that say which clusters answered
//! ([`FederatedList`]), global placement ([`GlobalVmSpec`]), and cross-cluster live
//! migration ([`IncomingVm`], [`Admitted`], [`IncomingMigration`], [`MigrationEnd`]).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::model::{Resources, Role, Vm, VmSpec};

/// One public signing key of a cluster (RFC 8037: an Ed25519 key, `alg` EdDSA).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Jwk {
    /// `OKP`.
    pub kty: String,
    /// `Ed25519`.
    pub crv: String,
    /// `<cluster id>:<n>`: which cluster, which of its keys.
    pub kid: String,
    /// The public key, base64url without padding.
    pub x: String,
    /// `EdDSA`.
    pub alg: String,
    /// `sig`.
    #[serde(rename = "use")]
    pub use_: String,
}

/// `GET /.well-known/jwks.json`: the keys a cluster's tokens are signed with, the
/// current one first; retired keys stay until every token they signed has expired.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

/// A cluster as the federation knows it: its id, name, region, where its API is, and
/// its public keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ClusterIdentity {
    /// `c-` and 16 hex digits, made once when the cluster first federates.
    pub cluster_id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The URL peers reach its API at (set when it joins a federation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub jwks: Jwks,
}

/// `PATCH /v1/federation/identity`: this cluster's name and region.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IdentityPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

/// Which of a peer's tenants and roles this cluster honours: a token of the peer is
/// accepted when a rule names its tenant (or `*`) and lists its role; it then acts
/// in `local_tenant` (the same name when absent) with that role. No rule, no entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrustPolicy {
    #[serde(default)]
    pub rules: Vec<TrustRule>,
}

/// One rule of a [`TrustPolicy`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrustRule {
    /// The peer's tenant, or `*` for any.
    pub remote_tenant: String,
    /// The tenant its users act in here; the remote tenant's name when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_tenant: Option<String>,
    /// The roles honoured (as they are); others are refused. Never `host`.
    pub roles: Vec<Role>,
}

/// `POST /v1/federation/peers` (`novactl federation join`): peer with the cluster at
/// `peer_url`, whose admin token is `peer_token` (used for the handshake only, never
/// kept).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    pub peer_url: String,
    pub peer_token: String,
    /// The URL the peer reaches this cluster at.
    pub self_url: String,
    /// What this cluster honours of the peer's tokens (nothing when absent).
    #[serde(default)]
    pub trust: TrustPolicy,
    /// Whether global placement may send VMs to the peer (default true).
    #[serde(default = "yes")]
    pub placement: bool,
}

fn yes() -> bool {
    true
}

/// `POST /v1/federation/handshake`, both ways: a cluster's identity and a token it
/// signed for the other one (proof that it holds the keys it shows).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Hello {
    pub cluster: ClusterIdentity,
    /// A short-lived JWT of the sender, for the receiver (`aud`), or for anyone
    /// (`*`) when the sender does not know the receiver's id yet.
    pub proof: String,
}

/// A peer cluster as this one keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Peer {
    pub cluster_id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    pub url: String,
    /// Its public keys, as of the handshake or the last refresh.
    pub jwks: Jwks,
    pub trust: TrustPolicy,
    /// Whether global placement may send VMs there.
    pub placement: bool,
    pub joined_at_ms: u64,
}

/// `PUT /v1/federation/peers/{id}/trust`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PeerPolicy {
    pub trust: TrustPolicy,
    #[serde(default = "yes")]
    pub placement: bool,
}

/// What a cluster says about itself to its peers (`GET /v1/federation/summary`),
/// and what each keeps of the others' (the dashboard's cache).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ClusterSummary {
    pub cluster_id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    pub hosts: u64,
    pub hosts_ready: u64,
    /// Of the ready, uncordoned hosts.
    pub capacity: Resources,
    /// What the VMs placed there hold.
    pub used: Resources,
    /// The most one VM can get: the freest ready, uncordoned host's free resources.
    pub largest_free: Resources,
    pub vms: u64,
    pub alerts_firing: u64,
    pub at_ms: u64,
}

/// `GET /v1/federation/peers`: a peer and the last summary this cluster has of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PeerStatus {
    pub peer: Peer,
    /// The last summary it answered (cached; absent before its first answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<ClusterSummary>,
    /// When it last answered, ms since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen_ms: Option<u64>,
    /// Why the last refresh failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `GET /v1/federation`: this cluster's identity and its peers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FederationView {
    pub cluster: ClusterIdentity,
    pub peers: Vec<PeerStatus>,
}

/// `DELETE /v1/federation/peers/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LeftPeer {
    pub cluster_id: String,
    /// Whether the peer acknowledged (it forgets this cluster too); false when it
    /// was unreachable, and then only this side has left.
    pub peer_acknowledged: bool,
}

/// What a federated token says (the JWT's claims).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FederatedClaims {
    /// The issuing cluster's id.
    pub iss: String,
    /// The user (or `cluster:<id>` for a cluster speaking for itself).
    pub sub: String,
    /// The clusters it is for (ids).
    pub aud: Vec<String>,
    /// Expiry and issue time, s since the epoch.
    pub exp: u64,
    pub iat: u64,
    /// Its id, for revocation.
    pub jti: String,
    /// The user's tenant and role at the issuer.
    pub tenant: String,
    pub role: Role,
    /// A cluster speaking for itself (summaries, handshakes), not for a user.
    #[serde(default)]
    pub peer: bool,
}

/// `POST /v1/federation/tokens`: a federated token for the caller.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewFederatedToken {
    /// Peer ids or names it is for; every peer (and this cluster) when empty.
    #[serde(default)]
    pub audience: Vec<String>,
    /// Lifetime, s (60 to 86400; default 3600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_s: Option<u64>,
}

/// A federated token, shown once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FederatedToken {
    pub token: String,
    pub jti: String,
    pub audience: Vec<String>,
    pub expires_at_ms: u64,
}

/// A revoked federated token: `DELETE /v1/federation/tokens/{jti}` here, pushed to
/// the peers (`POST /v1/federation/revocations`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Revocation {
    /// The issuing cluster.
    pub iss: String,
    pub jti: String,
    /// Until when it matters (the token's expiry), ms since the epoch.
    pub until_ms: u64,
}

/// Answer of a revocation: which peers were told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Revoked {
    pub revocation: Revocation,
    pub peers_told: Vec<String>,
    /// Peers that could not be told now (they learn it at their next refresh).
    pub peers_missed: Vec<String>,
}

/// `?scope=federation[&timeout_ms=]` on `GET /v1/vms`, `/v1/hosts`, `/v1/alerts`,
/// `/v1/capacity`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ScopeQuery {
    /// `federation`: every peer's answer too; this cluster only when absent.
    #[serde(default)]
    pub scope: Option<String>,
    /// How long to wait for each peer, ms (10 to 30000; default 2000).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// How one cluster answered a federated call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ClusterAnswer {
    pub cluster_id: String,
    pub name: String,
    pub answered: bool,
    /// Why it did not (unreachable, timed out, refused by its policy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub items: u64,
    pub took_ms: u64,
}

/// One item of a federated list and the cluster it is in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Located<T> {
    pub cluster: String,
    pub item: T,
}

/// A federated list: every answering cluster's items, and how each cluster answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FederatedList<T> {
    pub items: Vec<Located<T>>,
    pub clusters: Vec<ClusterAnswer>,
    /// Some cluster did not answer: the list is missing its items.
    pub partial: bool,
}

/// Where a VM of [`GlobalVmSpec`] may go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Target {
    /// This cluster (id or name).
    Cluster(String),
    /// Any cluster of this region.
    Region(String),
    /// Any cluster meeting the constraints.
    Anywhere(Constraints),
}

/// What a cluster must meet to be chosen "anywhere".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Constraints {
    /// Regions allowed (any when empty).
    #[serde(default)]
    pub regions: Vec<String>,
    /// Clusters never to use (ids or names).
    #[serde(default)]
    pub avoid: Vec<String>,
}

/// `POST /v1/federation/vms`: a VM and where in the federation it may run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GlobalVmSpec {
    pub placement: Target,
    pub spec: VmSpec,
}

/// One cluster the federation scheduler weighed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Candidate {
    pub cluster_id: String,
    pub name: String,
    /// Its freest host's free resources, when it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub largest_free: Option<Resources>,
    /// Why it was not chosen (or, when it was tried, why it refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected: Option<String>,
}

/// Where a global placement put the VM, and what was weighed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GlobalPlacement {
    pub cluster_id: String,
    pub name: String,
    /// The VM, as the chosen cluster answered it.
    pub vm: Vm,
    pub candidates: Vec<Candidate>,
}

/// `POST /v1/federation/migrations` (the source controller to the destination, as the
/// user who asked, whose tenant and role the destination's trust policy maps): admit
/// a VM arriving by cross-cluster live migration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IncomingVm {
    /// The VM's id: it keeps it in the destination cluster.
    pub vm_id: String,
    pub spec: VmSpec,
    /// When the VM was first created, ms since the epoch (its history follows it).
    pub created_at_ms: u64,
    /// The source cluster's host it leaves.
    pub source_host: String,
    /// The source cluster's migration operation.
    pub operation: String,
    /// A host of the destination cluster (its system tenant's callers only); the
    /// destination's scheduler picks one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// How long the migration may take, s (60 to 86400): after that the destination
    /// drops what it prepared unless the VM runs there.
    pub timeout_s: u64,
}

/// The destination's admission: where the VM goes, and the credential of the gateway
/// ([`gateway_path`]) through which the source hostd prepares the destination host.
/// The gateway passes on only this migration's calls; no host token leaves a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Admitted {
    pub migration_id: String,
    /// The destination host its scheduler picked (or the one asked for).
    pub host: String,
    /// The tenant the VM belongs to there (the trust policy's mapping).
    pub tenant: String,
    /// The gateway's bearer token, for this migration only (shown once).
    pub token: String,
}

/// Where an incoming cross-cluster migration is, at the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum IncomingPhase {
    /// Admitted; the VM's record holds its place on the host.
    Admitted,
    /// The destination hostd listens for the VM.
    Prepared,
    /// The VM runs here: the record is the destination cluster's.
    Adopted,
    /// Nothing moved: everything made for it here is gone.
    Dropped,
}

/// `GET /v1/federation/migrations/{id}`: an incoming cross-cluster migration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct IncomingMigration {
    pub migration_id: String,
    pub vm_id: String,
    pub tenant: String,
    pub host: String,
    pub phase: IncomingPhase,
    /// The source cluster's id and name, its host and operation.
    pub source_cluster: String,
    pub source_name: String,
    pub source_host: String,
    pub operation: String,
    pub created_at_ms: u64,
    pub deadline_ms: u64,
    /// Why it was dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `POST /v1/federation/migrations/{id}/commit` or `/abort` (the source controller):
/// how the migration ended at the source.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MigrationEnd {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downtime_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The path of migration `id`'s gateway on the destination controller: the source
/// hostd's base URL for its hostd-to-hostd calls (`<peer url><gateway_path>`).
pub fn gateway_path(id: &str) -> String {
    format!("/v1/federation/migrations/{id}/hostd")
}
