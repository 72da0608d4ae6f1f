//! Cloud hosts: the `[cloud]` section of the config file ([`CloudOptions`]), the
//! provider the controller launches hosts through ([`fleet`], a `nova_cloud::Fleet`), the
//! burst policy in the store ([`policy`]) and bursting itself ([`burst`]): a VM that
//! fits on no host may launch a cloud host that boots the host image and joins with a
//! single-use join token from its user-data; an idle burst host is cordoned,
//! terminated and forgotten. The provider adapters (EC2) live in `nova_cloud`.

pub mod burst;
pub mod policy;

use std::path::PathBuf;
use std::sync::Arc;

use nova_cloud::ec2::{Ec2, Ec2Config};
use nova_cloud::{CloudError, Fleet, Provider};
use serde::Deserialize;

use crate::model::{BurstHost, BurstPolicy};
use crate::store::Object;

/// `[cloud]` in the config file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudOptions {
    /// This controller's URL as cloud hosts reach it (what their hostd registers with).
    pub controller_url: String,
    /// PEM file of the CA of the controller's certificate, handed to cloud hosts in
    /// their user-data (when the controller serves https with a private CA).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The value of the `nova:cluster` tag on every machine this cluster launches (so
    /// that clusters sharing an account never touch each other's) [default: nova].
    #[serde(default)]
    pub cluster: Option<String>,
    /// The burst policy in force until one is set through the API.
    #[serde(default)]
    pub burst: Option<BurstPolicy>,
    /// Amazon EC2 (or an EC2-compatible endpoint).
    #[serde(default)]
    pub ec2: Option<Ec2Config>,
}

impl CloudOptions {
    /// Checks every value; an error names the key (`cloud.ec2.ami`).
    pub fn validate(&self) -> Result<(), String> {
        let u = &self.controller_url;
        if !(u.starts_with("http://") || u.starts_with("https://"))
            || u.len() > 512
            || u.contains(char::is_whitespace)
        {
            return Err("cloud.controller_url: must be http(s)://HOST:PORT".into());
        }
        if let Some(c) = &self.cluster {
            let ok = !c.is_empty()
                && c.len() <= 64
                && c.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
            if !ok {
                return Err("cloud.cluster: 1-64 letters, digits, - _ .".into());
            }
        }
        if let Some(p) = &self.burst {
            p.validate()
                .map_err(|e| format!("cloud.burst.{}: {}", e.field, e.problem))?;
        }
        match &self.ec2 {
            Some(e) => e.validate().map_err(|e| match e {
                CloudError::Config { field, problem } => format!("cloud.{field}: {problem}"),
                e => e.to_string(),
            })?,
            None => return Err("cloud.ec2: a provider is required (the only one so far)".into()),
        }
        Ok(())
    }
}

/// The fleet `o` configures (no request made yet).
pub fn fleet(o: &CloudOptions) -> Result<Fleet, CloudError> {
    let bad = |field: &str, problem: String| CloudError::Config {
        field: field.into(),
        problem,
    };
    o.validate().map_err(|e| {
        let (field, problem) = e.split_once(": ").unwrap_or(("cloud", &e));
        bad(field, problem.to_string())
    })?;
    let ca_pem = match &o.ca_file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .map_err(|e| bad("cloud.ca_file", format!("{}: {e}", p.display())))?,
        ),
        None => None,
    };
    let ec2 = o.ec2.clone().unwrap_or_default();
    let provider: Arc<dyn Provider> = Arc::new(Ec2::new(ec2).map_err(|e| match e {
        CloudError::Config { field, problem } => bad(&format!("cloud.{field}"), problem),
        e => e,
    })?);
    Ok(Fleet {
        provider,
        controller_url: o.controller_url.clone(),
        ca_pem,
        cluster: o.cluster.clone().unwrap_or_else(|| "nova".into()),
    })
}

/// Burst hosts are kept by their id.
impl Object for BurstHost {
    const PREFIX: &'static str = "bursts/";
    fn key(&self) -> &str {
        &self.id
    }
}

/// The tag naming the cluster a machine belongs to.
pub const TAG_CLUSTER: &str = "nova:cluster";
/// The tag naming a machine's burst record.
pub const TAG_BURST: &str = "nova:burst";

#[cfg(test)]
mod tests {
    use super::*;

    fn options(text: &str) -> CloudOptions {
        toml::from_str(text).unwrap()
    }

    const GOOD: &str = "controller_url = \"https://c:7443\"\n[ec2]\nregion = \"eu-west-1\"\n\
                        ami = \"ami-0abc\"\ninstance_type = \"m5.metal\"\n";

    #[test]
    fn a_bad_cloud_value_is_named_by_its_key() {
        options(GOOD).validate().unwrap();
        let e = options(&GOOD.replace("https://c:7443", "c:7443"))
            .validate()
            .unwrap_err();
        assert!(e.starts_with("cloud.controller_url:"), "{e}");
        let e = options(&GOOD.replace("ami-0abc", "debian"))
            .validate()
            .unwrap_err();
        assert!(e.starts_with("cloud.ec2.ami:"), "{e}");
        let e = options("controller_url = \"http://c:1\"\n")
            .validate()
            .unwrap_err();
        assert!(e.starts_with("cloud.ec2:"), "{e}");
        let burst = format!("{GOOD}[burst]\nenabled = true\nmax_hosts = 1\ncooldown_s = 0\nidle_s = 0\njoin_timeout_s = 60\n");
        let e = options(&burst).validate().unwrap_err();
        assert!(e.starts_with("cloud.burst.idle_s:"), "{e}");
        assert!(
            toml::from_str::<CloudOptions>("controller_url = \"x\"\nregion = \"r\"\n").is_err()
        );
    }
}
