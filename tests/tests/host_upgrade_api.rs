//! The controller's host image upgrade API without booting an image (the TCG boots are
//! in host_image.rs): `--system-images` lists its versions newest first, and `POST
//! /v1/hosts/{id}/upgrade` names what is wrong (no such version, a host not on the
//! image, no `--system-images`). Against a real hostd that is not on the image, the
//! kernel and initramfs are streamed and staged (the hashes checked) and hostd then
//! refuses to write a slot it does not have. `novactl host upgrade` and `cluster
//! upgrade` follow the controller's events and fail at once with the host's reason.
//! Signed images: `novactl host-image keygen/sign`, and a hostd trusting a key takes
//! only what that key signed (unsigned, another key's, or altered files refused).
//! `POST /v1/hosts/{id}/power` (`novactl host poweroff|reboot`) reaches only hosts on
//! the image, and a hostd not running under nova-init refuses it (its machine's PID 1
//! is never signalled); the power-off itself is booted in host_image.rs.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use nova_controller_api::{HostUpgradeRequest, PowerAction, SystemPower};
use nova_hostd_api::{HostInfo, RegisterRequest, RegisterResponse};
use nova_tests::controller::{block_on, host_info, refusal, Controller, Opts};
use nova_tests::hostd::{Hostd, Opts as HostdOpts};
use nova_tests::{binary, TempDir};

fn version_dir(root: &std::path::Path, v: &str, kernel: &[u8], initrd: Option<&[u8]>) {
    let d = root.join(v);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("vmlinuz"), kernel).unwrap();
    if let Some(i) = initrd {
        std::fs::write(d.join("initrd.img"), i).unwrap();
    }
    // Directory times order the versions: one second apart.
    std::thread::sleep(Duration::from_millis(1100));
}

fn register(c: &Controller, id: &str, url: &str, token: &str, info: HostInfo) {
    let rq = RegisterRequest {
        host_id: id.into(),
        hostname: id.into(),
        url: url.into(),
        token: token.into(),
        info,
        tls_key: None,
    };
    let _: RegisterResponse = block_on(c.as_(&c.join).http().post("/v1/hosts/register", &rq))
        .unwrap_or_else(|e| panic!("register {id}: {e}"));
}

/// Registers host `plain`, which does not run from the host image.
fn register_plain(c: &Controller) {
    register(
        c,
        "plain",
        "http://127.0.0.1:9",
        "hostd-secret",
        host_info("plain", 4, 4096),
    );
}

#[test]
fn without_system_images_the_controller_says_so() {
    let dir = TempDir::new();
    let c = Controller::sqlite(dir.path());
    let e = block_on(c.api.system_images()).unwrap_err();
    assert_eq!(e.status(), Some(409));
    assert!(e.to_string().contains("--system-images"), "{e}");
}

#[test]
fn upgrades_name_the_bad_version_the_host_off_the_image_and_stage_on_a_real_hostd() {
    let dir = TempDir::new();
    let images = dir.join("images");
    version_dir(&images, "1.0", b"kernel-1", Some(b"initrd-1"));
    version_dir(&images, "half", b"kernel-h", None);
    version_dir(&images, "2.0", b"kernel-2", Some(&vec![7u8; 3 << 20]));
    let c = Controller::start(
        dir.path(),
        Opts {
            args: vec!["--system-images".into(), images.display().to_string()],
            ..Default::default()
        },
    );
    let list = block_on(c.api.system_images()).unwrap().images;
    let names: Vec<&str> = list.iter().map(|i| i.version.as_str()).collect();
    assert_eq!(
        names,
        ["2.0", "1.0"],
        "newest first, incomplete ones left out"
    );
    assert_eq!(list[0].initrd_bytes, 3 << 20);

    // A host not on the image has nothing to upgrade.
    register_plain(&c);
    let e = block_on(c.api.upgrade_host("plain", &HostUpgradeRequest::default())).unwrap_err();
    assert_eq!(e.status(), Some(409), "{e}");
    assert!(
        e.to_string().contains("does not run from the host image"),
        "{e}"
    );
    let (s, _) = refusal(block_on(
        c.api.upgrade_host("nosuch", &HostUpgradeRequest::default()),
    ));
    assert_eq!(s, 404);

    // A real hostd, reported as on the image: the files are staged, hashes checked,
    // and hostd refuses the slot write (it runs from no host image's disk).
    let h = Hostd::start(HostdOpts::default());
    let mut info = host_info("imaged", 4, 4096);
    info.image_version = Some("1.0".into());
    register(&c, "imaged", &format!("http://{}", h.addr), &h.token, info);
    let bad = HostUpgradeRequest {
        image: Some("../1.0".into()),
    };
    let (s, e) = refusal(block_on(c.api.upgrade_host("imaged", &bad)));
    assert_eq!((s, e.as_deref()), (400, Some("image")));
    let missing = HostUpgradeRequest {
        image: Some("3.0".into()),
    };
    let (s, _) = refusal(block_on(c.api.upgrade_host("imaged", &missing)));
    assert_eq!(s, 400);
    // Accepted at once; the files are streamed and staged, and hostd then refuses.
    let up = block_on(c.api.upgrade_host("imaged", &HostUpgradeRequest::default())).unwrap();
    assert_eq!(up.to_version, "2.0");
    assert_eq!(up.from_version.as_deref(), Some("1.0"));
    let staged = h.data().join("system-staging");
    nova_tests::wait_for(30, "the upgrade to fail on the hostd", || {
        c.log().contains("host image's disk").then_some(())
    });
    assert_eq!(std::fs::read(staged.join("kernel")).unwrap(), b"kernel-2");
    assert_eq!(
        std::fs::metadata(staged.join("initrd")).unwrap().len(),
        3 << 20
    );
    let sys = block_on(h.api().system()).unwrap();
    assert!(!sys.upgradable && sys.slot.is_none(), "{sys:?}");
}

