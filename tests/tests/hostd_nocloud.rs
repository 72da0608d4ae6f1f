//! Guest configuration, cloud-init NoCloud: a VM spec's `cloud_init` (hostname, SSH
//! keys, user-data, network config) becomes a read-only FAT disk labelled `cidata`,
//! the VM's last, holding `meta-data`, `user-data` and `network-config`; the VM boots
//! with it attached. The seed is read back here with the `fatfs` crate, as a guest's
//! FAT driver would read it, and the Linux guest agent (host mode) applies its
//! hostname and SSH keys. Bad values are refused naming the field.

use std::io::Read;
use std::time::Duration;

use nova_hostd_api::{CloudInit, VmState};
use nova_tests::controller::block_on;
use nova_tests::hostd::{guest, Hostd, Opts};
use nova_tests::require_kvm;

const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHh0ZXN0a2V5 ops@laptop";

fn read_fat(path: &str) -> (String, Vec<(String, String)>) {
    let f = std::fs::File::open(path).unwrap();
    let fs = fatfs::FileSystem::new(f, fatfs::FsOptions::new()).unwrap();
    let label = fs.volume_label().trim_end().to_string();
    let mut files = Vec::new();
    for e in fs.root_dir().iter() {
        let e = e.unwrap();
        if e.is_file() {
            let mut body = String::new();
            e.to_file().read_to_string(&mut body).unwrap();
            files.push((e.file_name(), body));
        }
    }
    (label, files)
}

#[test]
fn a_vm_with_cloud_init_boots_with_a_readable_read_only_cidata_seed_as_its_last_disk() {
    if !require_kvm() {
        return;
    }
    let h = Hostd::start(Opts::default());
    let mut spec = guest("ci", "idle");
    spec.cloud_init = Some(CloudInit {
        hostname: Some("web-1".into()),
        ssh_authorized_keys: vec![KEY.into()],
        user_data: Some("#cloud-config\nruncmd: [\"echo hi\"]\n".into()),
        network_config: Some("version: 2\nethernets:\n  eth0:\n    dhcp4: true\n".into()),
    });
    let info = h.create_vm(&spec);
    h.wait_state("ci", VmState::Running, Duration::from_secs(30));
    h.wait_console("ci", "NOVA-BOOTED", Duration::from_secs(30));
    let seed = info.disks.last().expect("a seed disk");
    assert!(seed.read_only, "the seed is attached read-only");
    assert!(seed.path.ends_with("seed.img"), "{}", seed.path);

    let (label, files) = read_fat(&seed.path);
    assert_eq!(label, "cidata");
    let get = |n: &str| {
        files
            .iter()
            .find(|(f, _)| f == n)
            .map(|(_, b)| b.clone())
            .unwrap_or_else(|| panic!("no {n} in {files:?}"))
    };
    let meta = get("meta-data");
    assert!(meta.contains("instance-id: ci\n"), "{meta}");
    assert!(meta.contains("local-hostname: web-1\n"), "{meta}");
    assert!(meta.contains(KEY), "{meta}");
    assert_eq!(get("user-data"), "#cloud-config\nruncmd: [\"echo hi\"]\n");
    assert!(get("network-config").contains("dhcp4: true"));

    // The Linux guest's agent applies the seed's hostname and keys. It runs here in
    // host mode against the same image, into a scratch root: under PVM no Linux
    // userland runs (see docs/pvm.md), so as pid 1 in a guest it is unproven here.
    let root = nova_tests::TempDir::new();
    let out = std::process::Command::new(nova_tests::binary("nova-agent"))
        .args([
            "--cmdline",
            "nova.workload=poweroff",
            "--seed",
            &seed.path,
            "--root",
        ])
        .arg(root.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("NOVA-CLOUDINIT hostname=web-1 keys=1"),
        "{text}"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("etc/hostname")).unwrap(),
        "web-1\n"
    );
    let keys = root.join("root/.ssh/authorized_keys");
    assert_eq!(std::fs::read_to_string(&keys).unwrap(), format!("{KEY}\n"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&keys).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // Bad input is refused, naming the field.
    let mut bad = guest("bad", "idle");
    bad.cloud_init = Some(CloudInit {
        hostname: Some("no_underscores".into()),
        ..Default::default()
    });
    let e = block_on(h.api().create(&bad)).unwrap_err();
    assert_eq!(e.status(), Some(400));
    assert_eq!(
        e.body().and_then(|b| b.field.as_deref()),
        Some("cloud_init.hostname")
    );
    bad.cloud_init = Some(CloudInit {
        ssh_authorized_keys: vec!["ssh-rsa AAAA\nroot".into()],
        ..Default::default()
    });
    let e = block_on(h.api().create(&bad)).unwrap_err();
    assert_eq!(
        e.body().and_then(|b| b.field.as_deref()),
        Some("cloud_init.ssh_authorized_keys[0]")
    );
}
