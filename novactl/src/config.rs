//! Which controller to talk to and as whom: the config file of contexts
//! (`$NOVA_CONFIG`, else `$XDG_CONFIG_HOME/nova/config.toml`, else
//! `~/.config/nova/config.toml`), the `NOVA_*` environment and the flags, in that
//! order of strength; and `novactl config ...`, which edits the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::parser::ValueSource;
use clap::{ArgMatches, Subcommand};
use nova_http::ClientOptions;
use serde::{Deserialize, Serialize};

use crate::exit::Failure;
use crate::output::{self, Columns, Format};
use crate::Global;

/// The controller novactl talks to when nothing says otherwise.
pub const DEFAULT_URL: &str = "http://127.0.0.1:7070";

/// The config file.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ConfigFile {
    /// The context used when `--context`/`NOVA_CONTEXT` names none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_context: Option<String>,
    #[serde(default)]
    pub contexts: BTreeMap<String, Context>,
}

/// One controller and the credentials for it.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Context {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The API token itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// A file holding the token (read at each call; relative to the config file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// PEM file of the CA that signs an `https://` controller's certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

/// What a command connects with, once flags, environment and file are weighed.
#[derive(Debug)]
pub struct Target {
    pub url: String,
    pub token: Option<String>,
    pub opts: ClientOptions,
}

/// The config file's path: `--config`/`NOVA_CONFIG`, else the XDG location.
pub fn path(g: &Global) -> PathBuf {
    if let Some(p) = &g.config {
        return p.clone();
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from(".config"));
    base.join("nova/config.toml")
}

impl ConfigFile {
    /// Reads `path`; an absent file is an empty config.
    pub fn load(path: &Path) -> anyhow::Result<ConfigFile> {
        match std::fs::read_to_string(path) {
            Ok(s) => toml::from_str(&s).with_context(|| format!("config file {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ConfigFile::default()),
            Err(e) => Err(e).with_context(|| format!("config file {}", path.display())),
        }
    }

    /// Writes it to `path` (created with its directory, mode 0600: it may hold tokens).
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let what = || format!("config file {}", path.display());
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(what)?;
        }
        let tmp = path.with_extension("toml.tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(what)?;
        f.write_all(toml::to_string_pretty(self)?.as_bytes())
            .and_then(|_| f.sync_all())
            .with_context(what)?;
        std::fs::rename(&tmp, path).with_context(what)
    }

    /// The context `name`, or a not-found error naming the file.
    fn get(&self, name: &str, path: &Path) -> anyhow::Result<&Context> {
        self.contexts.get(name).ok_or_else(|| {
            Failure::NotFound(format!("no context {name:?} in {}", path.display())).into()
        })
    }
}

/// How strongly a value was given: the flag beats the environment beats the file.
fn strength(m: &ArgMatches, id: &str) -> u8 {
    match m.value_source(id) {
        Some(ValueSource::CommandLine) => 3,
        Some(ValueSource::EnvVariable) => 2,
        _ => 0,
    }
}

/// A path from the config file: `~/` is the home directory, a relative path is
/// relative to the file's directory.
fn from_file(p: &Path, config: &Path) -> PathBuf {
    if let (Ok(rest), Some(home)) = (p.strip_prefix("~"), std::env::var_os("HOME")) {
        return PathBuf::from(home).join(rest);
    }
    match config.parent() {
        Some(dir) if p.is_relative() => dir.join(p),
        _ => p.to_path_buf(),
    }
}

fn read_token(file: &Path) -> anyhow::Result<String> {
    let t =
        std::fs::read_to_string(file).with_context(|| format!("token file {}", file.display()))?;
    Ok(t.trim().to_string())
}

/// The controller and credentials of this run: each of URL, token and CA from the
/// strongest of flag, environment and the selected context.
pub fn resolve(g: &Global, m: &ArgMatches) -> anyhow::Result<Target> {
    let path = path(g);
    let file = ConfigFile::load(&path)?;
    let name = g.context.clone().or(file.current_context.clone());
    let ctx = match &name {
        Some(n) => file.get(n, &path)?.clone(),
        None => Context::default(),
    };
    let url = g
        .url
        .clone()
        .or(ctx.url.clone())
        .unwrap_or_else(|| DEFAULT_URL.into());
    // The inline token and the token file compete as one setting.
    let (tok, tok_file) = (strength(m, "token"), strength(m, "token_file"));
    let token = match (&g.token, &g.token_file) {
        (Some(t), _) if tok >= tok_file => Some(t.clone()),
        (_, Some(f)) => Some(read_token(f)?),
        (Some(t), None) => Some(t.clone()),
        (None, None) => match (ctx.token, ctx.token_file) {
            (Some(t), _) => Some(t),
            (None, Some(f)) => Some(read_token(&from_file(&f, &path))?),
            (None, None) => None,
        },
    };
    let ca_file = g
        .ca_file
        .clone()
        .or(ctx.ca_file.map(|f| from_file(&f, &path)));
    Ok(Target {
        url,
        token: token.filter(|t| !t.is_empty()),
        opts: ClientOptions {
            ca_file,
            ..ClientOptions::default()
        },
    })
}

/// `novactl config ...`: the contexts of the config file.
#[derive(Subcommand)]
pub enum ConfigCmd {
    /// List the contexts (the current one is marked with *).
    #[command(name = "get-contexts")]
    GetContexts,
    /// Print the name of the current context.
    #[command(name = "current-context")]
    CurrentContext,
    /// Make NAME the context every command uses.
    #[command(name = "use-context")]
    UseContext {
        /// A context of the config file.
        name: String,
    },
    /// Remove context NAME (and, if it was the current one, the current context).
    #[command(name = "delete-context")]
    DeleteContext {
        /// A context of the config file.
        name: String,
    },
    /// Create context NAME, or change it: takes --url, --token or --token-file, and
    /// --ca-file as given on this command line (never from the environment); the
    /// context's other settings stay.
    #[command(
        name = "set-context",
        after_long_help = "Examples:
  # A lab controller over https, its token in a file, its CA's certificate:
  novactl config set-context lab --url https://ctl.lab:7070 \\
      --token-file ~/.config/nova/lab.token --ca-file /etc/nova/ca.pem
  novactl config use-context lab
  # Later, only a new token:
  novactl config set-context lab --token-file ~/.config/nova/lab-2.token"
    )]
    SetContext {
        /// The context's name.
        name: String,
        /// Make it the current context too.
        #[arg(long = "use")]
        make_current: bool,
    },
}

