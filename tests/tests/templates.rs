//! Templates through the controller with a real hostd and VMMs running the test
//! guest: a template with parameters instantiated cold (a boot) and as clones of a
//! golden snapshot (restored, memory shared copy-on-write, each with its own MAC,
//! hostname and instance id), versions and defaults, a bad parameter refused with
//! its name, and tenants that cannot see each other's templates; the same through
//! novactl and the dashboard's generated form. It is over 500 lines: each story keeps
//! its setup next to its checks.

use std::collections::BTreeMap;
use std::time::Duration;

use nova_controller_api::{
    CloudInit, HostState, Instantiate, InstantiateMode, NewSnapshot, NewTemplate, NicRequest,
    ParamKind, ParamValue, Role, TemplateParam, TemplateSource, Vm, VmSpec,
};
use nova_tests::controller::{block_on, refusal, status, wait_for, Controller};
use nova_tests::hostd::hostd_for;
use nova_tests::hostd::{testguest, Hostd};
use nova_tests::{require_kvm, TempDir};

const BOOT: Duration = Duration::from_secs(40);

fn wait_ready(c: &Controller) {
    wait_for(30, "the host to register", || {
        let hosts = block_on(c.api.hosts()).ok()?;
        hosts
            .iter()
            .any(|h| h.state == HostState::Ready)
            .then_some(())
    });
}

fn wait_running(c: &Controller, id: &str) -> Vm {
    wait_for(40, &format!("{id} to run"), || {
        let v = block_on(c.api.vm(id)).ok()?;
        (v.observed.as_ref()?.state == "running").then_some(v)
    })
}

fn param(name: &str, kind: ParamKind) -> TemplateParam {
    TemplateParam {
        name: name.into(),
        kind,
        description: None,
        default: None,
        required: false,
        min: None,
        max: None,
    }
}

fn counter(name: &str) -> VmSpec {
    VmSpec {
        mem_mib: 64,
        cmdline: Some("nova.workload=counter".into()),
        nics: vec![NicRequest::default()],
        cloud_init: Some(CloudInit {
            hostname: Some("golden".into()),
            ..Default::default()
        }),
        ..VmSpec::new(name, testguest().display().to_string())
    }
}

fn lines(h: &Hostd, id: &str) -> Vec<String> {
    h.ok(h.api().console(id, 10_000)).lines
}

fn with(pairs: &[(&str, ParamValue)]) -> BTreeMap<String, ParamValue> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

fn text(s: &str) -> ParamValue {
    ParamValue::Text(s.into())
}

