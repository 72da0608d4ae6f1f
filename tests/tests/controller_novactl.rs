//! novactl, the real binary, against a real controller: what a person types, what a
//! script reads, and what each can tell from the exit code. Every run gets a home
//! directory of its own and no `NOVA_*` variable it was not given, so the config file
//! and the environment each test sets are the only ones in play.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nova_controller_api::{Role, Vm};
use nova_tests::controller::*;
use nova_tests::etcd::make_certs;
use nova_tests::hostd::hostd_for;
use nova_tests::hostd::testguest;
use nova_tests::{binary, require_kvm, Console, TempDir};
use serde_json::Value;

/// What one run of novactl did.
#[derive(Debug)]
struct Run {
    code: i32,
    out: String,
    err: String,
}

/// novactl with a home of its own and the environment a test gives it.
struct Novactl {
    home: TempDir,
    env: Vec<(String, String)>,
}

impl Novactl {
    /// No URL, no token, no config file.
    fn bare() -> Novactl {
        Novactl {
            home: TempDir::new(),
            env: vec![],
        }
    }

    /// Talking to `c` with `token` through `NOVA_URL` and `NOVA_TOKEN`.
    fn at(c: &Controller, token: &str) -> Novactl {
        Novactl::bare()
            .env("NOVA_URL", &c.url)
            .env("NOVA_TOKEN", token)
    }

