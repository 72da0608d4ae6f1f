//! Live migration's contract: the parameters (one set of defaults for the VMM, hostd
//! and the controller's policy), the request that starts a migration on the source
//! VMM, and the status that reports its progress and result.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use nova_http::FieldError;

/// How memory moves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MigrationMode {
    /// Copy while running, switch when the rest fits the downtime target.
    Precopy,
    /// Switch at once; the destination fetches pages on first touch.
    Postcopy,
    /// Pre-copy rounds, then post-copy if they stop converging.
    #[default]
    Hybrid,
}

impl MigrationMode {
    pub fn as_str(self) -> &'static str {
        match self {
            MigrationMode::Precopy => "precopy",
            MigrationMode::Postcopy => "postcopy",
            MigrationMode::Hybrid => "hybrid",
        }
    }
}

impl std::str::FromStr for MigrationMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "precopy" => Ok(MigrationMode::Precopy),
            "postcopy" => Ok(MigrationMode::Postcopy),
            "hybrid" => Ok(MigrationMode::Hybrid),
            _ => Err(format!("'{s}' is not precopy, postcopy or hybrid")),
        }
    }
}

/// How a VM moves between hosts (hostd's and the controller's choice; the VMM's
/// stream carries every kind). Every kind carries writable disks (sparse; compressed
/// as `params.compress` says) in the VMM's migration stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MigrationKind {
    /// The guest runs while memory and disks are copied; it pauses only for the rest.
    #[default]
    Live,
    /// The guest is paused, its memory, devices and disks move, it resumes there.
    Warm,
    /// The guest is stopped, its disks move, it boots afresh there.
    Cold,
}

impl MigrationKind {
    /// The wire name: `live`, `warm` or `cold`.
    pub fn as_str(self) -> &'static str {
        match self {
            MigrationKind::Live => "live",
            MigrationKind::Warm => "warm",
            MigrationKind::Cold => "cold",
        }
    }
}

impl std::str::FromStr for MigrationKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "live" => Ok(MigrationKind::Live),
            "warm" => Ok(MigrationKind::Warm),
            "cold" => Ok(MigrationKind::Cold),
            _ => Err(format!("'{s}' is not live, warm or cold")),
        }
    }
}

/// How page data is compressed on the wire.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    None,
    Zstd,
    Lz4,
}

impl Compression {
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Zstd => "zstd",
            Compression::Lz4 => "lz4",
        }
    }
}

impl std::str::FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Compression::None),
            "zstd" => Ok(Compression::Zstd),
            "lz4" => Ok(Compression::Lz4),
            _ => Err(format!("'{s}' is not none, zstd or lz4")),
        }
    }
}

/// Default downtime target, ms: what pre-copy aims to pause the guest for at most.
pub const DEFAULT_DOWNTIME_MS: u64 = 5;
/// Downtime target bounds, ms.
pub const MAX_DOWNTIME_MS: u64 = 60_000;
/// Parallel TCP connections bounds.
pub const MAX_CONNECTIONS: u32 = 16;
/// Bandwidth cap bounds, Mbit/s.
pub const MAX_BANDWIDTH_MBIT: u64 = 1_000_000;

fn default_downtime_ms() -> u64 {
    DEFAULT_DOWNTIME_MS
}
fn default_connections() -> u32 {
    1
}

/// How a migration runs: the same fields and defaults at every tier (the VMM's
/// `PUT /v1/migration`, hostd's `POST /v1/vms/{id}/migrate`, the controller's policy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MigrationParams {
    #[serde(default)]
    pub mode: MigrationMode,
    /// Longest pause the pre-copy phase aims for, ms.
    #[serde(default = "default_downtime_ms")]
    pub downtime_ms: u64,
    /// Cap on the migration's bandwidth, all connections together; none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth_mbit: Option<u64>,
    #[serde(default)]
    pub compress: Compression,
    /// TCP connections carrying memory in parallel.
    #[serde(default = "default_connections")]
    pub connections: u32,
}

impl Default for MigrationParams {
    fn default() -> Self {
        MigrationParams {
            mode: MigrationMode::default(),
            downtime_ms: DEFAULT_DOWNTIME_MS,
            bandwidth_mbit: None,
            compress: Compression::default(),
            connections: 1,
        }
    }
}

