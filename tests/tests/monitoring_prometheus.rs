//! NovaCron for users who run Prometheus: the shipped rules pass `promtool check
//! rules` (Debian's `prometheus` package).

use std::process::Command;

use nova_tests::{require, root, which};

#[test]
fn the_shipped_rules_pass_promtool() {
    if !require(which("promtool"), "promtool (Debian package prometheus)") {
        return;
    }
    let rules = root().join("deploy/prometheus/nova-rules.yml");
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