    fn env(mut self, k: &str, v: &str) -> Novactl {
        self.env.push((k.into(), v.into()));
        self
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(binary("novactl"));
        cmd.args(args).env("HOME", self.home.path());
        for k in [
            "NOVA_URL",
            "NOVA_TOKEN",
            "NOVA_TOKEN_FILE",
            "NOVA_CA_FILE",
            "NOVA_CONFIG",
            "NOVA_CONTEXT",
            "XDG_CONFIG_HOME",
        ] {
            cmd.env_remove(k);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    fn run(&self, args: &[&str]) -> Run {
        let o = self.command(args).stdin(Stdio::null()).output().unwrap();
        Run {
            code: o.status.code().unwrap_or(-1),
            out: String::from_utf8_lossy(&o.stdout).into(),
            err: String::from_utf8_lossy(&o.stderr).into(),
        }
    }

    /// Runs and expects success; answers stdout.
    fn ok(&self, args: &[&str]) -> String {
        let r = self.run(args);
        assert_eq!(r.code, 0, "novactl {args:?}: {r:?}");
        r.out
    }

    /// Runs with `-o json` and expects success; answers the JSON.
    fn json(&self, args: &[&str]) -> Value {
        let out = self.ok(&[args, &["-o", "json"]].concat());
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
    }

    /// A long-running novactl (`--watch`, `events`) whose stdout is read line by line.
    fn spawn(&self, args: &[&str]) -> Console {
        Console::spawn(self.command(args))
    }
}

/// `lines` joined, for messages and searches.
fn text(c: &Console) -> String {
    c.lines()
        .iter()
        .map(|l| l.text.clone())
        .collect::<Vec<_>>()
        .join("\n")
}

fn created_id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_string()
}

#[test]
fn policy_set_changes_only_the_fields_given_and_none_removes_the_cap() {
    let d = TempDir::new();
    let c = Controller::sqlite(d.path());
    let ctl = Novactl::at(&c, &c.admin);
    let p = ctl.json(&[
        "policy",
        "set",
        "--mode",
        "precopy",
        "--downtime-ms",
        "50",
        "--bandwidth-mbit",
        "1000",
        "--compress",
        "zstd",
        "--connections",
        "4",
        "--completion-timeout-s",
        "900",
        "--postcopy-allowed",
        "false",
        "--max-parallel-cluster",
        "8",
        "--max-parallel-per-host",
        "3",
    ]);
    let want = serde_json::json!({"mode": "precopy", "downtime_ms": 50, "bandwidth_mbit": 1000,
        "compress": "zstd", "connections": 4});
    assert_eq!(p["params"], want, "{p}");
    // One field now: every other one keeps what the first call set (a PUT of the
    // flags' defaults used to reset them).
    let p = ctl.json(&["policy", "set", "--max-parallel-cluster", "16"]);
    assert_eq!(p["max_parallel_cluster"], 16);
    assert_eq!(p["params"], want, "{p}");
    assert_eq!(p["completion_timeout_s"], 900);
    assert_eq!(p["postcopy_allowed"], false);
    assert_eq!(p["max_parallel_per_host"], 3);
    // `none` removes the cap and nothing else.
    let p = ctl.json(&["policy", "set", "--bandwidth-mbit", "none"]);
    assert!(p["params"].get("bandwidth_mbit").is_none(), "{p}");
    assert_eq!(p["params"]["downtime_ms"], 50);
    assert_eq!(ctl.json(&["policy", "get"]), p);
    let table = ctl.ok(&["policy", "get"]);
    assert!(
        table.starts_with("MODE") && table.contains("none"),
        "{table}"
    );
    // Nothing to change, or a value the controller refuses.
    assert_eq!(ctl.run(&["policy", "set"]).code, 2);
    let r = ctl.run(&["policy", "set", "--mode", "hybrid"]);
    assert_eq!(r.code, 1, "post-copy is not allowed now: {r:?}");
    assert!(r.err.contains("postcopy_allowed"), "{}", r.err);
}

#[test]
fn every_command_has_help_and_the_main_ones_show_examples() {
    let ctl = Novactl::bare();
    let top = ctl.ok(&["--help"]);
    for want in [
        "Exit codes:",
        "3  not found",
        "4  auth",
        "5  connection",
        "Examples:",
    ] {
        assert!(top.contains(want), "no {want:?} in:\n{top}");
    }
    let commands: &[&[&str]] = &[
        &["vm"],
        &["vm", "list"],
        &["vm", "get"],
        &["vm", "create"],
        &["vm", "start"],
        &["vm", "stop"],
        &["vm", "delete"],
        &["vm", "migrate"],
        &["host", "list"],
        &["host", "get"],
        &["host", "cordon"],
        &["host", "uncordon"],
        &["host", "drain"],
        &["operation", "list"],
        &["op", "wait"],
        &["operation", "cancel"],
        &["events"],
        &["tenant", "create"],
        &["user", "create"],
        &["token", "create"],
        &["token", "revoke"],
        &["audit"],
        &["policy", "get"],
        &["policy", "set"],
        &["rebalance"],
        &["whoami"],
        &["config", "set-context"],
        &["config", "use-context"],
        &["config", "get-contexts"],
        &["config", "delete-context"],
        &["completion"],
    ];
    for cmd in commands {
        let help = ctl.ok(&[cmd, &["--help"][..]].concat());
        assert!(help.contains("Usage: novactl"), "{cmd:?}:\n{help}");
        // Every option carries a description: after its name, or on the next line.
        let lines: Vec<&str> = help.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let t = line.trim();
            let option = t.starts_with("--")
                || (t.starts_with('-') && t[1..].starts_with(|c: char| c.is_ascii_alphabetic()));
            if !option || t.contains("  ") {
                continue;
            }
            let next = lines.get(i + 1).map_or("", |l| l.trim());
            assert!(
                !next.is_empty() && !next.starts_with('-'),
                "{cmd:?}: an option without help: {line}"
            );
        }
    }
    for cmd in [
        &["vm", "create"][..],
        &["vm", "list"],
        &["vm", "migrate"],
        &["host", "drain"],
        &["policy", "set"],
        &["config", "set-context"],
    ] {
        let help = ctl.ok(&[cmd, &["--help"][..]].concat());
        let examples = help.split_once("Examples:\n").map(|(_, e)| e).unwrap_or("");
        assert!(
            examples.contains("  novactl "),
            "{cmd:?}: no examples:\n{help}"
        );
    }
    // Short help points at the rest.
    let short = ctl.ok(&["vm", "create", "-h"]);
    assert!(
        short.contains("--kernel") && short.contains("--disk"),
        "{short}"
    );
}

