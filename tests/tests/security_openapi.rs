//! schemathesis (PyPI; `make deps` installs it) against both OpenAPI documents, the
//! controller's and hostd's, served by real daemons with an admin / host token: every
//! generated request (coverage and fuzzing phases) must answer without a 5xx and as
//! the document says (status, content type, body schema).

use std::process::Command;

use nova_tests::controller::{Controller, Opts};
use nova_tests::hostd::{self, Hostd};
use nova_tests::TempDir;

/// Whether schemathesis can be imported by `python3`.
fn have_schemathesis() -> bool {
    Command::new("python3")
        .args(["-c", "import schemathesis"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs `st run` on `base`'s document with `token`; panics with its report on a
/// failure.
fn schemathesis(base: &str, token: &str, exclude: &[&str]) {
    let mut cmd = Command::new("python3");
    cmd.args([
        "-c",
        "import sys; from schemathesis.cli import schemathesis; sys.argv[0] = 'st'; schemathesis()",
        "run",
        &format!("{base}/v1/openapi.json"),
        "-H",
        &format!("Authorization: Bearer {token}"),
        "--checks",
        "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance",
        "--phases",
        "coverage,fuzzing",
        "--max-examples",
        "10",
        "--seed",
        "12",
        "--request-timeout",
        "20",
    ]);
    for p in exclude {
        cmd.args(["--exclude-path", p]);
    }
    cmd.env("SCHEMATHESIS_HOOKS", "").env("NO_COLOR", "1");
    let out = cmd.output().expect("python3");
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "schemathesis on {base}:\n{report}");
    assert!(report.contains("passed"), "{report}");
}

#[test]
fn the_controller_answers_every_generated_request_as_its_document_says() {
    if !nova_tests::require(
        have_schemathesis(),
        "schemathesis is not installed (make deps)",
    ) {
        return;
    }
    let d = TempDir::new();
    // Generated data hits the limiter only through its own bad tokens: never block.
    let c = Controller::start(
        d.path(),
        Opts {
            max_failed_auth: 1_000_000,
            ..Opts::default()
        },
    );
    // The event stream and the console are WebSockets, not requests and answers
    // schemathesis can judge (their refusals are tested in controller_events.rs and
    // controller_console.rs).
    schemathesis(&c.url, &c.admin, &["/v1/events", "/v1/vms/{id}/console/ws"]);
    assert!(c.log().contains("API on"), "the controller kept running");
}

#[test]
fn hostd_answers_every_generated_request_as_its_document_says() {
    if !nova_tests::require(
        have_schemathesis(),
        "schemathesis is not installed (make deps)",
    ) {
        return;
    }
    let roots = TempDir::new();
    let h = Hostd::start(hostd::Opts {
        args: vec!["--image-root".into(), roots.path().display().to_string()],
        ..Default::default()
    });
    // The console is a WebSocket (its refusals: hostd_console.rs).
    schemathesis(
        &format!("http://{}", h.addr),
        &h.token,
        &["/v1/vms/{id}/console/ws"],
    );
    h.ok(h.api().health());
}
