//! `novactl host-image keygen|pubkey|sign`: the operator's side of signed host images,
//! offline (no controller). A signing key is an Ed25519 private key in a PEM file
//! (PKCS#8, as `openssl genpkey -algorithm ed25519` also writes); `sign` writes
//! `signature.json` into a version's directory (`vmlinuz`, `initrd.img`), an Ed25519
//! signature over the version and both files' SHA-256s. Hosts started with
//! `--trusted-image-key` (nova-init: `image_keys`) install only images so signed.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Subcommand;
use nova_controller_api::{system_image_manifest, ImageSignature, SIGNATURE_FILE};
use ring::signature::{Ed25519KeyPair, KeyPair};
use sha2::{Digest, Sha256};

#[derive(Subcommand)]
pub enum HostImageCmd {
    /// Make a new signing key (a PEM file only you can read); prints its public key,
    /// the value hosts trust (`--trusted-image-key`, nova-init's `image_keys`).
    #[command(after_long_help = "Examples:
  novactl host-image keygen --out ~/.nova/image-2026.key")]
    Keygen {
        /// Where to write the private key (never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the public key of a signing key.
    Pubkey {
        /// The private key's PEM file.
        #[arg(long)]
        key: PathBuf,
    },
    /// Sign a host image version: DIR holds vmlinuz and initrd.img (a directory of the
    /// controller's --system-images, named after the version); writes DIR/signature.json.
    #[command(after_long_help = "Examples:
  novactl host-image sign --key ~/.nova/image-2026.key /srv/nova/system-images/0.2.0")]
    Sign {
        /// The private key's PEM file.
        #[arg(long)]
        key: PathBuf,
        /// The version signed [default: DIR's name].
        #[arg(long)]
        version: Option<String>,
        /// The version's directory (vmlinuz, initrd.img); signature.json goes there.
        dir: PathBuf,
    },
}

pub fn run(cmd: HostImageCmd) -> anyhow::Result<()> {
    match cmd {
        HostImageCmd::Keygen { out } => {
            let rng = ring::rand::SystemRandom::new();
            let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng)
                .map_err(|_| anyhow::anyhow!("generating a key failed"))?;
            let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
                .map_err(|_| anyhow::anyhow!("the generated key does not parse"))?;
            let text = pem::encode(&pem::Pem::new("PRIVATE KEY", pkcs8.as_ref().to_vec()));
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&out)
                .with_context(|| format!("--out {}", out.display()))?;
            f.write_all(text.as_bytes())
                .and_then(|_| f.sync_all())
                .with_context(|| format!("writing {}", out.display()))?;
            println!("{}", hex::encode(pair.public_key().as_ref()));
        }
        HostImageCmd::Pubkey { key } => {
            println!("{}", hex::encode(load(&key)?.public_key().as_ref()));
        }
        HostImageCmd::Sign { key, version, dir } => {
            let pair = load(&key)?;
            let version = match version {
                Some(v) => v,
                None => dir
                    .canonicalize()
                    .with_context(|| format!("{}", dir.display()))?
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            };
            nova_controller_api::validate_version("version", &version)
                .map_err(|e| anyhow::anyhow!("--version (or DIR's name): {}", e.problem))?;
            let k = sha256_file(&dir.join("vmlinuz"))?;
            let i = sha256_file(&dir.join("initrd.img"))?;
            let manifest = system_image_manifest(&version, &k, &i);
            let sig = ImageSignature {
                key: hex::encode(pair.public_key().as_ref()),
                signature: hex::encode(pair.sign(manifest.as_bytes()).as_ref()),
            };
            let out = dir.join(SIGNATURE_FILE);
            let body = serde_json::to_vec_pretty(&sig)?;
            std::fs::write(&out, body).with_context(|| format!("writing {}", out.display()))?;
            eprintln!("signed {version} with key {}: {}", sig.key, out.display());
        }
    }
    Ok(())
}

/// Reads a PEM PKCS#8 Ed25519 private key.
fn load(path: &Path) -> anyhow::Result<Ed25519KeyPair> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("--key {}", path.display()))?;
    let p = pem::parse(&text).with_context(|| format!("--key {}: not PEM", path.display()))?;
    if p.tag() != "PRIVATE KEY" {
        bail!(
            "--key {}: a {} block, not a PRIVATE KEY",
            path.display(),
            p.tag()
        );
    }
    Ed25519KeyPair::from_pkcs8_maybe_unchecked(p.contents())
        .map_err(|e| anyhow::anyhow!("--key {}: not an Ed25519 key ({e})", path.display()))
}

fn sha256_file(p: &Path) -> anyhow::Result<String> {
    let mut f = std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", p.display()))?;
        if n == 0 {
            return Ok(hex::encode(h.finalize()));
        }
        h.update(&buf[..n]);
    }
}
