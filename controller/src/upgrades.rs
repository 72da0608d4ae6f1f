//! Host image upgrades, the controller's side: the versions it holds (its
//! `--system-images` directory, `DIR/VERSION/{vmlinuz,initrd.img}`) and the upgrade
//! of one host: stream the version's kernel and initramfs to the host's hostd (which
//! stages them), then ask it to write them into its inactive slot and reboot into it
//! once. Whether the new system stays is the host's business (it becomes the default
//! only once its hostd registers again; otherwise the host falls back); the host's
//! `image_version`, reported in every heartbeat, tells which happened. Draining
//! before is the caller's choice (`novactl cluster upgrade` drains each host first).
//! A version's `signature.json` (`novactl host-image sign`) goes to the host with the
//! upgrade: the host, not the controller, decides which signing keys it trusts.

use std::path::{Path, PathBuf};

use nova_controller_api::{
    HostUpgrade, HostUpgradeEvent, HostUpgradeRequest, ImageSignature, SystemImage, SIGNATURE_FILE,
};
use nova_hostd_api::{validate_version, SystemUpgradeRequest};
use nova_http::FieldError;
use sha2::{Digest, Sha256};

use crate::context::Context;
use crate::error::{Error, Result};
use crate::model::{Host, HostState, SYSTEM_TENANT};
use crate::store::Objects;

const KERNEL: &str = "vmlinuz";
const INITRD: &str = "initrd.img";

fn dir_of(ctx: &Context) -> Result<&Path> {
    ctx.settings.system_images.as_deref().ok_or_else(|| {
        Error::conflict(
            "this controller holds no host image versions: start it with --system-images DIR",
        )
    })
}

/// The versions in `dir`, newest first (directories without both files are skipped).
pub fn list(dir: &Path) -> Result<Vec<SystemImage>> {
    let rd = std::fs::read_dir(dir)
        .map_err(|e| Error::conflict(format!("--system-images {}: {e}", dir.display())))?;
    let mut out = vec![];
    for e in rd.flatten() {
        let version = e.file_name().to_string_lossy().into_owned();
        if validate_version("image", &version).is_err() {
            continue;
        }
        let (Ok(k), Ok(i), Ok(d)) = (
            std::fs::metadata(e.path().join(KERNEL)),
            std::fs::metadata(e.path().join(INITRD)),
            e.metadata(),
        ) else {
            continue;
        };
        let modified_ms = d
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |t| t.as_millis() as u64);
        let signed_by = signature(&e.path()).ok().flatten().map(|s| s.key);
        out.push(SystemImage {
            version,
            kernel_bytes: k.len(),
            initrd_bytes: i.len(),
            modified_ms,
            signed_by,
        });
    }
    out.sort_by(|a, b| (b.modified_ms, &b.version).cmp(&(a.modified_ms, &a.version)));
    Ok(out)
}

/// The signature in a version's directory, if it has one; an unreadable or
/// malformed one is an error naming the file.
fn signature(vdir: &Path) -> Result<Option<ImageSignature>> {
    let p = vdir.join(SIGNATURE_FILE);
    let text = match std::fs::read(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::conflict(format!("reading {}: {e}", p.display()))),
    };
    let sig: ImageSignature = serde_json::from_slice(&text)
        .map_err(|e| Error::conflict(format!("{}: {e}", p.display())))?;
    sig.validate()
        .map_err(|e| Error::conflict(format!("{}: {e}", p.display())))?;
    Ok(Some(sig))
}

/// The versions this controller holds.
pub fn images(ctx: &Context) -> Result<Vec<SystemImage>> {
    list(dir_of(ctx)?)
}

/// The version `wanted` names (or the newest) and its directory.
fn pick(dir: &Path, wanted: Option<&str>) -> Result<(String, PathBuf)> {
    let all = list(dir)?;
    let v = match wanted {
        Some(v) => {
            validate_version("image", v)?;
            all.iter()
                .find(|i| i.version == v)
                .ok_or_else(|| {
                    FieldError::new(
                        "image",
                        format!("no host image version '{v}' in --system-images"),
                    )
                })?
                .version
                .clone()
        }
        None => all
            .first()
            .ok_or_else(|| Error::conflict("--system-images holds no version"))?
            .version
            .clone(),
    };
    let d = dir.join(&v);
    Ok((v, d))
}

fn sha256_file(p: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(p)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(hex::encode(h.finalize()));
        }
        h.update(&buf[..n]);
    }
}

