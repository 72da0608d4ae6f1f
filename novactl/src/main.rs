//! novactl: the command line of NovaCron's controller (`/v1` API), in the manner of
//! kubectl and nomad: tables for people and json/yaml for scripts (`-o`), contexts in a
//! config file, `--watch` on lists driven by the event stream, progress bars for
//! migrations and drains, shell completions, and exit codes a script can tell apart.
//! It speaks to the controller only through `nova-controller-api`'s typed client; it
//! owns no API type. Each resource's commands and their table columns live in the
//! resource's module (`vm`, `host`, `operation`, `access`, `policy`, `federation`).

mod access;
mod alert;
mod backup;
mod config;
mod console;
mod dates;
mod describe;
mod exit;
mod federation;
mod host;
mod host_image;
mod image;
mod operation;
mod output;
mod policy;
mod progress;
mod snapshot;
mod template;
mod top;
mod upgrade;
mod vm;
mod vm_spec;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use nova_controller_api::ControllerClient;

use output::Format;

/// What every command accepts: which controller, as whom, and how to print.
#[derive(clap::Args, Debug)]
#[command(next_help_heading = "Global options")]
pub struct Global {
    /// Use this context of the config file instead of its current-context.
    #[arg(long, env = "NOVA_CONTEXT", global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// The controller's URL (http:// or https://) [default: the context's, else
    /// http://127.0.0.1:7070].
    #[arg(long, env = "NOVA_URL", global = true, value_name = "URL")]
    pub url: Option<String>,
    /// The API token.
    #[arg(
        long,
        env = "NOVA_TOKEN",
        hide_env_values = true,
        global = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
    /// A file holding the API token (keeps it out of the process list).
    #[arg(long, env = "NOVA_TOKEN_FILE", global = true, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// PEM file of the CA that signs an https:// controller's certificate (also `--ca`).
    #[arg(
        long,
        visible_alias = "ca",
        env = "NOVA_CA_FILE",
        global = true,
        value_name = "FILE"
    )]
    pub ca_file: Option<PathBuf>,
    /// The config file of contexts [default: $XDG_CONFIG_HOME/nova/config.toml, else
    /// ~/.config/nova/config.toml].
    #[arg(long, env = "NOVA_CONFIG", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Table, global = true)]
    pub output: Format,
}

/// The examples of `novactl --help`.
const EXAMPLES: &str = "Examples:
  novactl config set-context lab --url http://198.18.0.1:7070 --token-file ./admin.token --use
  novactl vm create web --kernel /srv/vmlinux --image sha256:4f1c... --mem-mib 512
  novactl vm list --watch
  novactl vm get vm-7f3a0c -o yaml
  novactl vm migrate vm-7f3a0c --to host-b
  novactl host drain host-a
  source <(novactl completion bash)";

#[derive(Parser)]
#[command(
    name = "novactl",
    version,
    about = "The command line of a NovaCron cluster: VMs, hosts, live migrations, access",
    long_about = "The command line of a NovaCron cluster: VMs, hosts, live migrations, \
        tenants, users, tokens and the migration policy, through the controller's /v1 API.\n\n\
        Which controller and token: the flags (--url, --token or --token-file, --ca-file) \
        beat the environment (NOVA_URL, NOVA_TOKEN, NOVA_TOKEN_FILE, NOVA_CA_FILE), which \
        beats the config file's context (see `novactl config --help`).",
    after_help = exit::HELP,
    after_long_help = format!("{EXAMPLES}\n\n{}", exit::HELP)
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    cmd: Cmd,
}

