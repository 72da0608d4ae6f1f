//! `novactl image upload|import|list`: the hosts' content-addressed image caches. A VM
//! names an image by the `sha256:` id these print (`vm create --kernel sha256:...`).

use std::path::PathBuf;

use clap::Subcommand;
use nova_controller_api::{ClusterImage, ControllerClient};

use crate::output::{self, Columns, Format};

#[derive(Subcommand)]
pub enum ImageCmd {
    /// Upload a file into every ready host's cache; prints its sha256: id.
    Upload {
        /// The image file (kernel, initrd or disk image).
        file: PathBuf,
    },
    /// Have every ready host import one of its own files (system admins; each host
    /// allows only paths under its --image-root).
    Import {
        /// The path on the hosts.
        path: String,
    },
    /// The images of every ready host's cache.
    #[command(visible_alias = "ls")]
    List,
}

impl Columns for ClusterImage {
    fn headers(_wide: bool) -> Vec<&'static str> {
        vec!["id", "size", "hosts"]
    }
    fn cells(&self, _wide: bool) -> Vec<String> {
        vec![
            self.id.clone(),
            format!("{} MiB", self.size_bytes.div_ceil(1 << 20)),
            self.hosts.join(","),
        ]
    }
}

pub async fn run(api: &ControllerClient, c: ImageCmd, f: Format) -> anyhow::Result<()> {
    match c {
        ImageCmd::Upload { file } => {
            anyhow::ensure!(file.is_file(), "{}: not a file", file.display());
            print!("{}", output::one(f, &api.upload_image(&file).await?)?);
        }
        ImageCmd::Import { path } => {
            print!("{}", output::one(f, &api.import_image(&path).await?)?);
        }
        ImageCmd::List => {
            print!("{}", output::list(f, &api.images().await?.images)?);
        }
    }
    Ok(())
}