impl MigrationParams {
    /// Checks every range, naming the field.
    pub fn validate(&self) -> Result<(), FieldError> {
        let err = |field: &str, problem: String| FieldError::new(field, problem);
        if !(1..=MAX_DOWNTIME_MS).contains(&self.downtime_ms) {
            return Err(err(
                "downtime_ms",
                format!("{} is out of range 1..={MAX_DOWNTIME_MS}", self.downtime_ms),
            ));
        }
        if let Some(b) = self.bandwidth_mbit {
            if !(1..=MAX_BANDWIDTH_MBIT).contains(&b) {
                return Err(err(
                    "bandwidth_mbit",
                    format!("{b} is out of range 1..={MAX_BANDWIDTH_MBIT}"),
                ));
            }
        }
        if !(1..=MAX_CONNECTIONS).contains(&self.connections) {
            return Err(err(
                "connections",
                format!("{} is out of range 1..={MAX_CONNECTIONS}", self.connections),
            ));
        }
        Ok(())
    }
}

/// What a source needs to reach one waiting destination, and nothing else: the
/// SHA-256 of the certificate the destination's TLS presents (pinned: no CA is
/// involved) and the secret the source proves itself with. Each incoming migration
/// gets its own (hostd's `POST /v1/migrations/incoming` makes it).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MigrationPeer {
    /// Hex SHA-256 of the destination's certificate (DER), 64 characters.
    pub cert_sha256: String,
    /// Hex secret, 64 characters: the source sends it inside the TLS session.
    pub secret: String,
}

impl std::fmt::Debug for MigrationPeer {
    // The secret stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MigrationPeer")
            .field("cert_sha256", &self.cert_sha256)
            .field("secret", &"<hidden>")
            .finish()
    }
}

/// Checks that `value` (the field `field`) is 32 bytes in hex; returns them.
pub fn hex32(field: &str, value: &str) -> Result<[u8; 32], FieldError> {
    let bad = || FieldError::new(field, "must be 64 hex digits (32 bytes)");
    if value.len() != 64 {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(value.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16)
            .map_err(|_| bad())?;
    }
    Ok(out)
}

/// Bytes as lowercase hex (the form [`hex32`] reads).
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl MigrationPeer {
    /// The pinned certificate hash and the secret, as bytes.
    pub fn decode(&self) -> Result<([u8; 32], [u8; 32]), FieldError> {
        Ok((
            hex32("cert_sha256", &self.cert_sha256)?,
            hex32("secret", &self.secret)?,
        ))
    }
}

/// The destination's half of a [`MigrationPeer`]: the file `nova-vmm run --incoming
/// ADDR --incoming-credential FILE` reads (written 0600 by hostd for this VMM only).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncomingCredential {
    /// The certificate its TLS presents, DER in hex.
    pub cert_der: String,
    /// Its private key, PKCS#8 DER in hex.
    pub key_der: String,
    /// Hex secret every connection must send first, 64 characters.
    pub secret: String,
}

impl std::fmt::Debug for IncomingCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IncomingCredential { .. }")
    }
}

/// The body of `PUT /v1/migration`: where to, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MigrationRequest {
    /// `tcp:HOST:PORT` of the destination's `--incoming`.
    pub to: String,
    #[serde(default)]
    pub params: MigrationParams,
    /// How to authenticate the destination and to it (TLS). Required unless the
    /// source nova-vmm runs with `--insecure` (plaintext, for benchmarks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<MigrationPeer>,
}

impl MigrationRequest {
    /// Checks values and returns the destination's socket address text (`HOST:PORT`).
    pub fn validate(&self) -> Result<&str, FieldError> {
        let bad = || FieldError::new("to", format!("'{}' is not tcp:HOST:PORT", self.to));
        let addr = self.to.strip_prefix("tcp:").ok_or_else(bad)?;
        if addr
            .rsplit_once(':')
            .filter(|(h, _)| !h.is_empty())
            .and_then(|(_, p)| p.parse::<u16>().ok())
            .is_none()
        {
            return Err(bad());
        }
        self.params.validate().map_err(|e| e.under("params"))?;
        if let Some(p) = &self.peer {
            p.decode().map_err(|e| e.under("peer"))?;
        }
        Ok(addr)
    }
}