#[test]
fn reads_print_as_tables_wide_tables_json_and_yaml_with_dates() {
    let d = TempDir::new();
    let c = Controller::sqlite(d.path());
    let ctl = Novactl::at(&c, &c.admin).env("TZ", "Asia/Kolkata");
    register_host(&c, "h1", "http://127.0.0.1:9", 8, 8192);
    let vm = ctl.json(&["vm", "create", "web", "--kernel", "/k", "--no-start"]);
    let id = created_id(&vm);

    let table = ctl.ok(&["vm", "list"]);
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["ID", "NAME", "TENANT", "DESIRED", "OBSERVED", "HOST", "VCPUS", "MEM_MIB", "CREATED"]
    );
    let row = lines.next().unwrap();
    assert!(row.starts_with(&id) && row.contains("web"), "{table}");
    assert!(row.ends_with(" ago") || row.ends_with("just now"), "{row}");

    // Wide: more columns, and the creation date in RFC 3339, local time (TZ).
    let wide = ctl.ok(&["vm", "list", "-o", "wide"]);
    assert!(wide.lines().next().unwrap().contains("KERNEL"), "{wide}");
    let secs = vm["created_at_ms"].as_u64().unwrap() / 1000;
    let date = Command::new("date")
        .env("TZ", "Asia/Kolkata")
        .args([&format!("-d@{secs}"), "+%Y-%m-%dT%H:%M:%S%:z"])
        .output()
        .unwrap();
    let date = String::from_utf8_lossy(&date.stdout).trim().to_string();
    assert!(date.ends_with("+05:30"), "{date}");
    assert!(wide.contains(&date), "no {date} in:\n{wide}");

    // json: the contract's objects, as the API gives them; yaml: the same. (The
    // reconciler may have placed the VM meanwhile: its identity and spec are what
    // stays.)
    let list = ctl.json(&["vm", "list"]);
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    for field in ["id", "tenant", "spec", "desired", "created_at_ms"] {
        assert_eq!(list[0][field], vm[field], "{field}");
    }
    let typed: Vec<Vm> = serde_json::from_value(list).expect("the contract's Vm");
    assert_eq!(typed[0].spec.kernel, "/k");
    let yaml = ctl.ok(&["vm", "get", &id, "-o", "yaml"]);
    assert!(yaml.contains(&format!("id: {id}")), "{yaml}");
    assert!(yaml.contains("spec:\n  name: web\n"), "{yaml}");
    assert!(yaml.contains(&format!("created_at_ms: {}", vm["created_at_ms"])));

    // Every read command takes every format.
    for cmd in [
        &["host", "list"][..],
        &["host", "get", "h1"],
        &["operation", "list"],
        &["tenant", "list"],
        &["user", "list"],
        &["token", "list"],
        &["audit"],
        &["policy", "get"],
        &["rebalance"],
        &["whoami"],
        &["vm", "list"],
    ] {
        for f in ["table", "wide", "json", "yaml"] {
            let out = ctl.ok(&[cmd, &["-o", f][..]].concat());
            match f {
                "json" => {
                    serde_json::from_str::<Value>(&out).unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
                }
                "table" | "wide" => assert!(
                    out.lines().next().is_some_and(|h| h == h.to_uppercase()),
                    "{cmd:?} {f}: {out}"
                ),
                _ => assert!(!out.trim().is_empty(), "{cmd:?} yaml"),
            }
        }
    }
    let hosts = ctl.ok(&["host", "list", "-o", "wide"]);
    assert!(hosts.contains("http://127.0.0.1:9"), "{hosts}");
    assert!(hosts.contains("+05:30"), "registration date: {hosts}");
    // The audit log's times are dates even in the narrow table.
    let audit = ctl.ok(&["audit", "--limit", "1"]);
    assert_eq!(audit.lines().count(), 2, "one entry: {audit}");
    assert!(audit.contains("+05:30"), "{audit}");
    assert_eq!(
        ctl.json(&["audit", "--limit", "2"])
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn exit_codes_tell_usage_not_found_auth_and_connection_apart() {
    let d = TempDir::new();
    let c = Controller::sqlite(d.path());
    let admin = Novactl::at(&c, &c.admin);
    let viewer = c.token_for("acme", "vic", Role::Viewer);
    assert_eq!(admin.run(&["vm", "list"]).code, 0);
    // 2: the command line is wrong.
    assert_eq!(admin.run(&["vm", "frobnicate"]).code, 2);
    assert_eq!(admin.run(&["vm", "list", "-o", "xml"]).code, 2);
    // 3: no such thing.
    let r = admin.run(&["vm", "get", "vm-nope"]);
    assert_eq!(r.code, 3, "{r:?}");
    assert!(r.err.contains("404"), "{}", r.err);
    assert_eq!(admin.run(&["operation", "wait", "op-nope"]).code, 3);
    assert_eq!(admin.run(&["--context", "nope", "whoami"]).code, 3);
    // 4: the token is refused, or may not do this.
    let r = Novactl::at(&c, "nova_nope").run(&["vm", "list"]);
    assert_eq!(r.code, 4, "{r:?}");
    assert!(r.err.contains("401"), "{}", r.err);
    let r = Novactl::at(&c, &viewer).run(&["vm", "create", "x", "--kernel", "/k"]);
    assert_eq!(r.code, 4, "{r:?}");
    assert!(r.err.contains("403"), "{}", r.err);
    assert_eq!(Novactl::at(&c, "nova_nope").run(&["events"]).code, 4);
    // 5: nobody answers.
    let closed = format!("http://127.0.0.1:{}", free_port());
    let r = admin.run(&["--url", &closed, "vm", "list"]);
    assert_eq!(r.code, 5, "{r:?}");
    assert!(r.err.contains("cannot connect"), "{}", r.err);
    assert_eq!(admin.run(&["--url", &closed, "events"]).code, 5);
    // 1: anything else, such as a value the controller refuses, with its field.
    let r = admin.run(&["vm", "create", "bad", "--kernel", "/k", "--vcpus", "0"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.err.contains("vcpus"), "{}", r.err);
}

#[test]
fn contexts_in_the_config_file_with_the_environment_and_flags_above_them() {
    let d = TempDir::new();
    let c = Controller::sqlite(d.path());
    let olga = c.token_for("acme", "olga", Role::Operator);
    let ctl = Novactl::bare();
    let token_file = ctl.home.join("olga.token");
    std::fs::write(&token_file, format!("{olga}\n")).unwrap();
    let closed = format!("http://127.0.0.1:{}", free_port());

    // No config: the default URL, no token.
    assert_eq!(ctl.run(&["config", "get-contexts"]).out.lines().count(), 1);
    assert_eq!(ctl.run(&["config", "current-context"]).code, 3);

    ctl.ok(&[
        "config",
        "set-context",
        "lab",
        "--url",
        &c.url,
        "--token-file",
        token_file.to_str().unwrap(),
    ]);
    ctl.ok(&[
        "config",
        "set-context",
        "dead",
        "--url",
        &closed,
        "--token",
        "x",
        "--use",
    ]);
    // The default place, mode 0600 (it may hold tokens).
    let file = ctl.home.join(".config/nova/config.toml");
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o600
    );
    assert_eq!(ctl.ok(&["config", "current-context"]).trim(), "dead");
    assert_eq!(ctl.run(&["whoami"]).code, 5, "the current context is dead");

    let r = ctl.ok(&["config", "use-context", "lab"]);
    assert!(r.contains("lab"), "{r}");
    assert_eq!(ctl.json(&["whoami"])["user"], "olga");
    let list = ctl.ok(&["config", "get-contexts"]);
    assert!(
        list.lines()
            .any(|l| l.starts_with('*') && l.contains("lab")),
        "{list}"
    );
    assert!(
        list.contains("(inline)") && !list.contains(" x "),
        "no secret: {list}"
    );
    // `--context` picks another context for one call.
    assert_eq!(ctl.run(&["--context", "dead", "whoami"]).code, 5);
    // Setting one field of a context keeps the others.
    ctl.ok(&["config", "set-context", "dead", "--url", &c.url]);
    assert_eq!(
        ctl.run(&["--context", "dead", "whoami"]).code,
        4,
        "token x kept"
    );

    // The environment beats the file; the flags beat the environment.
    let env = Novactl {
        home: ctl.home,
        env: vec![("NOVA_URL".into(), closed.clone())],
    };
    assert_eq!(env.run(&["whoami"]).code, 5, "NOVA_URL over the context");
    assert_eq!(env.json(&["--url", &c.url, "whoami"])["user"], "olga");
    let env = env.env("NOVA_URL", &c.url).env("NOVA_TOKEN", &c.admin);
    assert_eq!(
        env.json(&["whoami"])["tenant"],
        "system",
        "NOVA_TOKEN over the file"
    );
    let flag = env.json(&["--token-file", token_file.to_str().unwrap(), "whoami"]);
    assert_eq!(flag["user"], "olga", "--token-file over NOVA_TOKEN");

    // NOVA_CONFIG (and --config) name another file.
    let other = d.path().join("other.toml");
    std::fs::write(
        &other,
        format!(
            "current-context = \"x\"\n[contexts.x]\nurl = \"{}\"\ntoken-file = \"{}\"\n",
            c.url,
            token_file.display()
        ),
    )
    .unwrap();
    let fresh = Novactl::bare().env("NOVA_CONFIG", other.to_str().unwrap());
    assert_eq!(fresh.json(&["whoami"])["user"], "olga");
    let fresh = Novactl::bare();
    assert_eq!(
        fresh.json(&["--config", other.to_str().unwrap(), "whoami"])["user"],
        "olga"
    );
    // Deleting the current context leaves none current.
    let home = Novactl::bare().env("NOVA_CONFIG", other.to_str().unwrap());
    home.ok(&["config", "delete-context", "x"]);
    assert_eq!(home.run(&["config", "current-context"]).code, 3);
    assert_eq!(home.run(&["config", "delete-context", "x"]).code, 3);
    // A broken file says which and where.
    std::fs::write(&other, "[contexts.x]\nserver = 1\n").unwrap();
    let r = fresh.run(&["--config", other.to_str().unwrap(), "whoami"]);
    assert!(
        r.code == 1 && r.err.contains("server") && r.err.contains("other.toml"),
        "{r:?}"
    );
}

/// A TLS front (socat, a certificate from a throwaway CA) for a plain controller.
struct TlsFront {
    child: Child,
    url: String,
    ca: PathBuf,
}

impl TlsFront {
    fn new(dir: &Path, backend: &str) -> TlsFront {
        let tls = make_certs(dir);
        let port = free_port();
        let child = Command::new("socat")
            .arg(format!(
                "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,cert=server.pem,key=server.key,verify=0"
            ))
            .arg(format!("TCP:{}", backend.trim_start_matches("http://")))
            .current_dir(dir)
            .stderr(Stdio::null())
            .spawn()
            .expect("socat (make deps)");
        wait_for(10, "the TLS front", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        TlsFront {
            child,
            url: format!("https://127.0.0.1:{port}"),
            ca: tls.ca,
        }
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn an_https_controller_is_trusted_through_the_ca_file_of_a_context_or_a_flag() {
    let d = TempDir::new();
    let c = Controller::sqlite(d.path());
    let tls = TlsFront::new(d.path(), &c.url);
    let ca = tls.ca.to_str().unwrap();
    let ctl = Novactl::bare().env("NOVA_TOKEN", &c.admin);
    // Without the CA the certificate is refused: a connection (TLS) error.
    let r = ctl.run(&["--url", &tls.url, "whoami"]);
    assert_eq!(r.code, 5, "{r:?}");
    assert!(r.err.to_lowercase().contains("certificate"), "{}", r.err);
    assert_eq!(
        ctl.json(&["--url", &tls.url, "--ca-file", ca, "whoami"])["user"],
        "admin"
    );
    let env = Novactl::bare()
        .env("NOVA_TOKEN", &c.admin)
        .env("NOVA_CA_FILE", ca);
    assert_eq!(env.json(&["--url", &tls.url, "whoami"])["user"], "admin");
    // From a context; and the event stream (wss://) trusts it as well.
    ctl.ok(&[
        "config",
        "set-context",
        "tls",
        "--url",
        &tls.url,
        "--ca-file",
        ca,
        "--use",
    ]);
    assert_eq!(ctl.json(&["whoami"])["tenant"], "system");
    ctl.ok(&["vm", "create", "over-tls", "--kernel", "/k", "--no-start"]);
    let events = ctl.spawn(&["events", "--since", "0", "-o", "json"]);
    events.wait_for(Duration::from_secs(20), |l| l.text.contains("vm.created"));
    let r = Novactl::bare().run(&["--url", &tls.url, "--token", &c.admin, "events"]);
    assert_eq!(r.code, 5, "wss without the CA: {r:?}");
}

#[test]
fn completion_scripts_for_bash_zsh_and_fish() {
    let ctl = Novactl::bare();
    let bash = ctl.ok(&["completion", "bash"]);
    assert!(bash.contains("complete -F _novactl"), "{bash}");
    let zsh = ctl.ok(&["completion", "zsh"]);
    assert!(zsh.starts_with("#compdef novactl"), "{zsh}");
    let fish = ctl.ok(&["completion", "fish"]);
    assert!(
        fish.contains("complete -c novactl") && fish.contains("migrate"),
        "{fish}"
    );
    // Bash loads it, and it completes a subcommand.
    let script = ctl.home.join("novactl.bash");
    std::fs::write(&script, &bash).unwrap();
    let probe = format!(
        "source {}; COMP_WORDS=(novactl vm mi); COMP_CWORD=2; COMP_LINE='novactl vm mi'; \
         COMP_POINT=${{#COMP_LINE}}; _novactl novactl mi vm; echo \"${{COMPREPLY[@]}}\"",
        script.display()
    );
    let o = Command::new("bash").args(["-c", &probe]).output().unwrap();
    let got = String::from_utf8_lossy(&o.stdout);
    assert!(
        got.contains("migrate"),
        "{got} {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(ctl.run(&["completion", "tcsh"]).code, 2);
}

#[test]
fn vm_create_takes_a_kernel_and_disks_as_users_write_them() {
    let d = TempDir::new();
    let c = Controller::sqlite(d.path());
    c.token_for("acme", "olga", Role::Operator);
    let ctl = Novactl::at(&c, &c.admin);
    let vm = ctl.json(&[
        "vm",
        "create",
        "db",
        "--kernel",
        "/srv/vmlinux",
        "--initrd",
        "/srv/initrd",
        "--cmdline",
        "console=ttyS0",
        "--image",
        &format!("sha256:{}", "ab12".repeat(16)),
        "--disk",
        "size=10G",
        "--disk",
        "image=/srv/seed.raw,ro",
        "--vcpus",
        "2",
        "--mem-mib",
        "512",
        "--nics",
        "2",
        "--label",
        "app=db",
        "--host-label",
        "zone=a",
        "--with",
        "app=web",
        "--apart-from",
        "app=db",
        "--restart-on-host-failure",
        "--no-start",
        "--tenant",
        "acme",
    ]);
    let s = &vm["spec"];
    assert_eq!(s["kernel"], "/srv/vmlinux", "--kernel is the spec's kernel");
    assert_eq!(s["initrd"], "/srv/initrd");
    assert_eq!(s["cmdline"], "console=ttyS0");
    assert_eq!(
        s["disks"],
        serde_json::json!([
            {"image": format!("sha256:{}", "ab12".repeat(16)), "read_only": false},
            {"size_mib": 10240, "read_only": false},
            {"image": "/srv/seed.raw", "read_only": true},
        ])
    );
    assert_eq!(
        (s["vcpus"].as_u64(), s["mem_mib"].as_u64()),
        (Some(2), Some(512))
    );
    assert_eq!(s["nics"].as_array().unwrap().len(), 2);
    assert_eq!(s["labels"]["app"], "db");
    assert_eq!(s["affinity"]["host_labels"]["zone"], "a");
    assert_eq!(s["affinity"]["with"][0], "app=web");
    assert_eq!(s["affinity"]["apart_from"][0], "app=db");
    assert_eq!(s["on_host_failure"], "restart");
    assert_eq!(s["start"], false);
    assert_eq!(vm["tenant"], "acme");
    // A retry with the same key answers the same VM.
    let args = [
        "vm",
        "create",
        "web",
        "--kernel",
        "/k",
        "--no-start",
        "--idempotency-key",
        "k-1",
    ];
    let first = ctl.json(&args);
    assert_eq!(ctl.json(&args)["id"], first["id"]);
    assert_eq!(ctl.json(&["vm", "list"]).as_array().unwrap().len(), 2);
    // Usage errors name what is wrong.
    for (bad, what) in [
        (&["vm", "create", "x", "--image", "/img"][..], "--kernel"),
        (
            &["vm", "create", "x", "--kernel", "/k", "--disk", "size=10"],
            "unit",
        ),
        (
            &["vm", "create", "x", "--kernel", "/k", "--disk", "ro"],
            "image=REF",
        ),
        (
            &["vm", "create", "x", "--kernel", "/k", "--label", "app"],
            "KEY=VALUE",
        ),
    ] {
        let r = ctl.run(bad);
        assert_eq!(r.code, 2, "{bad:?}: {r:?}");
        assert!(r.err.contains(what), "{bad:?}: {}", r.err);
    }
}

#[test]
fn vm_get_describes_a_vm_and_events_prints_the_stream() {
    let d = TempDir::new();
    let c = Controller::sqlite(d.path());
    let ctl = Novactl::at(&c, &c.admin);
    let vm = ctl.json(&[
        "vm",
        "create",
        "web",
        "--kernel",
        "/k",
        "--disk",
        "size=1G",
        "--label",
        "app=web",
        "--no-start",
    ]);
    let id = created_id(&vm);
    ctl.ok(&["vm", "start", &id]);
    let view = ctl.ok(&["vm", "get", &id]);
    for want in [
        "Name:               web".to_string(),
        format!("ID:                 {id}"),
        "  Kernel:           /k".into(),
        "    0  size=1G".into(),
        "  Labels:           app=web".into(),
        "Placement:".into(),
        "Observed:".into(),
        "Operations:".into(),
        "vm.created".into(),
    ] {
        assert!(view.contains(&want), "no {want:?} in:\n{view}");
    }
    assert!(
        view.contains(" ago)") || view.contains(" (just now)"),
        "dates with their age:\n{view}"
    );
    // The event stream as JSON lines from a revision, and as a table of new events.
    let all = ctl.spawn(&["events", "--since", "0", "-o", "json"]);
    let line = all.wait_for(Duration::from_secs(20), |l| l.text.contains("vm.created"));
    let ev: Value = serde_json::from_str(&line.text).unwrap();
    assert_eq!(ev["id"], id.as_str());
    let rev = ev["revision"].as_u64().unwrap();
    let after = ctl.spawn(&["events", "--since", &rev.to_string(), "-o", "yaml"]);
    after.wait_for(Duration::from_secs(20), |l| l.text.contains("kind: vm."));
    assert!(
        !text(&after).contains("vm.created"),
        "replayed only after {rev}"
    );
    let new = ctl.spawn(&["events"]);
    new.wait_for(Duration::from_secs(10), |l| l.text.starts_with("REVISION"));
    ctl.ok(&["vm", "stop", &id]);
    new.wait_for(Duration::from_secs(20), |l| l.text.contains(&id));
}

/// `vm stop` presses the VM's ACPI power button (the VMM's log on its host says
/// so; the test guest ignores it and is stopped after the timeout) unless
/// `--force`, which kills the VMM at once: no button.
#[test]
fn vm_stop_presses_the_power_button_unless_forced() {
    if !require_kvm() {
        return;
    }
    let d = TempDir::new();
    let c = Controller::sqlite(d.path());
    let h = hostd_for(&c);
    let ctl = Novactl::at(&c, &c.admin);
    wait_for(30, "the host ready", || {
        let hosts = ctl.json(&["host", "list"]);
        (hosts.as_array()?.iter().any(|h| h["state"] == "ready")).then_some(())
    });
    let guest = testguest();
    let vm = ctl.json(&[
        "vm",
        "create",
        "web",
        "--kernel",
        guest.to_str().unwrap(),
        "--mem-mib",
        "64",
    ]);
    let id = created_id(&vm);
    let log = h.data().join(format!("vms/{id}/vmm.log"));
    let presses = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches("power button pressed")
            .count()
    };
    let observed = |state: &'static str| {
        wait_for(60, state, || {
            let v = ctl.json(&["vm", "get", &id]);
            (v["observed"]["state"] == state).then_some(())
        })
    };
    observed("running");
    ctl.ok(&["vm", "stop", &id]);
    observed("stopped");
    assert_eq!(presses(), 1, "the graceful stop pressed the button");
    ctl.ok(&["vm", "start", &id]);
    observed("running");
    ctl.ok(&["vm", "stop", &id, "--force"]);
    observed("stopped");
    assert_eq!(presses(), 1, "the forced stop pressed no button");
}

/// How many list calls of `path` the controller has answered so far.
fn list_calls(c: &Controller, path: &str) -> usize {
    c.log()
        .lines()
        .filter(|l| l.contains(&format!("GET {path} 200")))
        .count()
}

#[test]
fn watched_lists_redraw_on_each_event_and_never_poll() {
    let d = TempDir::new();
    let c = Controller::sqlite(d.path());
    let ctl = Novactl::at(&c, &c.admin);
    let host_token = register_host(&c, "h1", "http://127.0.0.1:9", 8, 8192);
    let vms = ctl.spawn(&["vm", "list", "--watch"]);
    let hosts = ctl.spawn(&["host", "list", "-w", "-o", "json"]);
    let ops = ctl.spawn(&["operation", "list", "--watch"]);
    vms.wait_for(Duration::from_secs(10), |l| l.text.starts_with("ID"));
    hosts.wait_for(Duration::from_secs(10), |l| l.text.contains("\"h1\""));
    ops.wait_for(Duration::from_secs(10), |l| l.text.starts_with("ID"));
    let before = list_calls(&c, "/v1/vms");
    std::thread::sleep(Duration::from_secs(2));
    heartbeat(&c, "h1", &host_token, 8, 8192).unwrap();
    assert_eq!(
        list_calls(&c, "/v1/vms"),
        before,
        "nothing changed: no new read"
    );

    // Cordoned first, so the scheduler cannot give h1 the VM below and the drain
    // finds the host empty however slowly this machine runs.
    ctl.ok(&["host", "cordon", "h1"]);
    hosts.wait_for(Duration::from_secs(10), |l| {
        l.text.contains("\"cordoned\":true")
    });
    ctl.ok(&["vm", "create", "web", "--kernel", "/k", "--no-start"]);
    vms.wait_for(Duration::from_secs(10), |l| l.text.contains(" web "));
    assert!(list_calls(&c, "/v1/vms") > before);
    // A drain of an empty host is an operation that ends at once.
    ctl.ok(&["host", "drain", "h1"]);
    ops.wait_for(Duration::from_secs(10), |l| {
        l.text.contains("drain") && l.text.contains("succeeded")
    });
    let t = text(&vms);
    assert!(
        t.matches("ID ").count() >= 2,
        "drawn again, below the first:\n{t}"
    );
}

#[test]
fn migrations_and_drains_show_progress_and_the_downtime_they_cost() {
    if !require_kvm() {
        return;
    }
    let d = TempDir::new();
    let c = Controller::sqlite(d.path());
    let (_h1, _h2) = (hostd_for(&c), hostd_for(&c));
    let ctl = Novactl::at(&c, &c.admin);
    wait_for(30, "two hosts ready", || {
        let hosts = ctl.json(&["host", "list"]);
        (hosts
            .as_array()?
            .iter()
            .filter(|h| h["state"] == "ready")
            .count()
            == 2)
            .then_some(())
    });
    let guest = testguest();
    let vm = ctl.json(&[
        "vm",
        "create",
        "web",
        "--kernel",
        guest.to_str().unwrap(),
        "--mem-mib",
        "64",
        "--cmdline",
        "nova.workload=counter",
    ]);
    let id = created_id(&vm);
    let v = wait_for(60, "the VM to run", || {
        let v = ctl.json(&["vm", "get", &id]);
        (v["observed"]["state"] == "running").then_some(v)
    });
    let src = v["host"].as_str().unwrap().to_string();
    let ops = ctl.spawn(&["op", "list", "--watch", "-o", "wide"]);

    // A migration followed to its end: progress on stderr (no terminal here), the
    // downtime on stdout.
    let r = ctl.run(&["vm", "migrate", &id]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.err.contains(&format!("migrate {id}:")) && r.err.contains("100% succeeded"),
        "{}",
        r.err
    );
    assert!(r.out.starts_with(&format!("{id}: {src} -> ")), "{}", r.out);
    assert!(
        r.out.contains("downtime ") && r.out.contains(" ms"),
        "{}",
        r.out
    );
    let dst = ctl.json(&["vm", "get", &id])["host"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(dst, src);
    ops.wait_for(Duration::from_secs(10), |l| {
        l.text.contains("migrate") && l.text.contains("succeeded")
    });

    // --no-wait hands back the operation; `operation wait` follows it later.
    let op = ctl.json(&["vm", "migrate", &id, "--to", &src, "--no-wait"]);
    let r = ctl.run(&["operation", "wait", op["id"].as_str().unwrap()]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.out.contains(&format!("{dst} -> {src}: downtime ")),
        "{}",
        r.out
    );
    // --wait after --no-wait: the last one given wins.
    let r = ctl.run(&["vm", "migrate", &id, "--no-wait", "--wait", "-o", "json"]);
    assert_eq!(r.code, 0, "{r:?}");
    let done: Value = serde_json::from_str(&r.out).unwrap();
    assert_eq!(done["state"], "succeeded");
    assert!(done["result"]["downtime_ms"].as_f64().is_some(), "{done}");
    let now = done["result"]["to"].as_str().unwrap().to_string();

    // A drain moves it away, with the downtime it saw.
    let r = ctl.run(&["host", "drain", &now]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.out.contains(&format!("{id}: {now} -> ")) && r.out.contains("downtime "),
        "{}",
        r.out
    );
    assert!(
        r.err.contains("drain") && r.err.contains("100% succeeded"),
        "{}",
        r.err
    );

    // The describe view: where it runs, what the host says, what happened to it.
    let view = wait_for(30, "the VM to run after the drain", || {
        let view = ctl.ok(&["vm", "get", &id]);
        view.contains("Observed:\n  State:            running")
            .then_some(view)
    });
    assert!(
        view.matches("migrate").count() >= 3,
        "its migrations:\n{view}"
    );
    assert!(
        view.contains("vm.migrated"),
        "the last events are its moves: {view}"
    );
    let wide = ctl.ok(&["op", "list", "-o", "wide"]);
    assert!(
        wide.lines().next().unwrap().contains("DOWNTIME_MS"),
        "{wide}"
    );
}

#[test]
fn events_resume_after_a_controller_restart_without_losing_or_repeating_one() {
    let d = TempDir::new();
    let port = free_port();
    let opts = Opts {
        port: Some(port),
        ..Opts::default()
    };
    let mut c = Controller::start(d.path(), opts.clone());
    let ctl = Novactl::at(&c, &c.admin);
    let first = created_id(&ctl.json(&["vm", "create", "a", "--kernel", "/k", "--no-start"]));
    let events = ctl.spawn(&["events", "--since", "0", "-o", "json"]);
    events.wait_for(Duration::from_secs(20), |l| l.text.contains(&first));
    c.kill();
    let c = Controller::start(d.path(), opts);
    let second = created_id(&ctl.json(&["vm", "create", "b", "--kernel", "/k", "--no-start"]));
    events.wait_for(Duration::from_secs(30), |l| l.text.contains(&second));
    let revisions: Vec<u64> = events
        .lines()
        .iter()
        .map(|l| {
            serde_json::from_str::<Value>(&l.text).unwrap()["revision"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert!(
        revisions.windows(2).all(|w| w[0] < w[1]),
        "in order, none twice: {revisions:?}"
    );
    drop(c);
}