/// One row of `config get-contexts`.
#[derive(Serialize)]
struct ContextRow {
    current: bool,
    name: String,
    #[serde(flatten)]
    context: Context,
}

impl Columns for ContextRow {
    fn headers(_wide: bool) -> Vec<&'static str> {
        vec!["current", "name", "url", "token", "ca-file"]
    }
    fn cells(&self, _wide: bool) -> Vec<String> {
        let c = &self.context;
        // Never print a token; say where it comes from.
        let token = match (&c.token, &c.token_file) {
            (Some(_), _) => "(inline)".to_string(),
            (None, Some(f)) => f.display().to_string(),
            (None, None) => "-".into(),
        };
        vec![
            if self.current { "*" } else { "" }.into(),
            self.name.clone(),
            output::or_dash(c.url.clone()),
            token,
            output::or_dash(c.ca_file.as_ref().map(|p| p.display())),
        ]
    }
}

/// Runs a `config` command.
pub fn run(cmd: ConfigCmd, g: &Global, m: &ArgMatches, f: Format) -> anyhow::Result<()> {
    let path = path(g);
    let mut file = ConfigFile::load(&path)?;
    match cmd {
        ConfigCmd::GetContexts => {
            let rows: Vec<ContextRow> = file
                .contexts
                .iter()
                .map(|(n, c)| ContextRow {
                    current: file.current_context.as_deref() == Some(n),
                    name: n.clone(),
                    context: Context {
                        token: c.token.as_ref().map(|_| "(inline)".into()),
                        ..c.clone()
                    },
                })
                .collect();
            print!("{}", output::list(f, &rows)?);
        }
        ConfigCmd::CurrentContext => match &file.current_context {
            Some(c) => println!("{c}"),
            None => {
                return Err(
                    Failure::NotFound(format!("no current context in {}", path.display())).into(),
                )
            }
        },
        ConfigCmd::UseContext { name } => {
            file.get(&name, &path)?;
            file.current_context = Some(name.clone());
            file.save(&path)?;
            println!("Switched to context {name:?}.");
        }
        ConfigCmd::DeleteContext { name } => {
            file.get(&name, &path)?;
            file.contexts.remove(&name);
            if file.current_context.as_deref() == Some(&name) {
                file.current_context = None;
            }
            file.save(&path)?;
            println!("Context {name:?} deleted.");
        }
        ConfigCmd::SetContext { name, make_current } => {
            let given = |id: &str| m.value_source(id) == Some(ValueSource::CommandLine);
            let c = file.contexts.entry(name.clone()).or_default();
            if given("url") {
                c.url = g.url.clone();
            }
            if given("token") {
                c.token = g.token.clone();
                c.token_file = None;
            }
            if given("token_file") {
                c.token_file = g.token_file.clone().map(absolute);
                c.token = None;
            }
            if given("ca_file") {
                c.ca_file = g.ca_file.clone().map(absolute);
            }
            if make_current {
                file.current_context = Some(name.clone());
            }
            file.save(&path)?;
            println!("Context {name:?} saved in {}.", path.display());
        }
    }
    Ok(())
}

/// A path given on the command line, made absolute so the file means the same from
/// anywhere.
fn absolute(p: PathBuf) -> PathBuf {
    std::path::absolute(&p).unwrap_or(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_file_reads_and_writes_its_contexts() {
        let text = r#"
current-context = "lab"
[contexts.lab]
url = "https://ctl.lab:7070"
token-file = "lab.token"
ca-file = "~/ca.pem"
"#;
        let f: ConfigFile = toml::from_str(text).unwrap();
        let lab = &f.contexts["lab"];
        assert_eq!(lab.url.as_deref(), Some("https://ctl.lab:7070"));
        let cfg = Path::new("/etc/nova/config.toml");
        assert_eq!(
            from_file(lab.token_file.as_ref().unwrap(), cfg),
            Path::new("/etc/nova/lab.token")
        );
        let again: ConfigFile = toml::from_str(&toml::to_string_pretty(&f).unwrap()).unwrap();
        assert_eq!(again.current_context.as_deref(), Some("lab"));
        let e = toml::from_str::<ConfigFile>("[contexts.x]\nserver = \"y\"").unwrap_err();
        assert!(e.to_string().contains("server"), "{e}");
    }
}
