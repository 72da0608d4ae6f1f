//! Who may do what: `novactl tenant|user|token ...`, `audit` and `whoami`, and how
//! their objects print as table rows. Token secrets are printed once, when created.

use clap::{Args, Subcommand};
use nova_controller_api::{
    AuditEntry, ControllerClient, NewTenant, NewToken, NewUser, Quota, RevokedToken, Role, Tenant,
    Token, User, Whoami,
};

use crate::dates;
use crate::output::{self, Columns, Format};

/// A quota value with no limit.
const UNLIMITED: u64 = u64::MAX >> 1;

#[derive(Subcommand)]
pub enum TenantCmd {
    /// List the tenants.
    List,
    /// Create a tenant; quotas not given are unlimited.
    #[command(after_long_help = "Examples:
  novactl tenant create acme --quota-vms 20 --quota-vcpus 64 --quota-mem-mib 131072
  novactl user create olga --tenant acme --role operator
  novactl token create olga          # prints olga's token, once")]
    Create {
        /// The tenant's id.
        id: String,
        /// Most vCPUs its VMs may hold together.
        #[arg(long, value_name = "N")]
        quota_vcpus: Option<u64>,
        /// Most memory its VMs may hold together, MiB.
        #[arg(long, value_name = "MIB")]
        quota_mem_mib: Option<u64>,
        /// Most VMs it may have.
        #[arg(long, value_name = "N")]
        quota_vms: Option<u64>,
    },
}

#[derive(Subcommand)]
pub enum UserCmd {
    /// List the users you may see.
    List,
    /// Create a user.
    Create {
        /// The user's id.
        id: String,
        /// What the user's tokens may do.
        #[arg(long, value_enum)]
        role: RoleArg,
        /// The user's tenant (system admins; one's own otherwise).
        #[arg(long)]
        tenant: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum TokenCmd {
    /// List the tokens you may see (never their secrets).
    List,
    /// Make a token for a user and print its secret (shown this once).
    #[command(after_long_help = "Examples:
  novactl token create olga > olga.token
  novactl token create olga --role viewer   # a read-only token")]
    Create {
        /// The user it speaks for.
        user: String,
        /// At most the user's role; the user's role when absent.
        #[arg(long, value_enum)]
        role: Option<RoleArg>,
    },
    /// Revoke a token: it stops working at once.
    Revoke {
        /// The token's public id (from `token list`).
        id: String,
    },
}

/// A role a person can give.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum RoleArg {
    /// Read only.
    Viewer,
    /// Manage VMs (and, in the system tenant, hosts).
    Operator,
    /// Also manage users and tokens (and, in the system tenant, tenants).
    Admin,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Role {
        match r {
            RoleArg::Viewer => Role::Viewer,
            RoleArg::Operator => Role::Operator,
            RoleArg::Admin => Role::Admin,
        }
    }
}

/// The flags of `novactl audit`.
#[derive(Args, Debug)]
pub struct AuditArgs {
    /// Show the last N entries.
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub limit: usize,
}

pub async fn tenant(api: &ControllerClient, cmd: TenantCmd, f: Format) -> anyhow::Result<()> {
    let text = match cmd {
        TenantCmd::List => output::list(f, &api.tenants().await?)?,
        TenantCmd::Create {
            id,
            quota_vcpus,
            quota_mem_mib,
            quota_vms,
        } => {
            let quota = (quota_vcpus.is_some() || quota_mem_mib.is_some() || quota_vms.is_some())
                .then(|| Quota {
                    vcpus: quota_vcpus.unwrap_or(UNLIMITED),
                    mem_mib: quota_mem_mib.unwrap_or(UNLIMITED),
                    vms: quota_vms.unwrap_or(UNLIMITED),
                });
            output::one(f, &api.create_tenant(&NewTenant { id, quota }).await?)?
        }
    };
    print!("{text}");
    Ok(())
}

pub async fn user(api: &ControllerClient, cmd: UserCmd, f: Format) -> anyhow::Result<()> {
    let text = match cmd {
        UserCmd::List => output::list(f, &api.users().await?)?,
        UserCmd::Create { id, role, tenant } => {
            let u = NewUser {
                id,
                role: role.into(),
                tenant,
            };
            output::one(f, &api.create_user(&u).await?)?
        }
    };
    print!("{text}");
    Ok(())
}

pub async fn token(api: &ControllerClient, cmd: TokenCmd, f: Format) -> anyhow::Result<()> {
    let text = match cmd {
        TokenCmd::List => output::list(f, &api.tokens().await?)?,
        TokenCmd::Create { user, role } => {
            let t = api
                .create_token(&NewToken {
                    user,
                    role: role.map(Role::from),
                })
                .await?;
            // A person wants the secret alone (to put in a file); a script the object.
            if f.is_table() {
                format!("{}\n", t.token)
            } else {
                output::data(f, &t)?
            }
        }
        TokenCmd::Revoke { id } => output::one(f, &api.revoke_token(&id).await?)?,
    };
    print!("{text}");
    Ok(())
}

pub async fn audit(api: &ControllerClient, a: AuditArgs, f: Format) -> anyhow::Result<()> {
    let all = api.audit().await?;
    let last = &all[all.len().saturating_sub(a.limit)..];
    print!("{}", output::list(f, last)?);
    Ok(())
}

fn role(r: Role) -> &'static str {
    match r {
        Role::Viewer => "viewer",
        Role::Operator => "operator",
        Role::Admin => "admin",
        Role::Host => "host",
    }
}