/// Installs a version on host `id` (drain it first): checks what can be checked at
/// once, then streams the files and asks for the upgrade in the background (minutes
/// on a slow link); the host reboots into it. A failure is logged and published as
/// `host.upgrade_failed`.
/// Host `id`, which runs from the host image (it reports an image version); a host
/// that does not is a conflict, saying what to do `instead`.
pub async fn imaged_host(ctx: &Context, id: &str, instead: &str) -> Result<Host> {
    let host = ctx
        .store
        .read::<Host>(id)
        .await?
        .ok_or(Error::NotFound("host"))?;
    if host.image_version.is_none() {
        return Err(Error::conflict(format!(
            "host {id} does not run from the host image: {instead}"
        )));
    }
    Ok(host)
}

pub async fn upgrade(ctx: &Context, id: &str, req: &HostUpgradeRequest) -> Result<HostUpgrade> {
    let dir = dir_of(ctx)?.to_path_buf();
    let (version, vdir) = pick(&dir, req.image.as_deref())?;
    let host = imaged_host(ctx, id, "it has no image to upgrade").await?;
    if host.state != HostState::Ready {
        return Err(Error::conflict(format!(
            "host {id} is {:?}: only a Ready host is upgraded",
            host.state
        )));
    }
    let hostd = ctx.hostd(&host)?;
    let answer = HostUpgrade {
        host: id.to_string(),
        from_version: host.image_version.clone(),
        to_version: version.clone(),
    };
    let sig = signature(&vdir)?;
    let ctx = ctx.clone();
    let id = id.to_string();
    tokio::spawn(async move {
        let (kind, data) = match install(&hostd, &id, &version, &vdir, sig).await {
            Ok(slot) => {
                tracing::info!(host = %id, version, slot, "host is rebooting into the new version");
                let data = HostUpgradeEvent {
                    version,
                    slot: Some(slot),
                    error: None,
                };
                ("host.upgrading", data)
            }
            Err(e) => {
                tracing::error!(host = %id, version, "upgrade: {e}");
                let data = HostUpgradeEvent {
                    version,
                    slot: None,
                    error: Some(e.to_string()),
                };
                ("host.upgrade_failed", data)
            }
        };
        ctx.events
            .publish(kind, SYSTEM_TENANT, &id, crate::events::data(&data))
            .await;
    });
    Ok(answer)
}

/// Streams the version's files to the host and asks it to write them to its inactive
/// slot; the slot written.
async fn install(
    hostd: &nova_hostd_api::HostdClient,
    id: &str,
    version: &str,
    vdir: &Path,
    signature: Option<ImageSignature>,
) -> Result<String> {
    let (kernel, initrd) = (vdir.join(KERNEL), vdir.join(INITRD));
    let (k, i) = (kernel.clone(), initrd.clone());
    let (ks, is) = tokio::task::spawn_blocking(move || {
        Ok::<_, std::io::Error>((sha256_file(&k)?, sha256_file(&i)?))
    })
    .await
    .map_err(|e| Error::conflict(format!("hashing the image: {e}")))?
    .map_err(|e| Error::conflict(format!("reading {}: {e}", vdir.display())))?;
    tracing::info!(
        host = id,
        version,
        "upgrading: staging the kernel and initramfs"
    );
    for (file, path, want) in [("kernel", &kernel, &ks), ("initrd", &initrd, &is)] {
        let staged = hostd.stage_system_file(file, path).await?;
        if &staged.sha256 != want {
            return Err(Error::conflict(format!(
                "host {id} staged {file} with SHA-256 {}, not {want}",
                staged.sha256
            )));
        }
    }
    let started = hostd
        .upgrade_system(&SystemUpgradeRequest {
            version: version.to_string(),
            kernel_sha256: ks,
            initrd_sha256: is,
            signature,
        })
        .await?;
    Ok(started.slot)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_list_newest_first_and_skip_incomplete_ones() {
        let dir = std::env::temp_dir().join(format!("nova-sysimg-{}", std::process::id()));
        for (v, files) in [("1.0", 2), ("2.0", 2), ("half", 1), ("..bad", 2)] {
            let d = dir.join(v);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join(KERNEL), b"k").unwrap();
            if files == 2 {
                std::fs::write(d.join(INITRD), b"ii").unwrap();
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // Touch 2.0 last: it is the newest.
        let l = list(&dir).unwrap();
        let names: Vec<&str> = l.iter().map(|i| i.version.as_str()).collect();
        assert_eq!(names, vec!["2.0", "1.0"]);
        assert_eq!(l[0].initrd_bytes, 2);
        assert_eq!(pick(&dir, None).unwrap().0, "2.0");
        let e = pick(&dir, Some("3.0")).unwrap_err();
        assert!(e.to_string().contains("no host image version '3.0'"), "{e}");
        let e = pick(&dir, Some("../x")).unwrap_err();
        assert!(
            matches!(e, Error::Invalid(ref f) if f.field == "image"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
