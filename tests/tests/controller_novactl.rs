//! novactl against a real controller: what a person types and what a script reads.

use std::process::Command;

use nova_tests::controller::*;
use nova_tests::{binary, TempDir};
use serde_json::Value;

fn novactl(c: &Controller, token: &str, args: &[&str]) -> (bool, String, String) {
    let o = Command::new(binary("novactl"))
        .args(args)
        .env("NOVA_URL", &c.url)
        .env("NOVA_TOKEN", token)
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).to_string(),
        String::from_utf8_lossy(&o.stderr).to_string(),
    )
}

#[test]
fn novactl_drives_the_api_and_speaks_json_for_scripts() {
    let d = TempDir::new();
    let c = Controller::sqlite(d.path());
    let (ok, _, e) = novactl(
        &c,
        &c.admin,
        &["tenant", "create", "acme", "--quota-vms", "5"],
    );
    assert!(ok, "{e}");
    let (ok, _, e) = novactl(
        &c,
        &c.admin,
        &[
            "user", "create", "olga", "--role", "operator", "--tenant", "acme",
        ],
    );
    assert!(ok, "{e}");
    let (ok, secret, e) = novactl(&c, &c.admin, &["token", "create", "olga"]);
    assert!(ok, "{e}");
    let olga = secret.trim();
    let (ok, table, e) = novactl(
        &c,
        olga,
        &[
            "vm",
            "create",
            "--name",
            "web",
            "--image",
            "/k",
            "--mem-mib",
            "128",
            "--label",
            "app=web",
            "--no-start",
        ],
    );
    assert!(ok, "{e}");
    assert!(
        table.starts_with("ID") && table.contains("web") && table.contains("acme"),
        "{table}"
    );
    let (ok, json, _) = novactl(&c, olga, &["vm", "list", "-o", "json"]);
    assert!(ok);
    let vms: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(vms[0]["spec"]["labels"]["app"], "web");
    let id = vms[0]["id"].as_str().unwrap();
    let (ok, _, _) = novactl(&c, olga, &["vm", "start", id]);
    assert!(ok);
    let (_, who, _) = novactl(&c, olga, &["whoami", "-o", "json"]);
    assert_eq!(
        serde_json::from_str::<Value>(&who).unwrap()["role"],
        "operator"
    );
    // Errors go to stderr with the API's reason and a failing exit status.
    let (ok, _, e) = novactl(
        &c,
        olga,
        &[
            "vm", "create", "--name", "bad", "--image", "/k", "--vcpus", "0",
        ],
    );
    assert!(!ok && e.contains("vcpus"), "{e}");
    let (ok, _, e) = novactl(&c, olga, &["host", "list"]);
    assert!(!ok && e.contains("403"), "{e}");
    let (ok, _, e) = novactl(&c, "nova_nope", &["vm", "list"]);
    assert!(!ok && e.contains("401"), "{e}");
    let (ok, audit, _) = novactl(&c, &c.admin, &["audit", "-o", "json"]);
    assert!(ok && audit.contains("/v1/vms"), "{audit}");
}