#[test]
fn a_template_with_parameters_instantiates_cold_and_as_clones_with_their_own_identity() {
    if !require_kvm() {
        return;
    }
    let d = TempDir::new();
    let c = Controller::sqlite(d.path());
    let h = hostd_for(&c);
    wait_ready(&c);

    // An image template: vCPUs bounded with a default, a required hostname.
    let mut vcpus = param("vcpus", ParamKind::Integer);
    vcpus.min = Some(1);
    vcpus.max = Some(2);
    vcpus.default = Some(ParamValue::Integer(1));
    let mut hostname = param("hostname", ParamKind::Hostname);
    hostname.required = true;
    let image = NewTemplate {
        name: "counter".into(),
        description: Some("the test guest counting".into()),
        parameters: vec![vcpus.clone(), hostname.clone()],
        source: TemplateSource::Image(counter("base")),
        make_default: false,
        system: false,
    };
    let t = block_on(c.api.create_template(&image)).unwrap();
    assert_eq!((t.default_version, t.versions.len()), (1, 1));

    // A bad parameter is refused with its name.
    let inst = |name: &str, params| Instantiate {
        name: name.into(),
        parameters: params,
        mode: None,
        host: None,
    };
    for (params, field) in [
        (with(&[]), "parameters.hostname"),
        (
            with(&[("hostname", text("not_a_host"))]),
            "parameters.hostname",
        ),
        (
            with(&[("hostname", text("a")), ("vcpus", ParamValue::Integer(3))]),
            "parameters.vcpus",
        ),
        (
            with(&[("hostname", text("a")), ("vcpus", text("two"))]),
            "parameters.vcpus",
        ),
        (
            with(&[("hostname", text("a")), ("color", text("red"))]),
            "parameters.color",
        ),
    ] {
        let r = block_on(c.api.instantiate("counter", &inst("bad", params)));
        assert_eq!(refusal(r), (400, Some(field.to_string())));
    }
    // A schema that declares something a template cannot set is refused too.
    let mut wrong = image.clone();
    wrong.parameters = vec![param("cpus", ParamKind::Integer)];
    assert_eq!(
        refusal(block_on(c.api.create_template(&wrong))),
        (400, Some("parameters[0].name".into()))
    );

    // Cold: a boot of the image with the parameters applied.
    let cold = block_on(c.api.instantiate(
        "counter@1",
        &inst(
            "cold-1",
            with(&[
                ("hostname", text("cold-1")),
                ("vcpus", ParamValue::Integer(2)),
            ]),
        ),
    ))
    .unwrap();
    assert_eq!(cold.spec.vcpus, 2);
    wait_running(&c, &cold.id);
    h.wait_console(&cold.id, "NOVA-BOOTED", BOOT);
    let info = h.ok(h.api().vm(&cold.id));
    assert_eq!(
        info.spec.cloud_init.and_then(|ci| ci.hostname).as_deref(),
        Some("cold-1")
    );

    // Versions are immutable; a new one is not the default unless asked.
    let mut v2 = image.clone();
    v2.parameters = vec![hostname.clone()];
    let t = block_on(c.api.create_template(&v2)).unwrap();
    assert_eq!((t.default_version, t.versions.len()), (1, 2));
    let one = block_on(c.api.template("counter@1")).unwrap();
    assert_eq!(one.versions[0].parameters.len(), 2, "version 1 unchanged");
    let t = block_on(c.api.set_default_version("counter", 2)).unwrap();
    assert_eq!(t.default_version, 2);
    let r = block_on(c.api.instantiate(
        "counter",
        &inst(
            "v2",
            with(&[("hostname", text("a")), ("vcpus", ParamValue::Integer(1))]),
        ),
    ));
    assert_eq!(
        refusal(r),
        (400, Some("parameters.vcpus".into())),
        "the default (2) has no vcpus parameter"
    );

    // A golden snapshot of a running VM, and a template cloning it.
    let golden = block_on(c.api.create_vm(&counter("golden"), None)).unwrap();
    wait_running(&c, &golden.id);
    h.wait_console(&golden.id, "NOVA-TICK", BOOT);
    let snap = block_on(c.api.snapshot_vm(&golden.id, &NewSnapshot::default())).unwrap();
    let mut gold_host = param("hostname", ParamKind::Hostname);
    gold_host.default = Some(text("clone"));
    let tmpl = NewTemplate {
        name: "golden".into(),
        description: None,
        parameters: vec![gold_host],
        source: TemplateSource::Snapshot(snap.id.clone()),
        make_default: false,
        system: false,
    };
    block_on(c.api.create_template(&tmpl)).unwrap();
    let mut clones = vec![];
    for i in 0..2 {
        let name = format!("clone-{i}");
        let vm = block_on(
            c.api
                .instantiate("golden", &inst(&name, with(&[("hostname", text(&name))]))),
        )
        .unwrap();
        clones.push(vm);
    }
    let mut macs = vec![h.ok(h.api().vm(&golden.id)).nics[0].mac.clone()];
    for (i, vm) in clones.iter().enumerate() {
        wait_running(&c, &vm.id);
        h.wait_console(&vm.id, "NOVA-TICK", BOOT);
        let l = lines(&h, &vm.id);
        assert!(
            !l.iter().any(|l| l.starts_with("NOVA-BOOTED")),
            "a clone is restored, not booted: {:?}",
            &l[..l.len().min(3)]
        );
        let info = h.ok(h.api().vm(&vm.id));
        assert_eq!(
            info.spec.cloud_init.and_then(|ci| ci.hostname),
            Some(format!("clone-{i}")),
            "its own hostname in its guest configuration"
        );
        macs.push(info.nics[0].mac.clone());
        // Restored by the VMM's clone mode from the stored golden snapshot.
        let pid = info.pid.expect("a running clone has a VMM");
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        assert!(args.iter().any(|a| a == "--clone"), "{args:?}");
        assert!(
            args.iter()
                .any(|a| a.ends_with(&format!("snapshots/{}", snap.id))),
            "{args:?}"
        );
    }
    let unique_macs: std::collections::BTreeSet<_> = macs.iter().collect();
    assert_eq!(unique_macs.len(), 3, "each clone has its own MAC: {macs:?}");

    // The same template, cold: a boot of the spec the snapshot was taken of.
    let mut cold = inst("golden-cold", with(&[("hostname", text("gc"))]));
    cold.mode = Some(InstantiateMode::Cold);
    let vm = block_on(c.api.instantiate("golden", &cold)).unwrap();
    wait_running(&c, &vm.id);
    h.wait_console(&vm.id, "NOVA-BOOTED", BOOT);
    // An image template has nothing to clone: refused naming the mode.
    let mut clone = inst("nope", with(&[("hostname", text("x"))]));
    clone.mode = Some(InstantiateMode::Clone);
    assert_eq!(
        refusal(block_on(c.api.instantiate("counter", &clone))),
        (400, Some("mode".into()))
    );
}