impl Columns for Tenant {
    fn headers(wide: bool) -> Vec<&'static str> {
        let mut h = vec!["id", "quota_vcpus", "quota_mem_mib", "quota_vms", "created"];
        if wide {
            h.push("created_at");
        }
        h
    }
    fn cells(&self, wide: bool) -> Vec<String> {
        let q = |v: Option<u64>| match v {
            Some(v) if v < UNLIMITED => v.to_string(),
            _ => "-".into(),
        };
        let mut c = vec![
            self.id.clone(),
            q(self.quota.map(|q| q.vcpus)),
            q(self.quota.map(|q| q.mem_mib)),
            q(self.quota.map(|q| q.vms)),
            dates::ago(self.created_at_ms),
        ];
        if wide {
            c.push(dates::date(self.created_at_ms));
        }
        c
    }
}

impl Columns for User {
    fn headers(wide: bool) -> Vec<&'static str> {
        let mut h = vec!["id", "tenant", "role", "created"];
        if wide {
            h.push("created_at");
        }
        h
    }
    fn cells(&self, wide: bool) -> Vec<String> {
        let mut c = vec![
            self.id.clone(),
            self.tenant.clone(),
            role(self.role).into(),
            dates::ago(self.created_at_ms),
        ];
        if wide {
            c.push(dates::date(self.created_at_ms));
        }
        c
    }
}

impl Columns for Token {
    fn headers(wide: bool) -> Vec<&'static str> {
        let mut h = vec!["id", "user", "tenant", "role", "host", "created"];
        if wide {
            h.push("created_at");
        }
        h
    }
    fn cells(&self, wide: bool) -> Vec<String> {
        let mut c = vec![
            self.id.clone(),
            self.user.clone(),
            self.tenant.clone(),
            role(self.role).into(),
            output::or_dash(self.host.clone()),
            dates::ago(self.created_at_ms),
        ];
        if wide {
            c.push(dates::date(self.created_at_ms));
        }
        c
    }
}

impl Columns for RevokedToken {
    fn headers(_wide: bool) -> Vec<&'static str> {
        vec!["revoked"]
    }
    fn cells(&self, _wide: bool) -> Vec<String> {
        vec![self.revoked.clone()]
    }
}

impl Columns for AuditEntry {
    fn headers(wide: bool) -> Vec<&'static str> {
        let mut h = vec!["time", "actor", "tenant", "method", "path", "status"];
        if wide {
            h.push("id");
        }
        h
    }
    fn cells(&self, wide: bool) -> Vec<String> {
        let mut c = vec![
            dates::date(self.at_ms),
            self.actor.clone(),
            self.tenant.clone(),
            self.method.clone(),
            self.path.clone(),
            self.status.to_string(),
        ];
        if wide {
            c.push(self.id.clone());
        }
        c
    }
}

impl Columns for Whoami {
    fn headers(wide: bool) -> Vec<&'static str> {
        let mut h = vec!["user", "tenant", "role"];
        if wide {
            h.push("host");
        }
        h
    }
    fn cells(&self, wide: bool) -> Vec<String> {
        let mut c = vec![
            self.user.clone(),
            self.tenant.clone(),
            role(self.role).into(),
        ];
        if wide {
            c.push(output::or_dash(self.host.clone()));
        }
        c
    }
}