/// Runs novactl against `c` as its admin; (success, stdout, stderr).
fn novactl(c: &Controller, home: &Path, args: &[&str]) -> (bool, String, String) {
    let out: Output = Command::new(binary("novactl"))
        .args(args)
        .env("HOME", home)
        .env("NOVA_URL", &c.url)
        .env("NOVA_TOKEN", &c.admin)
        .env_remove("NOVA_CONFIG")
        .env_remove("NOVA_CONTEXT")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A controller holding `versions` (each a kernel and an initrd) and a real hostd
/// started with `hostd_args`, registered as on image 1.0.
fn cluster_of_one(
    dir: &TempDir,
    versions: &[&str],
    hostd_args: Vec<String>,
) -> (Controller, Hostd, std::path::PathBuf) {
    let images = dir.join("images");
    for v in versions {
        version_dir(
            &images,
            v,
            format!("kernel-{v}").as_bytes(),
            Some(b"initrd"),
        );
    }
    let c = Controller::start(
        dir.path(),
        Opts {
            args: vec!["--system-images".into(), images.display().to_string()],
            ..Default::default()
        },
    );
    let h = Hostd::start(HostdOpts {
        args: hostd_args,
        ..Default::default()
    });
    let mut info = host_info("imaged", 4, 4096);
    info.image_version = Some("1.0".into());
    register(&c, "imaged", &format!("http://{}", h.addr), &h.token, info);
    (c, h, images)
}

#[test]
fn power_reaches_only_hosts_on_the_image_and_a_hostd_off_it_refuses() {
    let dir = TempDir::new();
    let (c, h, _) = cluster_of_one(&dir, &["2.0"], vec![]);
    let off = SystemPower {
        action: PowerAction::Poweroff,
    };
    // A host that does not run from the image: the controller does not ask it.
    register_plain(&c);
    let e = block_on(c.api.power_host("plain", &off)).unwrap_err();
    assert_eq!(e.status(), Some(409), "{e}");
    assert!(e.to_string().contains("through its own OS"), "{e}");
    let (s, _) = refusal(block_on(c.api.power_host("nosuch", &off)));
    assert_eq!(s, 404);
    let bad: serde_json::Value = serde_json::from_str(r#"{"action":"hibernate"}"#).unwrap();
    let r: Result<SystemPower, _> = block_on(c.api.http().post("/v1/hosts/imaged/power", &bad));
    let (s, field) = refusal(r);
    assert_eq!((s, field.as_deref()), (400, Some("action")));

    // A host reported as on the image, whose hostd is not under nova-init: hostd
    // refuses, and says why through the controller and novactl.
    let reboot = SystemPower {
        action: PowerAction::Reboot,
    };
    let e = block_on(h.api().power_system(&reboot)).unwrap_err();
    assert_eq!(e.status(), Some(409), "{e}");
    let e = block_on(c.api.power_host("imaged", &reboot)).unwrap_err();
    assert_eq!(e.status(), Some(502), "{e}");
    assert!(
        e.to_string().contains("does not run from the host image"),
        "{e}"
    );
    let (ok, _, err) = novactl(&c, dir.path(), &["host", "poweroff", "imaged"]);
    assert!(!ok, "{err}");
    assert!(err.contains("does not run from the host image"), "{err}");
    // And it is still there, serving.
    assert!(block_on(h.api().system()).is_ok());
}

#[test]
fn novactl_host_and_cluster_upgrade_fail_at_once_with_the_hosts_reason() {
    let dir = TempDir::new();
    let (c, _h, _) = cluster_of_one(&dir, &["2.0"], vec![]);
    // The hostd runs from no host image's disk: it refuses the slot write, and the
    // controller publishes host.upgrade_failed with its answer. novactl would wait
    // 600 s for a Ready host on 2.0; it stops at the event instead.
    let (ok, _, err) = novactl(
        &c,
        dir.path(),
        &["host", "upgrade", "imaged", "--timeout-s", "600"],
    );
    assert!(!ok, "{err}");
    assert!(err.contains("the upgrade to 2.0 failed"), "{err}");
    assert!(
        err.contains("host image's disk"),
        "the host's reason: {err}"
    );
    assert!(err.contains("the host stays on 1.0"), "{err}");
    assert!(!err.contains("is not Ready on"), "not the timeout: {err}");

    // The rolling upgrade drains the host, fails the same way, stops there and puts
    // the host back in service.
    let (ok, _, err) = novactl(
        &c,
        dir.path(),
        &["cluster", "upgrade", "--timeout-s", "600"],
    );
    assert!(!ok, "{err}");
    assert!(err.contains("draining"), "{err}");
    assert!(err.contains("rolling upgrade stopped"), "{err}");
    assert!(err.contains("host image's disk"), "{err}");
    assert!(err.contains("host imaged: uncordoned"), "{err}");
    assert!(!block_on(c.api.host("imaged")).unwrap().cordoned);
}

#[test]
fn a_host_trusting_a_key_installs_only_images_that_key_signed() {
    let dir = TempDir::new();
    let home = dir.path();
    // Two keys: the operator's (trusted) and another one.
    let keygen = |name: &str| {
        let key = dir.join(name);
        let (ok, out, err) = novactl_offline(
            home,
            &["host-image", "keygen", "--out", &key.display().to_string()],
        );
        assert!(ok, "{err}");
        let public = out.trim().to_string();
        assert_eq!(public.len(), 64, "{out}");
        (key, public)
    };
    let (key, public) = keygen("trusted.key");
    let (other_key, _) = keygen("other.key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let (ok, _, err) = novactl_offline(
        home,
        &["host-image", "keygen", "--out", &key.display().to_string()],
    );
    assert!(
        !ok && err.contains("--out"),
        "an existing key is never overwritten: {err}"
    );
    let (_, out, _) = novactl_offline(
        home,
        &["host-image", "pubkey", "--key", &key.display().to_string()],
    );
    assert_eq!(out.trim(), public);

    let (c, h, images) = cluster_of_one(
        &dir,
        &["2.0-unsigned", "3.0-other", "4.0-altered", "5.0-good"],
        vec!["--trusted-image-key".into(), public.clone()],
    );
    let sign = |key: &Path, v: &str| {
        let (ok, _, err) = novactl_offline(
            home,
            &[
                "host-image",
                "sign",
                "--key",
                &key.display().to_string(),
                &images.join(v).display().to_string(),
            ],
        );
        assert!(ok, "{err}");
    };
    sign(&other_key, "3.0-other");
    sign(&key, "4.0-altered");
    sign(&key, "5.0-good");
    // Changed after signing: the signature no longer covers these bytes.
    std::fs::write(images.join("4.0-altered/initrd.img"), b"initrd, altered").unwrap();

    // The host says what it trusts; the controller which key signed each version.
    let sys = block_on(h.api().system()).unwrap();
    assert_eq!(sys.trusted_image_keys, vec![public.clone()]);
    let list = block_on(c.api.system_images()).unwrap().images;
    let signer = |v: &str| {
        list.iter()
            .find(|i| i.version == v)
            .unwrap()
            .signed_by
            .clone()
    };
    assert_eq!(signer("2.0-unsigned"), None);
    assert_eq!(signer("5.0-good").as_deref(), Some(public.as_str()));
    assert_ne!(signer("3.0-other").as_deref(), Some(public.as_str()));

    let upgrade = |v: &str| {
        let (ok, _, err) = novactl(
            &c,
            home,
            &[
                "host",
                "upgrade",
                "imaged",
                "--image",
                v,
                "--timeout-s",
                "600",
            ],
        );
        assert!(!ok, "{err}");
        err
    };
    let err = upgrade("2.0-unsigned");
    assert!(err.contains("is not signed"), "{err}");
    let err = upgrade("3.0-other");
    assert!(err.contains("which this host does not trust"), "{err}");
    let err = upgrade("4.0-altered");
    assert!(err.contains("does not verify"), "{err}");
    // None of them reached the slot: refused before it was looked for.
    assert!(
        !h.stderr().contains("image signature verified"),
        "{}",
        h.stderr()
    );
    // The good one passes the signature check; this hostd then has no slot to write.
    let err = upgrade("5.0-good");
    assert!(err.contains("host image's disk"), "{err}");
    assert!(
        h.stderr().contains("image signature verified"),
        "{}",
        h.stderr()
    );
    let sys = block_on(h.api().system()).unwrap();
    assert_eq!(sys.image_version, None, "the host stays as it was: {sys:?}");
}

/// novactl's offline commands (no controller).
fn novactl_offline(home: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(binary("novactl"))
        .args(args)
        .env("HOME", home)
        .env_remove("NOVA_URL")
        .env_remove("NOVA_CONFIG")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