#[test]
fn tenants_cannot_see_each_others_templates_but_all_see_system_ones() {
    if !require_kvm() {
        return;
    }
    let d = TempDir::new();
    let c = Controller::sqlite(d.path());
    let _h = hostd_for(&c);
    wait_ready(&c);
    let a = c.as_(&c.token_for("ta", "alice", Role::Operator));
    let b = c.as_(&c.token_for("tb", "bob", Role::Operator));
    let system = NewTemplate {
        name: "base".into(),
        description: None,
        parameters: vec![],
        source: TemplateSource::Image(counter("base")),
        make_default: false,
        system: true,
    };
    block_on(c.api.create_template(&system)).unwrap();
    // A tenant may not make a system template.
    assert_eq!(status(block_on(a.create_template(&system))), 403);

    let vm = block_on(c.api.create_vm_in(Some("ta"), &counter("a-vm"), None)).unwrap();
    wait_running(&c, &vm.id);
    let snap = block_on(a.snapshot_vm(&vm.id, &NewSnapshot::default())).unwrap();
    let mine = NewTemplate {
        name: "a-golden".into(),
        description: None,
        parameters: vec![],
        source: TemplateSource::Snapshot(snap.id.clone()),
        make_default: false,
        system: false,
    };
    block_on(a.create_template(&mine)).unwrap();
    // Bob cannot base a template on Alice's snapshot.
    assert_eq!(
        refusal(block_on(b.create_template(&mine))),
        (400, Some("source.snapshot".into()))
    );
    let names = |cl: &nova_controller_api::ControllerClient| -> Vec<String> {
        let mut n: Vec<String> = block_on(cl.templates())
            .unwrap()
            .into_iter()
            .map(|t| t.name)
            .collect();
        n.sort();
        n
    };
    assert_eq!(names(&a), ["a-golden", "base"]);
    assert_eq!(names(&b), ["base"]);
    assert_eq!(status(block_on(b.template("a-golden"))), 404);
    let inst = Instantiate {
        name: "stolen".into(),
        parameters: BTreeMap::new(),
        mode: None,
        host: None,
    };
    assert_eq!(status(block_on(b.instantiate("a-golden", &inst))), 404);
    assert!(block_on(b.template("base")).is_ok());
}