/// Where a migration is, on the source VMM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
// Named apart from hostd's own MigrationState in the documents that hold both.
#[schema(as = VmmMigrationState)]
pub enum MigrationState {
    Running,
    Completed,
    Failed,
    Cancelled,
    /// Contact was lost after `Switch`: the VM is paused here and may run there.
    Unknown,
}

impl MigrationState {
    /// The wire name: `running`, `completed`, `failed`, `cancelled` or `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            MigrationState::Running => "running",
            MigrationState::Completed => "completed",
            MigrationState::Failed => "failed",
            MigrationState::Cancelled => "cancelled",
            MigrationState::Unknown => "unknown",
        }
    }

    /// Completed, failed, cancelled or unknown: the VMM will not change it again.
    pub fn is_final(self) -> bool {
        self != MigrationState::Running
    }
}

/// Page counts of the result.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PageCounts {
    /// Pages sent with their data.
    pub sent: u64,
    /// Pages found zero and sent as such (or not at all in the first pass).
    pub zero: u64,
    /// Pages never touched by the guest, never read.
    pub skipped: u64,
    /// Pages whose data was compressed.
    pub compressed: u64,
}

/// Disk figures of the result: what live block migration sent of the VM's disks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BlockCounts {
    /// Disks copied with the VM (writable ones; read-only disks are the same image on
    /// both hosts).
    pub disks: u32,
    /// 4 KiB disk blocks sent with their data.
    pub sent: u64,
    /// Blocks found zero: never sent in the first pass, sent as such in later rounds.
    pub zero: u64,
    /// Bytes of holes in the disks (SEEK_HOLE), never read nor sent.
    pub hole_bytes: u64,
    /// Of the blocks sent, those sent again as XOR deltas against their previous
    /// copy (smaller that way).
    #[serde(default)]
    pub delta: u64,
    /// Bytes those deltas took in their frames (compressed), against 4 KiB a block.
    #[serde(default)]
    pub delta_bytes: u64,
}

/// Post-copy figures, reported by the destination.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PostcopyStats {
    pub faults_served: u64,
    pub fault_latency_us_p50: u64,
    pub fault_latency_us_p99: u64,
}

/// One pre-copy round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Round {
    pub round: u32,
    pub pages: u64,
    pub ms: f64,
    pub bandwidth_mbit: f64,
    pub dirty_rate_mbit: f64,
    /// Disk blocks the guest wrote since the last round, sent in this one.
    #[serde(default)]
    pub blocks: u64,
}

