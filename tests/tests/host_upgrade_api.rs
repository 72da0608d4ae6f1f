//! The controller's host image upgrade API without booting an image (the TCG boots are
//! in host_image.rs): `--system-images` lists its versions newest first, and `POST
//! /v1/hosts/{id}/upgrade` names what is wrong (no such version, a host not on the
//! image, no `--system-images`). Against a real hostd that is not on the image, the
//! kernel and initramfs are streamed and staged (the hashes checked) and hostd then
//! refuses to write a slot it does not have.

use std::time::Duration;

use nova_controller_api::HostUpgradeRequest;
use nova_hostd_api::{HostInfo, RegisterRequest, RegisterResponse};
use nova_tests::controller::{block_on, host_info, refusal, Controller, Opts};
use nova_tests::hostd::{Hostd, Opts as HostdOpts};
use nova_tests::TempDir;

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
    };
    let _: RegisterResponse = block_on(c.as_(&c.join).http().post("/v1/hosts/register", &rq))
        .unwrap_or_else(|e| panic!("register {id}: {e}"));
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
    register(
        &c,
        "plain",
        "http://127.0.0.1:9",
        "hostd-secret",
        host_info("plain", 4, 4096),
    );
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