/// One run of the real novactl against `c` as the admin, with JSON output: its exit
/// code, stdout, stderr.
fn novactl(c: &Controller, args: &[&str]) -> (i32, String, String) {
    let home = TempDir::new();
    let out = std::process::Command::new(nova_tests::binary("novactl"))
        .args(["-o", "json"])
        .args(args)
        .env("HOME", home.path())
        .env("NOVA_URL", &c.url)
        .env("NOVA_TOKEN", &c.admin)
        .env_remove("NOVA_CONFIG")
        .env_remove("NOVA_CONTEXT")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// novactl that must succeed; its JSON output.
fn novactl_ok<T: serde::de::DeserializeOwned>(c: &Controller, args: &[&str]) -> T {
    let (code, out, err) = novactl(c, args);
    assert_eq!(code, 0, "novactl {args:?}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("novactl {args:?}: {e}: {out}"))
}

#[test]
fn novactl_snapshots_schedules_and_templates_from_the_command_line() {
    if !require_kvm() {
        return;
    }
    use nova_controller_api::{Snapshot, SnapshotSchedule, Template};
    let d = TempDir::new();
    let c = Controller::sqlite(d.path());
    let h = hostd_for(&c);
    wait_ready(&c);
    let host = block_on(c.api.hosts()).unwrap()[0].id.clone();
    let vm = block_on(c.api.create_vm(&counter("cli"), None)).unwrap();
    wait_running(&c, &vm.id);
    h.wait_console(&vm.id, "NOVA-TICK", BOOT);

    let snap: Snapshot = novactl_ok(
        &c,
        &["vm", "snapshot", "create", &vm.id, "--name", "by-cli"],
    );
    assert_eq!(snap.name, "by-cli");
    let listed: Vec<Snapshot> = novactl_ok(&c, &["vm", "snapshot", "list", &vm.id]);
    assert_eq!(listed.len(), 1);
    let all: Vec<Snapshot> = novactl_ok(&c, &["vm", "snapshot", "list"]);
    assert_eq!(all.len(), 1);

    // A schedule with every keep rule, as the flags say.
    let s: SnapshotSchedule = novactl_ok(
        &c,
        &[
            "vm",
            "snapshot",
            "schedule",
            &vm.id,
            "--every",
            "1",
            "--keep-last",
            "1",
            "--keep-hourly",
            "2",
            "--keep-daily",
            "3",
            "--keep-weekly",
            "4",
        ],
    );
    assert_eq!(s.every_secs, 1);
    assert_eq!(
        (s.keep.last, s.keep.hourly, s.keep.daily, s.keep.weekly),
        (1, 2, 3, 4)
    );
    wait_for(30, "a scheduled snapshot", || {
        block_on(c.api.vm_snapshots(&vm.id))
            .ok()?
            .iter()
            .any(|s| s.scheduled)
            .then_some(())
    });
    let (code, _, err) = novactl(&c, &["vm", "snapshot", "schedule", &vm.id, "--off"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(status(block_on(c.api.snapshot_schedule(&vm.id))), 404);

    // Restore into a new VM on a named host.
    let copy: Vm = novactl_ok(
        &c,
        &[
            "vm", "snapshot", "restore", &snap.id, "--new-vm", "cli-copy", "--host", &host,
        ],
    );
    assert_eq!(copy.host.as_deref(), Some(host.as_str()));
    h.wait_console(&copy.id, "NOVA-TICK", BOOT);

    // A template version from a file, listed, shown, instantiated both ways.
    let file = d.join("t.json");
    let mut hostname = param("hostname", ParamKind::Hostname);
    hostname.required = true;
    let body = NewTemplate {
        name: "cli-golden".into(),
        description: None,
        parameters: vec![hostname],
        source: TemplateSource::Snapshot(snap.id.clone()),
        make_default: false,
        system: false,
    };
    std::fs::write(&file, serde_json::to_vec(&body).unwrap()).unwrap();
    let t: Template = novactl_ok(
        &c,
        &["template", "create", "--file", &file.display().to_string()],
    );
    assert_eq!(t.versions.len(), 1);
    let t: Template = novactl_ok(
        &c,
        &["template", "create", "-f", &file.display().to_string()],
    );
    assert_eq!(t.versions.len(), 2);
    let listed: Vec<Template> = novactl_ok(&c, &["template", "list"]);
    assert_eq!(listed.len(), 1);
    let one: Template = novactl_ok(&c, &["template", "show", "cli-golden@2"]);
    assert_eq!(
        one.versions.iter().map(|v| v.version).collect::<Vec<_>>(),
        [2]
    );
    let t: Template = novactl_ok(&c, &["template", "default", "cli-golden", "2"]);
    assert_eq!(t.default_version, 2);
    let clone: Vm = novactl_ok(
        &c,
        &[
            "template",
            "instantiate",
            "cli-golden",
            "--name",
            "cli-clone",
            "--param",
            "hostname=cli-clone",
            "--host",
            &host,
        ],
    );
    h.wait_console(&clone.id, "NOVA-TICK", BOOT);
    let cold: Vm = novactl_ok(
        &c,
        &[
            "template",
            "instantiate",
            "cli-golden@1",
            "--name",
            "cli-cold",
            "--param",
            "hostname=cli-cold",
            "--mode",
            "cold",
        ],
    );
    wait_running(&c, &cold.id);
    h.wait_console(&cold.id, "NOVA-BOOTED", BOOT);
    // A bad parameter: a failed exit naming it.
    let (code, _, err) = novactl(
        &c,
        &[
            "template",
            "instantiate",
            "cli-golden",
            "--name",
            "x",
            "--param",
            "hostname=no_such",
        ],
    );
    assert_ne!(code, 0);
    assert!(err.contains("parameters.hostname"), "{err}");

    let (code, _, err) = novactl(&c, &["vm", "snapshot", "delete", &snap.id]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(status(block_on(c.api.snapshot(&snap.id))), 404);
}

#[test]
fn the_dashboard_generates_the_vm_form_from_a_templates_parameters() {
    if !require_kvm() {
        return;
    }
    let ui = nova_tests::root().join("controller/ui");
    let node = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !nova_tests::require(
        node && ui.join("node_modules/playwright-core").exists()
            && std::path::Path::new("/usr/bin/chromium").exists(),
        "node, controller/ui/node_modules (make ui-deps) or /usr/bin/chromium is missing",
    ) {
        return;
    }
    let d = TempDir::new();
    let c = Controller::sqlite(d.path());
    let _h = hostd_for(&c);
    wait_ready(&c);
    let mut vcpus = param("vcpus", ParamKind::Integer);
    vcpus.min = Some(1);
    vcpus.max = Some(2);
    vcpus.default = Some(ParamValue::Integer(1));
    let mut hostname = param("hostname", ParamKind::Hostname);
    hostname.required = true;
    block_on(c.api.create_template(&NewTemplate {
        name: "counter".into(),
        description: None,
        parameters: vec![vcpus, hostname],
        source: TemplateSource::Image(counter("base")),
        make_default: false,
        system: true,
    }))
    .unwrap();
    let out = std::process::Command::new("node")
        .arg(nova_tests::root().join("tests/browser/template-form.mjs"))
        .env("NOVA_URL", &c.url)
        .env("NOVA_UI_DIR", &ui)
        .env(
            "NOVA_SCREENSHOTS",
            nova_tests::root().join("docs/screenshots"),
        )
        .env("NOVA_TOKEN", &c.admin)
        .env("CHROMIUM", "/usr/bin/chromium")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "the browser story failed:\n{text}");
    let id = text
        .lines()
        .find_map(|l| l.strip_prefix("CREATED "))
        .unwrap_or_else(|| panic!("no CREATED line:\n{text}"));
    let vm = block_on(c.api.vm(id)).unwrap();
    assert_eq!(vm.spec.vcpus, 2, "what was typed reached the spec");
    assert_eq!(
        vm.spec.cloud_init.and_then(|ci| ci.hostname).as_deref(),
        Some("ui-1")
    );
    wait_running(&c, id);
}
