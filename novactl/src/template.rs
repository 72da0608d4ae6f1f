//! `novactl template create|list|show|instantiate|default`: the template library.
//! A template version is written as JSON (the API's `NewTemplate`); instantiation
//! takes `--param name=value` (repeat `ssh_keys=` for several keys).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use nova_controller_api::{
    ControllerClient, Instantiate, InstantiateMode, NewTemplate, ParamValue, Template,
};

use crate::output::{self, Columns, Format};

#[derive(Subcommand)]
pub enum TemplateCmd {
    /// Add a template, or the next version of one, from a JSON file.
    #[command(after_long_help = "Examples:
  novactl template create --file web.json
  # web.json: {\"name\": \"web\", \"parameters\": [{\"name\": \"hostname\", \"kind\": \"hostname\",
  #   \"required\": true}], \"source\": {\"snapshot\": \"snap-1a2b3c\"}}")]
    Create {
        /// The template version (NewTemplate) as JSON.
        #[arg(long, short)]
        file: PathBuf,
    },
    /// The templates you may use (yours and the system's).
    #[command(visible_alias = "ls")]
    List,
    /// One template (`name`, every version) or one version (`name@version`).
    Show {
        /// `name` or `name@version`.
        reference: String,
    },
    /// Make a VM from a template.
    #[command(after_long_help = "Examples:
  novactl template instantiate web --name web-7 --param hostname=web-7
  novactl template instantiate web@2 --name web-8 --param hostname=web-8 --mode cold")]
    Instantiate {
        /// `name` (its default version) or `name@version`.
        reference: String,
        /// The new VM's name.
        #[arg(long)]
        name: String,
        /// A parameter, `name=value`; numbers are integers.
        #[arg(long = "param", value_name = "NAME=VALUE")]
        params: Vec<String>,
        /// `clone` (from the golden snapshot) or `cold` (boot).
        #[arg(long, value_parser = ["clone", "cold"])]
        mode: Option<String>,
        /// The host a clone runs on.
        #[arg(long)]
        host: Option<String>,
    },
    /// Make a version the default.
    Default {
        /// The template's name.
        name: String,
        /// The version that `name` alone then means.
        version: u32,
    },
}

impl Columns for Template {
    fn headers(_wide: bool) -> Vec<&'static str> {
        vec!["name", "tenant", "default", "versions", "source"]
    }
    fn cells(&self, _wide: bool) -> Vec<String> {
        let source = self
            .versions
            .iter()
            .find(|v| v.version == self.default_version)
            .map(|v| match &v.source {
                nova_controller_api::TemplateSource::Image(_) => "image".to_string(),
                nova_controller_api::TemplateSource::Snapshot(s) => format!("snapshot {s}"),
            })
            .unwrap_or_default();
        vec![
            self.name.clone(),
            self.tenant.clone(),
            self.default_version.to_string(),
            self.versions.len().to_string(),
            source,
        ]
    }
}

/// `--param` values: `ssh_keys` collects a list, digits are integers, the rest text.
pub fn parse_params(raw: &[String]) -> anyhow::Result<BTreeMap<String, ParamValue>> {
    let mut out = BTreeMap::new();
    for p in raw {
        let (k, v) = p
            .split_once('=')
            .with_context(|| format!("--param {p:?}: expected NAME=VALUE"))?;
        if k == "ssh_keys" {
            let e = out
                .entry(k.to_string())
                .or_insert_with(|| ParamValue::List(vec![]));
            if let ParamValue::List(l) = e {
                l.push(v.to_string());
            }
        } else if let Ok(n) = v.parse::<u64>() {
            out.insert(k.to_string(), ParamValue::Integer(n));
        } else {
            out.insert(k.to_string(), ParamValue::Text(v.to_string()));
        }
    }
    Ok(out)
}

pub async fn run(api: &ControllerClient, c: TemplateCmd, f: Format) -> anyhow::Result<()> {
    let text = match c {
        TemplateCmd::Create { file } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let body: NewTemplate = serde_json::from_slice(&bytes)
                .with_context(|| format!("{}: not a template version", file.display()))?;
            output::one(f, &api.create_template(&body).await?)?
        }
        TemplateCmd::List => output::list(f, &api.templates().await?)?,
        TemplateCmd::Show { reference } => output::one(f, &api.template(&reference).await?)?,
        TemplateCmd::Instantiate {
            reference,
            name,
            params,
            mode,
            host,
        } => {
            let body = Instantiate {
                name,
                parameters: parse_params(&params)?,
                mode: mode.map(|m| {
                    if m == "cold" {
                        InstantiateMode::Cold
                    } else {
                        InstantiateMode::Clone
                    }
                }),
                host,
            };
            output::one(f, &api.instantiate(&reference, &body).await?)?
        }
        TemplateCmd::Default { name, version } => {
            output::one(f, &api.set_default_version(&name, version).await?)?
        }
    };
    print!("{text}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_are_integers_text_or_a_list_of_keys() {
        let p = parse_params(&[
            "vcpus=2".into(),
            "hostname=web-1".into(),
            "ssh_keys=ssh-ed25519 AAAA a".into(),
            "ssh_keys=ssh-ed25519 BBBB b".into(),
        ])
        .unwrap();
        assert_eq!(p["vcpus"], ParamValue::Integer(2));
        assert_eq!(p["hostname"], ParamValue::Text("web-1".into()));
        assert!(matches!(&p["ssh_keys"], ParamValue::List(l) if l.len() == 2));
        assert!(parse_params(&["novalue".into()]).is_err());
    }
}