/// Progress, then the result: what `GET /v1/migration` returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
// Named apart from hostd's own MigrationStatus, which nests it as `vmm`.
#[schema(as = VmmMigrationStatus)]
pub struct MigrationStatus {
    pub state: MigrationState,
    pub mode: MigrationMode,
    /// The phase now: handshake, first-pass, dirty-rounds, stop-and-copy, device-state,
    /// switch, post-copy, done.
    pub phase: String,
    pub converged: bool,
    pub switched_to_postcopy: bool,
    pub rounds: u32,
    /// Source vCPUs paused -> destination vCPUs running, ms.
    pub downtime_ms: f64,
    pub total_ms: f64,
    pub bytes_sent: u64,
    pub pages: PageCounts,
    /// The disks' blocks (live block migration).
    #[serde(default)]
    pub blocks: BlockCounts,
    pub postcopy: PostcopyStats,
    pub round_log: Vec<Round>,
    pub remaining_pages: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl MigrationStatus {
    /// A migration that has just started.
    pub fn started(mode: MigrationMode) -> Self {
        MigrationStatus {
            state: MigrationState::Running,
            mode,
            phase: "handshake".into(),
            converged: false,
            switched_to_postcopy: false,
            rounds: 0,
            downtime_ms: 0.0,
            total_ms: 0.0,
            bytes_sent: 0,
            pages: PageCounts::default(),
            blocks: BlockCounts::default(),
            postcopy: PostcopyStats::default(),
            round_log: Vec::new(),
            remaining_pages: 0,
            error: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_default_to_hybrid_with_a_5ms_target_and_name_bad_fields() {
        let r: MigrationRequest = serde_json::from_str(r#"{"to":"tcp:127.0.0.1:4000"}"#).unwrap();
        assert_eq!(r.params, MigrationParams::default());
        assert_eq!(
            (
                r.params.mode,
                r.params.downtime_ms,
                r.params.connections,
                r.params.compress
            ),
            (MigrationMode::Hybrid, 5, 1, Compression::None)
        );
        assert_eq!(r.validate().unwrap(), "127.0.0.1:4000");
        let mut bad = r.clone();
        bad.params.connections = 0;
        assert_eq!(bad.validate().unwrap_err().field, "params.connections");
        let mut bad = r.clone();
        bad.params.downtime_ms = 0;
        assert_eq!(bad.validate().unwrap_err().field, "params.downtime_ms");
        let mut bad = r.clone();
        bad.params.bandwidth_mbit = Some(0);
        assert_eq!(bad.validate().unwrap_err().field, "params.bandwidth_mbit");
        for to in ["udp:x:1", "tcp::1", "tcp:h", "tcp:h:99999"] {
            let bad = MigrationRequest {
                to: to.into(),
                ..r.clone()
            };
            assert_eq!(bad.validate().unwrap_err().field, "to", "{to}");
        }
        let e =
            serde_json::from_str::<MigrationRequest>(r#"{"to":"tcp:a:1","params":{"speed":3}}"#)
                .unwrap_err();
        assert!(e.to_string().contains("speed"), "{e}");
    }

    #[test]
    fn a_peer_credential_must_be_two_32_byte_hex_values_and_its_secret_never_prints() {
        let good = MigrationPeer {
            cert_sha256: "ab".repeat(32),
            secret: "0f".repeat(32),
        };
        let (cert, secret) = good.decode().unwrap();
        assert_eq!((cert[0], secret[31]), (0xab, 0x0f));
        assert_eq!(to_hex(&secret), good.secret);
        assert!(!format!("{good:?}").contains(&good.secret));
        let mut r: MigrationRequest = serde_json::from_str(r#"{"to":"tcp:h:1"}"#).unwrap();
        assert_eq!(r.peer, None);
        for (cert, secret, field) in [
            ("ab".repeat(31), "00".repeat(32), "peer.cert_sha256"),
            ("zz".repeat(32), "00".repeat(32), "peer.cert_sha256"),
            ("ab".repeat(32), "00".repeat(33), "peer.secret"),
            ("ab".repeat(32), "é".repeat(32), "peer.secret"),
        ] {
            r.peer = Some(MigrationPeer {
                cert_sha256: cert,
                secret,
            });
            assert_eq!(r.validate().unwrap_err().field, field);
        }
    }

    #[test]
    fn a_status_reads_back_as_it_was_written() {
        let mut s = MigrationStatus::started(MigrationMode::Precopy);
        s.state = MigrationState::Completed;
        s.round_log.push(Round {
            round: 1,
            pages: 10,
            ms: 1.5,
            bandwidth_mbit: 900.0,
            dirty_rate_mbit: 3.0,
            blocks: 2,
        });
        s.blocks.sent = 7;
        s.error = Some("x".into());
        let back: MigrationStatus =
            serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
        assert!(back.state.is_final());
        for st in [
            MigrationState::Running,
            MigrationState::Completed,
            MigrationState::Failed,
            MigrationState::Cancelled,
            MigrationState::Unknown,
        ] {
            let wire = serde_json::to_string(&st).unwrap();
            assert_eq!(wire, format!("\"{}\"", st.as_str()));
        }
    }

    #[test]
    fn modes_and_compressions_parse_their_wire_names() {
        for m in [
            MigrationMode::Precopy,
            MigrationMode::Postcopy,
            MigrationMode::Hybrid,
        ] {
            assert_eq!(m.as_str().parse::<MigrationMode>().unwrap(), m);
            assert_eq!(
                serde_json::to_string(&m).unwrap(),
                format!("\"{}\"", m.as_str())
            );
        }
        for c in [Compression::None, Compression::Zstd, Compression::Lz4] {
            assert_eq!(c.as_str().parse::<Compression>().unwrap(), c);
        }
        assert!("fast".parse::<MigrationMode>().is_err());
    }
}