// Parsed once per run: variant sizes do not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Cmd {
    /// Virtual machines: create, list, get, start, stop, delete, migrate.
    #[command(subcommand)]
    Vm(vm::VmCmd),
    /// Backups of VMs: create, list, get, restore, verify, delete, prune, gc; stores.
    #[command(subcommand)]
    Backup(backup::BackupCmd),
    /// Hosts: list, get, cordon, uncordon, drain, upgrade, poweroff, reboot (system tenant).
    #[command(subcommand)]
    Host(host::HostCmd),
    /// The whole cluster: a rolling upgrade of the host image (system tenant).
    #[command(subcommand)]
    Cluster(upgrade::ClusterCmd),
    /// Host image signing, offline: keygen, pubkey, sign (a version's directory).
    #[command(subcommand)]
    HostImage(host_image::HostImageCmd),
    /// Images of the hosts' caches: upload, import (admins), list.
    #[command(subcommand)]
    Image(image::ImageCmd),
    /// Templates: create (a version), list, show, instantiate (cold or clone), default.
    #[command(subcommand)]
    Template(template::TemplateCmd),
    /// Long-running operations (migrations, drains): list, get, wait, cancel.
    #[command(subcommand, visible_alias = "op")]
    Operation(operation::OpCmd),
    /// Follow the event stream: every state change you may see, as it happens.
    Events(watch::EventsArgs),
    /// Tenants and their quotas (system admins).
    #[command(subcommand)]
    Tenant(access::TenantCmd),
    /// Users of a tenant (admins).
    #[command(subcommand)]
    User(access::UserCmd),
    /// API tokens (admins).
    #[command(subcommand)]
    Token(access::TokenCmd),
    /// The audit log: every mutating call, who made it and how it ended (admins).
    Audit(access::AuditArgs),
    /// The cluster's migration policy: how every live migration and drain runs.
    #[command(subcommand)]
    Policy(policy::PolicyCmd),
    /// Live migrations the rebalancer proposes now (system tenant).
    Rebalance,
    /// Who the token is: user, tenant, role.
    Whoami,
    /// Latest figures of hosts or VMs from the controller's metric history.
    #[command(subcommand)]
    Top(top::TopCmd),
    /// Alerts: list, acknowledge, silence; silences; dead letters.
    #[command(subcommand)]
    Alert(alert::AlertCmd),
    /// Alert rules: list, get, create, replace, delete (system tenant).
    #[command(subcommand)]
    AlertRule(alert::RuleCmd),
    /// Where alerts are sent: webhooks, mail, Alertmanager (system tenant).
    #[command(subcommand)]
    AlertReceiver(alert::ReceiverCmd),
    /// Capacity per host and cluster: allocated, used, trend, days until full, what fits.
    Capacity(alert::CapacityArgs),
    /// Federation: peer clusters, federated tokens, lists and placement across clusters.
    #[command(subcommand)]
    Federation(federation::FederationCmd),
    /// Contexts of the config file: which controller, which token, which CA.
    #[command(subcommand)]
    Config(config::ConfigCmd),
    /// Print a shell completion script.
    #[command(after_long_help = "Examples:
  source <(novactl completion bash)                    # this bash session
  novactl completion bash > /etc/bash_completion.d/novactl
  novactl completion zsh > \"${fpath[1]}/_novactl\"
  novactl completion fish > ~/.config/fish/completions/novactl.fish")]
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("novactl: error: the async runtime: {e}");
            return ExitCode::from(exit::OTHER);
        }
    };
    match rt.block_on(run(cli, &matches)) {
        Ok(()) => ExitCode::from(exit::OK),
        Err(e) => {
            eprintln!("novactl: error: {e:#}");
            ExitCode::from(exit::code(&e))
        }
    }
}

async fn run(cli: Cli, m: &clap::ArgMatches) -> anyhow::Result<()> {
    let g = &cli.global;
    let f = g.output;
    // Commands that need no controller.
    let cmd = match cli.cmd {
        Cmd::Config(c) => return config::run(c, g, m, f),
        Cmd::HostImage(c) => return host_image::run(c),
        Cmd::Completion { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "novactl",
                &mut std::io::stdout(),
            );
            return Ok(());
        }
        cmd => cmd,
    };
    let t = config::resolve(g, m)?;
    let api = ControllerClient::new(&t.url, t.token.as_deref(), &t.opts)?;
    match cmd {
        Cmd::Vm(c) => vm::run(&api, c, f).await,
        Cmd::Backup(c) => backup::run(&api, c, f).await,
        Cmd::Host(c) => host::run(&api, c, f).await,
        Cmd::Cluster(c) => upgrade::cluster(&api, c, f).await,
        Cmd::Image(c) => image::run(&api, c, f).await,
        Cmd::Template(c) => template::run(&api, c, f).await,
        Cmd::Operation(c) => operation::run(&api, c, f).await,
        Cmd::Events(a) => watch::events(&api, a, f).await,
        Cmd::Tenant(c) => access::tenant(&api, c, f).await,
        Cmd::User(c) => access::user(&api, c, f).await,
        Cmd::Token(c) => access::token(&api, c, f).await,
        Cmd::Audit(a) => access::audit(&api, a, f).await,
        Cmd::Policy(c) => policy::run(&api, c, f).await,
        Cmd::Rebalance => {
            print!("{}", output::list(f, &api.rebalance().await?)?);
            Ok(())
        }
        Cmd::Whoami => {
            print!("{}", output::one(f, &api.whoami().await?)?);
            Ok(())
        }
        Cmd::Top(c) => top::run(&api, c, f).await,
        Cmd::Alert(c) => alert::alert(&api, c, f).await,
        Cmd::AlertRule(c) => alert::rule(&api, c, f).await,
        Cmd::AlertReceiver(c) => alert::receiver(&api, c, f).await,
        Cmd::Capacity(a) => alert::capacity(&api, a, f).await,
        Cmd::Federation(c) => federation::run(&api, c, f).await,
        Cmd::Config(_) | Cmd::Completion { .. } | Cmd::HostImage(_) => {
            unreachable!("handled above")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every command and every flag says what it is (`--help` is the manual).
    #[test]
    fn every_command_and_flag_has_help() {
        fn walk(c: &clap::Command, path: &str, missing: &mut Vec<String>) {
            let path = format!("{path} {}", c.get_name());
            if c.get_about().is_none() {
                missing.push(path.clone());
            }
            for a in c.get_arguments() {
                let builtin = matches!(a.get_id().as_str(), "help" | "version");
                if !builtin && a.get_help().is_none() {
                    missing.push(format!("{path} {}", a.get_id()));
                }
            }
            for s in c.get_subcommands() {
                walk(s, &path, missing);
            }
        }
        let cmd = Cli::command();
        cmd.clone().debug_assert();
        let mut missing = vec![];
        walk(&cmd, "", &mut missing);
        missing.retain(|m| m != " novactl help");
        assert!(missing.is_empty(), "no help for: {missing:?}");
    }
}
