//! `novactl backup`: back a VM up into a backup store, list and show backups, restore
//! one to a new VM, verify, delete, prune by retention, garbage-collect a store, and
//! the stores themselves (directory stores; S3 stores through the API). Long work is
//! followed with a progress bar, then summed up.

use anyhow::Context as _;
use clap::Subcommand;
use nova_controller_api::{
    Backup, BackupBody, BackupRetention, BackupStore, ChunkHash, ChunkingKind, ControllerClient,
    FileReport, GcBody, GcReport, OpState, Operation, PruneBody, PruneResult, RestoreBody,
    StoreLocation, Vm,
};

use crate::dates;
use crate::output::{self, Columns, Format};
use crate::progress::{self, WaitArgs};

/// `novactl backup ...`.
#[derive(Subcommand, Debug)]
pub enum BackupCmd {
    /// Back a VM up into a store (incremental on its last backup there).
    Create {
        /// The VM's id.
        vm: String,
        /// The backup store's name.
        #[arg(long)]
        store: String,
        /// Read the whole disk even when the VMM's bitmap would do.
        #[arg(long)]
        full: bool,
        /// Also the guest's memory and device state (a running VM): a restore
        /// resumes the guest where it was instead of booting it.
        #[arg(long)]
        memory: bool,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Your tenant's backups (one VM's with --vm).
    List {
        /// Only this VM's backups.
        #[arg(long)]
        vm: Option<String>,
    },
    /// One backup: what it read and stored, whether verify found damage.
    Get {
        /// The backup's id.
        id: String,
    },
    /// Restore a backup to a new VM.
    Restore {
        /// The backup's id.
        id: String,
        /// The new VM's name.
        #[arg(long)]
        name: String,
        /// The host to restore on (system tenant).
        #[arg(long)]
        host: Option<String>,
        /// Leave the restored VM stopped.
        #[arg(long)]
        no_start: bool,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Re-hash every chunk of a backup; damage is recorded on it.
    Verify {
        /// The backup's id.
        id: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Delete a backup from its store (its chunks go at the next GC).
    Delete {
        /// The backup's id.
        id: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Delete a VM's backups that the retention does not keep.
    Prune {
        /// The VM's id.
        vm: String,
        /// Keep the newest N.
        #[arg(long, default_value_t = 0)]
        keep_last: u32,
        /// Keep the newest of each of the last N hours.
        #[arg(long, default_value_t = 0)]
        keep_hourly: u32,
        /// Keep the newest of each of the last N days.
        #[arg(long, default_value_t = 0)]
        keep_daily: u32,
        /// Keep the newest of each of the last N ISO weeks.
        #[arg(long, default_value_t = 0)]
        keep_weekly: u32,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Delete the chunks no backup references from a store (system admins).
    Gc {
        /// The backup store's name.
        #[arg(long)]
        store: String,
        /// Keep unreferenced chunks younger than this, seconds.
        #[arg(long, default_value_t = 86_400)]
        grace_s: u64,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Add a directory backup store (system admins): a path under the hosts' --backup-root.
    StoreCreate {
        /// The store's name.
        name: String,
        /// The directory (shared by the hosts).
        #[arg(long)]
        dir: String,
        /// Name chunks by SHA-256 instead of BLAKE3.
        #[arg(long)]
        sha256: bool,
        /// Content-defined chunking instead of fixed 4 MiB chunks.
        #[arg(long)]
        cdc: bool,
        /// A file holding the 32-byte encryption key as 64 hex digits.
        #[arg(long)]
        key_file: Option<std::path::PathBuf>,
    },
    /// The backup stores (secrets redacted).
    StoreList,
}

impl Columns for Backup {
    fn headers(wide: bool) -> Vec<&'static str> {
        let mut h = vec![
            "id", "vm", "store", "state", "read", "stored", "damaged", "created",
        ];
        if wide {
            h.extend(["previous", "host", "full_read", "memory"]);
        }
        h
    }
    fn cells(&self, wide: bool) -> Vec<String> {
        let r = self.report.as_ref();
        let mut c = vec![
            self.id.clone(),
            self.vm_name.clone(),
            self.store.clone(),
            format!("{:?}", self.state).to_lowercase(),
            r.map_or("-".into(), |r| mib(r.bytes_read)),
            r.map_or("-".into(), |r| mib(r.bytes_stored)),
            if self.damaged { "yes" } else { "no" }.into(),
            dates::ago(self.created_at_ms),
        ];
        if wide {
            c.extend([
                output::or_dash(self.previous.clone()),
                output::or_dash(self.host.clone()),
                r.map_or("-".into(), |r| {
                    let disk_read_whole =
                        |f: &FileReport| f.full_read && f.name.starts_with("disk");
                    r.files.iter().any(disk_read_whole).to_string()
                }),
                self.memory.to_string(),
            ]);
        }
        c
    }
}

impl Columns for BackupStore {
    fn headers(_wide: bool) -> Vec<&'static str> {
        vec!["name", "location", "hash", "chunking", "encrypted"]
    }
    fn cells(&self, _wide: bool) -> Vec<String> {
        vec![
            self.name.clone(),
            match &self.location {
                StoreLocation::Dir { path } => format!("dir:{path}"),
                StoreLocation::S3 { bucket, .. } => format!("s3:{bucket}"),
            },
            format!("{:?}", self.hash).to_lowercase(),
            format!("{:?}", self.chunking).to_lowercase(),
            self.encryption_key.is_some().to_string(),
        ]
    }
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
}

/// Follows `op` (unless `--no-wait`) and sums up what it did.
async fn follow(
    api: &ControllerClient,
    op: Operation,
    w: WaitArgs,
    f: Format,
) -> anyhow::Result<()> {
    if w.no_wait && !w.wait {
        print!("{}", output::one(f, &op)?);
        return Ok(());
    }
    let done = progress::follow(api, op, f).await?;
    if done.state != OpState::Succeeded {
        anyhow::bail!("{} {}: {}", done.kind, done.target, done.message);
    }
    if !f.is_table() {
        print!("{}", output::data(f, &done.result)?);
        return Ok(());
    }
    let r = done.result.clone();
    let line = match done.kind.as_str() {
        "backup" => {
            let b: Backup = serde_json::from_value(r)?;
            let rep = b.report.context("a completed backup without its report")?;
            let disks = rep.files.iter().filter(|f| f.name.starts_with("disk"));
            let mut how = match disks.clone().find(|f| f.full_read) {
                Some(f) => format!(
                    "full read ({})",
                    f.full_read_reason.as_deref().unwrap_or("asked")
                ),
                None if disks.count() == 0 => "no disks".into(),
                None => format!("incremental on {}", b.previous.as_deref().unwrap_or("-")),
            };
            if b.memory {
                how += ", with the guest's memory";
            }
            format!(
                "backup {} of {}: read {}, stored {}, {how}, guest paused {:.1} ms",
                b.id,
                b.vm_name,
                mib(rep.bytes_read),
                mib(rep.bytes_stored),
                rep.paused_ms
            )
        }
        "restore" => {
            let vm: Vm = serde_json::from_value(r)?;
            format!(
                "restored as VM {} ({}) on host {}",
                vm.id,
                vm.spec.name,
                vm.host.as_deref().unwrap_or("-")
            )
        }
        "backup.verify" => {
            let v: nova_controller_api::VerifyReport = serde_json::from_value(r)?;
            if v.damaged.is_empty() {
                format!(
                    "{}: {} chunks checked, none damaged",
                    v.backup_id, v.chunks_checked
                )
            } else {
                format!(
                    "{}: {} chunks checked, {} DAMAGED: {}",
                    v.backup_id,
                    v.chunks_checked,
                    v.damaged.len(),
                    v.damaged
                        .iter()
                        .map(|d| format!("{} ({})", d.chunk, d.reason))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        }
        "backup.gc" => {
            let g: GcReport = serde_json::from_value(r)?;
            format!(
                "{} chunks referenced, {} removed ({}), {} kept in the grace period",
                g.referenced,
                g.removed,
                mib(g.removed_bytes),
                g.kept_in_grace
            )
        }
        _ => {
            let p: PruneResult = serde_json::from_value(r)?;
            format!("deleted: {}; kept: {}", list(&p.deleted), list(&p.kept))
        }
    };
    println!("{line}");
    Ok(())
}

fn list(v: &[String]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// Runs one `backup` command.
pub async fn run(api: &ControllerClient, c: BackupCmd, f: Format) -> anyhow::Result<()> {
    match c {
        BackupCmd::Create {
            vm,
            store,
            full,
            memory,
            wait,
        } => {
            let body = BackupBody {
                store,
                full,
                memory,
            };
            let op = api.backup_vm(&vm, &body).await?;
            follow(api, op, wait, f).await
        }
        BackupCmd::List { vm } => {
            print!(
                "{}",
                output::list(f, &api.backups(vm.as_deref()).await?.items)?
            );
            Ok(())
        }
        BackupCmd::Get { id } => {
            print!("{}", output::one(f, &api.backup(&id).await?)?);
            Ok(())
        }
        BackupCmd::Restore {
            id,
            name,
            host,
            no_start,
            wait,
        } => {
            let body = RestoreBody {
                name,
                host,
                start: !no_start,
            };
            let op = api.restore_backup(&id, &body).await?;
            follow(api, op, wait, f).await
        }
        BackupCmd::Verify { id, wait } => {
            let op = api.verify_backup(&id).await?;
            follow(api, op, wait, f).await
        }
        BackupCmd::Delete { id, wait } => {
            let op = api.delete_backup(&id).await?;
            follow(api, op, wait, f).await
        }
        BackupCmd::Prune {
            vm,
            keep_last,
            keep_hourly,
            keep_daily,
            keep_weekly,
            wait,
        } => {
            let retention = BackupRetention {
                keep_last,
                keep_hourly,
                keep_daily,
                keep_weekly,
            };
            let op = api.prune_backups(&vm, &PruneBody { retention }).await?;
            follow(api, op, wait, f).await
        }
        BackupCmd::Gc {
            store,
            grace_s,
            wait,
        } => {
            let op = api.gc_backup_store(&store, &GcBody { grace_s }).await?;
            follow(api, op, wait, f).await
        }
        BackupCmd::StoreCreate {
            name,
            dir,
            sha256,
            cdc,
            key_file,
        } => {
            let encryption_key = match key_file {
                Some(p) => Some(
                    std::fs::read_to_string(&p)
                        .with_context(|| format!("--key-file {}", p.display()))?
                        .trim()
                        .to_string(),
                ),
                None => None,
            };
            let s = BackupStore {
                name,
                location: StoreLocation::Dir { path: dir },
                hash: if sha256 {
                    ChunkHash::Sha256
                } else {
                    ChunkHash::Blake3
                },
                chunking: if cdc {
                    ChunkingKind::Cdc
                } else {
                    ChunkingKind::Fixed
                },
                encryption_key,
                created_at_ms: 0,
            };
            print!("{}", output::one(f, &api.create_backup_store(&s).await?)?);
            Ok(())
        }
        BackupCmd::StoreList => {
            print!("{}", output::list(f, &api.backup_stores().await?)?);
            Ok(())
        }
    }
}
