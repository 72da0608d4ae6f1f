//! What the host image is told: `nova.KEY=VALUE` words on the kernel command line and
//! `KEY=VALUE` lines of a `nova.conf` file (on the EFI or data partition); the command
//! line wins. [`Config::parse`] checks every value and names every key that is wrong,
//! all of them at once, so one reboot fixes them all. It is over 500 lines: the key
//! table and its tests, one per key, belong together.

use std::net::Ipv4Addr;
use std::path::PathBuf;

/// The GPT partition label of the data partition, unless `nova.data_label=` says.
pub const DEFAULT_DATA_LABEL: &str = "nova-data";
/// hostd's API port, unless `nova.listen_port=` says.
pub const DEFAULT_LISTEN_PORT: u16 = 7070;

/// Every key wrong in the input, each with what is wrong.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("bad host configuration: {}", .0.join("; "))]
pub struct ConfigError(pub Vec<String>);

/// How the host gets its address.
#[derive(Debug, Clone, PartialEq)]
pub enum IpConfig {
    /// `nova.ip=dhcp` (the default).
    Dhcp,
    /// `nova.ip=ADDR/PREFIX[,GATEWAY]`.
    Static {
        addr: Ipv4Addr,
        prefix: u8,
        gateway: Option<Ipv4Addr>,
    },
}

/// The host image's configuration, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Controller URL (`http://` or `https://`); hostd runs standalone without one.
    pub controller: Option<String>,
    /// The controller's join token (needs `controller`).
    pub join_token: Option<String>,
    /// PEM file of the CA that signs the controller's (and other hosts') certificates.
    pub ca: Option<PathBuf>,
    /// That CA's PEM itself (`nova.ca_b64=`, base64 of the PEM file, or EC2
    /// user-data's `ca_pem`): for a host with no partition to keep a file on.
    pub ca_pem: Option<String>,
    /// Read the controller, join token and CA from the EC2 instance metadata service
    /// at this base URL (`nova.config=imds`; `nova.imds_url=` for another endpoint).
    pub imds: Option<String>,
    /// vCPUs admitted per physical core (hostd `--cpu-overcommit`).
    pub cpu_overcommit: Option<f64>,
    /// Guest MiB admitted per host MiB (hostd `--mem-overcommit`).
    pub mem_overcommit: Option<f64>,
    pub ip: IpConfig,
    /// The NIC to configure; the first Ethernet device when unset.
    pub iface: Option<String>,
    /// Modules to load beyond the image's list, by name.
    pub modules: Vec<String>,
    /// GPT partition label of the data partition.
    pub data_label: String,
    /// Format the data partition when it holds no file system.
    pub format_data: bool,
    pub listen_port: u16,
    /// Serve hostd's API over plain HTTP (tests only).
    pub insecure_http: bool,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub hostname: Option<String>,
    /// An SNTP server to set the clock from at boot.
    pub ntp: Option<Ipv4Addr>,
    /// Log at debug level (nova-init and hostd).
    pub debug: bool,
    /// The system slot booted (`a` or `b`), told by the boot loader.
    pub slot: Option<char>,
    /// How long a boot on trial (a new slot, booted once) has for its hostd to
    /// register with the controller before nova-init reboots into the previous slot.
    pub trial_secs: u64,
    /// What hostd does with its VMs when the machine stops (power button, API).
    pub vms_at_shutdown: VmsAtShutdown,
    /// A serial line (`ttyS0`, `ttyS1`, ...) to serve the debug console on (kernel
    /// command line only); none by default.
    pub debug_console: Option<String>,
    /// Ed25519 public keys (hex) a host image upgrade must be signed by (hostd
    /// `--trusted-image-key`); none: upgrades are not checked for a signature.
    pub image_keys: Vec<String>,
}

/// What happens to the VMs when the host stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmsAtShutdown {
    /// Each VM is shut down (ACPI, then killed after a grace).
    Stop,
    /// The controller live-migrates them away (a drain), what is left is stopped.
    Migrate,
}

impl VmsAtShutdown {
    /// hostd's `--vms-at-exit` value.
    pub fn as_str(self) -> &'static str {
        match self {
            VmsAtShutdown::Stop => "stop",
            VmsAtShutdown::Migrate => "migrate",
        }
    }
}

/// The trial deadline unless `nova.trial_secs=` says.
pub const DEFAULT_TRIAL_SECS: u64 = 300;

impl Default for Config {
    fn default() -> Self {
        Config {
            controller: None,
            join_token: None,
            ca: None,
            ca_pem: None,
            imds: None,
            cpu_overcommit: None,
            mem_overcommit: None,
            ip: IpConfig::Dhcp,
            iface: None,
            modules: vec![],
            data_label: DEFAULT_DATA_LABEL.into(),
            format_data: true,
            listen_port: DEFAULT_LISTEN_PORT,
            insecure_http: false,
            tls_cert: None,
            tls_key: None,
            hostname: None,
            ntp: None,
            debug: false,
            slot: None,
            trial_secs: DEFAULT_TRIAL_SECS,
            vms_at_shutdown: VmsAtShutdown::Stop,
            debug_console: None,
            image_keys: vec![],
        }
    }
}

impl Config {
    /// Adds the keys of a key list (`source`: the image's `/etc/nova-image-keys`, one
    /// or more a line, comma or space separated, `#` comments) to
    /// [`Config::image_keys`]; an error names the file and every bad key.
    pub fn add_image_keys(&mut self, text: &str, source: &str) -> Result<(), ConfigError> {
        let mut errors = vec![];
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("");
            for k in line.split([',', ' ', '\t']).filter(|k| !k.is_empty()) {
                match parse_key(k) {
                    Ok(k) if !self.image_keys.contains(&k) => self.image_keys.push(k),
                    Ok(_) => {}
                    Err(e) => errors.push(format!("{source}: {e}")),
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigError(errors))
        }
    }

    /// hostd's flags for [`Config::image_keys`].
    pub fn image_key_args(&self) -> Vec<String> {
        self.image_keys
            .iter()
            .flat_map(|k| ["--trusted-image-key".to_string(), k.clone()])
            .collect()
    }
}

/// Splits a kernel command line into words as the kernel does: spaces separate words,
/// double quotes group (`nova.hostname="a b"` is one word, quotes removed).
pub fn words(cmdline: &str) -> Vec<String> {
    let mut out = vec![];
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in cmdline.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
}

/// The `nova.` settings of a kernel command line, as (key, value) in order.
pub fn cmdline_pairs(cmdline: &str) -> Vec<(String, String)> {
    words(cmdline)
        .into_iter()
        .filter_map(|w| {
            let rest = w.strip_prefix("nova.")?;
            let (k, v) = rest.split_once('=').unwrap_or((rest, "1"));
            Some((k.to_string(), v.to_string()))
        })
        .collect()
}

/// The settings of a `nova.conf` file: `KEY=VALUE` lines, `#` comments, blank lines;
/// a line that is not `KEY=VALUE` is an error naming its line number.
pub fn file_pairs(text: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let mut out = vec![];
    let mut errors = vec![];
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                let v = v.trim();
                let v = v
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(v);
                out.push((k.trim().to_string(), v.to_string()));
            }
            _ => errors.push(format!("nova.conf line {}: not KEY=VALUE", n + 1)),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(ConfigError(errors))
    }
}

fn parse_bool(v: &str) -> Result<bool, String> {
    match v {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(format!("'{v}' is not a boolean (1/0, true/false)")),
    }
}

fn parse_ratio(v: &str) -> Result<f64, String> {
    match v.parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 && x <= 1000.0 => Ok(x),
        _ => Err(format!("'{v}' is not a ratio in (0, 1000]")),
    }
}

fn parse_path(v: &str) -> Result<PathBuf, String> {
    if !v.starts_with('/') || v.split('/').any(|c| c == "..") {
        return Err(format!("'{v}' is not an absolute path without '..'"));
    }
    Ok(PathBuf::from(v))
}

fn parse_url(v: &str) -> Result<String, String> {
    let rest = v
        .strip_prefix("http://")
        .or_else(|| v.strip_prefix("https://"))
        .ok_or_else(|| format!("'{v}' is not an http:// or https:// URL"))?;
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() || v.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("'{v}' has no host"));
    }
    Ok(v.trim_end_matches('/').to_string())
}

/// The EC2 instance metadata service.
pub const DEFAULT_IMDS: &str = "http://169.254.169.254";

/// A CA's PEM: text with a certificate in it, 16 KiB at most.
fn check_ca_pem(pem: &str) -> Result<(), String> {
    if pem.len() > 16 << 10 || !pem.contains("-----BEGIN CERTIFICATE-----") {
        return Err("not a PEM certificate (16 KiB at most)".into());
    }
    Ok(())
}

/// `nova.ca_b64=`: base64 of a CA's PEM file (`base64 -w0 ca.pem`).
fn parse_ca_b64(v: &str) -> Result<String, String> {
    use base64::Engine as _;
    if v.len() > 22 << 10 {
        return Err("longer than a 16 KiB PEM".into());
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(v)
        .map_err(|e| format!("not base64: {e}"))?;
    let pem = String::from_utf8(bytes).map_err(|_| "not the base64 of a PEM text".to_string())?;
    check_ca_pem(&pem)?;
    Ok(pem)
}

fn parse_token(v: &str) -> Result<String, String> {
    if v.is_empty() || v.len() > 4096 || !v.chars().all(|c| c.is_ascii_graphic()) {
        return Err("empty, too long or not printable ASCII".into());
    }
    Ok(v.to_string())
}

/// An Ed25519 public key: 64 lowercase hex digits.
fn parse_key(v: &str) -> Result<String, String> {
    if v.len() == 64 && v.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')) {
        Ok(v.to_string())
    } else {
        Err(format!(
            "'{v}' is not an Ed25519 public key (64 lowercase hex digits)"
        ))
    }
}

/// A Linux interface name: 1-15 bytes, no '/', no whitespace.
fn parse_ifname(v: &str) -> Result<String, String> {
    if v.is_empty() || v.len() > 15 || v.contains('/') || v.contains(char::is_whitespace) {
        return Err(format!("'{v}' is not an interface name"));
    }
    Ok(v.to_string())
}

/// A module or label name: letters, digits, '-', '_' (1-64 of them).
fn parse_name(v: &str) -> Result<String, String> {
    if v.is_empty()
        || v.len() > 64
        || !v
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!("'{v}' is not a name (letters, digits, -, _)"));
    }
    Ok(v.to_string())
}

fn parse_ip(v: &str) -> Result<IpConfig, String> {
    if v == "dhcp" {
        return Ok(IpConfig::Dhcp);
    }
    let bad = || format!("'{v}' is not dhcp or ADDR/PREFIX[,GATEWAY]");
    let (cidr, gw) = match v.split_once(',') {
        Some((c, g)) => (c, Some(g.parse::<Ipv4Addr>().map_err(|_| bad())?)),
        None => (v, None),
    };
    let (a, p) = cidr.split_once('/').ok_or_else(bad)?;
    let addr = a.parse::<Ipv4Addr>().map_err(|_| bad())?;
    let prefix = p
        .parse::<u8>()
        .ok()
        .filter(|p| (1..=32).contains(p))
        .ok_or_else(bad)?;
    Ok(IpConfig::Static {
        addr,
        prefix,
        gateway: gw,
    })
}

impl Config {
    /// Reads `pairs` (file settings first, then the command line's, later ones win),
    /// checking each; the error names every bad key.
    pub fn parse(pairs: &[(String, String)]) -> Result<Config, ConfigError> {
        let mut c = Config::default();
        let mut errors = vec![];
        let (mut imds, mut imds_url) = (false, None);
        for (k, v) in pairs {
            let r: Result<(), String> = (|| {
                match k.as_str() {
                    "controller" => c.controller = Some(parse_url(v)?),
                    "join_token" => c.join_token = Some(parse_token(v)?),
                    "ca" => c.ca = Some(parse_path(v)?),
                    "ca_b64" => c.ca_pem = Some(parse_ca_b64(v)?),
                    "config" => match v.as_str() {
                        "imds" => imds = true,
                        "local" => imds = false,
                        _ => return Err(format!("'{v}' is not imds or local")),
                    },
                    "imds_url" => imds_url = Some(parse_url(v)?),
                    "cpu_overcommit" => c.cpu_overcommit = Some(parse_ratio(v)?),
                    "mem_overcommit" => c.mem_overcommit = Some(parse_ratio(v)?),
                    "ip" => c.ip = parse_ip(v)?,
                    "iface" => c.iface = Some(parse_ifname(v)?),
                    "modules" => {
                        c.modules = v
                            .split(',')
                            .filter(|m| !m.is_empty())
                            .map(parse_name)
                            .collect::<Result<_, _>>()?
                    }
                    "image_keys" => {
                        c.image_keys = v
                            .split(',')
                            .filter(|k| !k.is_empty())
                            .map(parse_key)
                            .collect::<Result<_, _>>()?
                    }
                    "data_label" => c.data_label = parse_name(v)?,
                    "format_data" => c.format_data = parse_bool(v)?,
                    "listen_port" => {
                        c.listen_port = v
                            .parse::<u16>()
                            .ok()
                            .filter(|p| *p != 0)
                            .ok_or_else(|| format!("'{v}' is not a port (1-65535)"))?
                    }
                    "insecure_http" => c.insecure_http = parse_bool(v)?,
                    "tls_cert" => c.tls_cert = Some(parse_path(v)?),
                    "tls_key" => c.tls_key = Some(parse_path(v)?),
                    "hostname" => c.hostname = Some(parse_name(v)?),
                    "ntp" => {
                        c.ntp = Some(
                            v.parse::<Ipv4Addr>()
                                .map_err(|_| format!("'{v}' is not an IPv4 address"))?,
                        )
                    }
                    "debug" => c.debug = parse_bool(v)?,
                    "slot" => {
                        c.slot = Some(match v.as_str() {
                            "a" => 'a',
                            "b" => 'b',
                            _ => return Err(format!("'{v}' is not a or b")),
                        })
                    }
                    "trial_secs" => {
                        c.trial_secs = v
                            .parse::<u64>()
                            .ok()
                            .filter(|s| (10..=86_400).contains(s))
                            .ok_or_else(|| format!("'{v}' is not seconds in 10..=86400"))?
                    }
                    "vms_at_shutdown" => {
                        c.vms_at_shutdown = match v.as_str() {
                            "stop" => VmsAtShutdown::Stop,
                            "migrate" => VmsAtShutdown::Migrate,
                            _ => return Err(format!("'{v}' is not stop or migrate")),
                        }
                    }
                    "debug_console" => {
                        c.debug_console = match v.as_str() {
                            "0" | "off" => None,
                            "1" | "on" => Some("ttyS0".into()),
                            t if t.starts_with("tty") && parse_name(t).is_ok() => Some(t.into()),
                            _ => {
                                return Err(format!(
                                    "'{v}' is not a serial line (ttyS0, ttyS1, ...) or 0/1"
                                ))
                            }
                        }
                    }
                    _ => return Err("unknown key".into()),
                }
                Ok(())
            })();
            if let Err(e) = r {
                errors.push(format!("nova.{k}: {e}"));
            }
        }
        match (imds, imds_url) {
            (true, url) => c.imds = Some(url.unwrap_or_else(|| DEFAULT_IMDS.to_string())),
            (false, Some(_)) => errors.push("nova.imds_url: needs nova.config=imds".into()),
            (false, None) => {}
        }
        if c.ca.is_some() && c.ca_pem.is_some() {
            errors.push("nova.ca_b64: given with nova.ca: choose one".into());
        }
        if c.tls_cert.is_some() != c.tls_key.is_some() {
            errors.push("nova.tls_cert: needs nova.tls_key, and the other way round".into());
        }
        // With nova.config=imds the controller and its token come later (user-data):
        // checked once they are in (`apply_user_data`).
        if c.imds.is_none() {
            errors.extend(c.join_errors());
        }
        if errors.is_empty() {
            Ok(c)
        } else {
            Err(ConfigError(errors))
        }
    }

    /// What is wrong with how the host joins and serves: the controller and its join
    /// token come together; hostd serves TLS with files it was given, or with the
    /// certificate the controller issues when it joins one, or plaintext when told.
    fn join_errors(&self) -> Vec<String> {
        let mut errors = vec![];
        if self.join_token.is_some() && self.controller.is_none() {
            errors.push("nova.join_token: given without nova.controller".into());
        }
        if self.controller.is_some() && self.join_token.is_none() {
            errors.push("nova.controller: given without nova.join_token".into());
        }
        if self.tls_cert.is_none() && !self.insecure_http && self.controller.is_none() {
            errors.push("nova.tls_cert: hostd serves TLS: give nova.controller and nova.join_token (the controller issues the certificate), or nova.tls_cert and nova.tls_key (or nova.insecure_http=1, tests only)".into());
        }
        errors
    }

    /// Takes the controller, join token and CA of EC2 user-data (`nova.config=imds`)
    /// where the command line and nova.conf gave none, then checks the result.
    pub fn apply_user_data(
        &mut self,
        u: nova_controller_api::HostUserData,
    ) -> Result<(), ConfigError> {
        if self.controller.is_none() && self.join_token.is_none() {
            self.controller = Some(
                parse_url(&u.controller)
                    .map_err(|e| ConfigError(vec![format!("user-data controller: {e}")]))?,
            );
            self.join_token = Some(
                parse_token(&u.join_token)
                    .map_err(|e| ConfigError(vec![format!("user-data join_token: {e}")]))?,
            );
        }
        if self.ca.is_none() && self.ca_pem.is_none() {
            if let Some(pem) = u.ca_pem {
                check_ca_pem(&pem)
                    .map_err(|e| ConfigError(vec![format!("user-data ca_pem: {e}")]))?;
                self.ca_pem = Some(pem);
            }
        }
        let errors = self.join_errors();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigError(errors))
        }
    }

    /// The settings from a `nova.conf` text and a kernel command line, command line winning.
    pub fn from_sources(file: Option<&str>, cmdline: &str) -> Result<Config, ConfigError> {
        let mut pairs = match file {
            Some(t) => file_pairs(t)?,
            None => vec![],
        };
        // A console that reads the disk is granted by whoever boots the machine, not by
        // a file on its disk.
        if pairs.iter().any(|(k, _)| k == "debug_console") {
            return Err(ConfigError(vec![
                "nova.debug_console: only on the kernel command line, not in nova.conf".into(),
            ]));
        }
        pairs.extend(cmdline_pairs(cmdline));
        Config::parse(&pairs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_cmdline(s: &str) -> Result<Config, ConfigError> {
        Config::from_sources(None, s)
    }

    #[test]
    fn cmdline_with_every_key_is_read() {
        let c = from_cmdline(
            "console=ttyS0 nova.controller=https://ctl.example:8443/ nova.join_token=abc.def \
             nova.ca=/boot/nova/ca.pem nova.cpu_overcommit=4 nova.mem_overcommit=1.5 \
             nova.ip=192.0.2.2/24,192.0.2.1 nova.iface=eth0 nova.modules=kvm_intel,vxlan \
             nova.data_label=mydata nova.format_data=0 nova.listen_port=7443 \
             nova.tls_cert=/data/tls/cert.pem nova.tls_key=/data/tls/key.pem \
             nova.hostname=rack1-h3 nova.ntp=192.0.2.1 nova.debug nova.slot=b quiet \
             nova.trial_secs=90 nova.vms_at_shutdown=migrate nova.debug_console=ttyS1 \
             nova.image_keys=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef,\
             1111111111111111111111111111111111111111111111111111111111111111",
        )
        .unwrap();
        assert_eq!(c.controller.as_deref(), Some("https://ctl.example:8443"));
        assert_eq!(c.join_token.as_deref(), Some("abc.def"));
        assert_eq!(c.ca, Some(PathBuf::from("/boot/nova/ca.pem")));
        assert_eq!(c.cpu_overcommit, Some(4.0));
        assert_eq!(c.mem_overcommit, Some(1.5));
        assert_eq!(
            c.ip,
            IpConfig::Static {
                addr: "192.0.2.2".parse().unwrap(),
                prefix: 24,
                gateway: Some("192.0.2.1".parse().unwrap())
            }
        );
        assert_eq!(c.iface.as_deref(), Some("eth0"));
        assert_eq!(c.modules, vec!["kvm_intel", "vxlan"]);
        assert_eq!(c.data_label, "mydata");
        assert!(!c.format_data);
        assert_eq!(c.listen_port, 7443);
        assert_eq!(c.hostname.as_deref(), Some("rack1-h3"));
        assert_eq!(c.ntp, Some("192.0.2.1".parse().unwrap()));
        assert!(c.debug && !c.insecure_http);
        assert_eq!(c.slot, Some('b'));
        assert_eq!(c.trial_secs, 90);
        assert_eq!(c.vms_at_shutdown, VmsAtShutdown::Migrate);
        assert_eq!(c.debug_console.as_deref(), Some("ttyS1"));
        assert_eq!(c.image_keys.len(), 2);
        assert_eq!(
            c.image_key_args(),
            vec![
                "--trusted-image-key",
                "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                "--trusted-image-key",
                "1111111111111111111111111111111111111111111111111111111111111111"
            ]
        );
    }

    #[test]
    fn keys_baked_into_the_image_join_nova_conf_s_once_each() {
        let (old, new) = ("ab".repeat(32), "cd".repeat(32));
        let mut c = Config::from_sources(Some(&format!("insecure_http=1\nimage_keys={old}\n")), "")
            .unwrap();
        c.add_image_keys(
            &format!("# the keys this build trusts\n{old}\n{new} # next\n"),
            "/etc/nova-image-keys",
        )
        .unwrap();
        assert_eq!(c.image_keys, vec![old.clone(), new.clone()]);
        let e = c
            .add_image_keys("xyz\n", "/etc/nova-image-keys")
            .unwrap_err();
        assert!(e.0[0].starts_with("/etc/nova-image-keys: 'xyz'"), "{e}");
    }

    #[test]
    fn image_keys_come_from_nova_conf_too_and_a_bad_one_is_named() {
        let key = "ab".repeat(32);
        let c = Config::from_sources(Some(&format!("insecure_http=1\nimage_keys={key}\n")), "")
            .unwrap();
        assert_eq!(c.image_keys, vec![key]);
        let e = from_cmdline("nova.insecure_http=1 nova.image_keys=ABCD").unwrap_err();
        assert!(e.0[0].starts_with("nova.image_keys: 'ABCD'"), "{e}");
    }

    #[test]
    fn the_debug_console_is_refused_from_nova_conf() {
        let e = Config::from_sources(Some("insecure_http=1\ndebug_console=1\n"), "").unwrap_err();
        assert!(
            e.0[0].starts_with("nova.debug_console: only on the kernel command line"),
            "{e}"
        );
        let c = from_cmdline("nova.insecure_http=1").unwrap();
        assert_eq!(c.debug_console, None, "off unless asked");
        let c = from_cmdline("nova.insecure_http=1 nova.debug_console=1").unwrap();
        assert_eq!(c.debug_console.as_deref(), Some("ttyS0"));
        assert_eq!(c.vms_at_shutdown, VmsAtShutdown::Stop);
        assert_eq!(c.trial_secs, DEFAULT_TRIAL_SECS);
    }

    #[test]
    fn defaults_are_dhcp_and_the_nova_data_label() {
        let c = from_cmdline("root=/dev/sda nova.insecure_http=1").unwrap();
        assert_eq!(c.ip, IpConfig::Dhcp);
        assert_eq!(c.data_label, DEFAULT_DATA_LABEL);
        assert_eq!(c.listen_port, DEFAULT_LISTEN_PORT);
        assert!(c.format_data && c.controller.is_none());
    }

    #[test]
    fn every_bad_field_is_named_at_once() {
        let e = from_cmdline(
            "nova.controller=ftp://x nova.join_token= nova.ca=relative/ca.pem \
             nova.cpu_overcommit=-1 nova.mem_overcommit=nan nova.ip=192.0.2.2 \
             nova.iface=way-too-long-interface nova.modules=ok,b@d nova.data_label=a/b \
             nova.format_data=maybe nova.listen_port=0 nova.insecure_http=2 \
             nova.tls_cert=/x/../y nova.hostname=a.b nova.ntp=host nova.debug=yes! \
             nova.slot=c nova.bogus=1 nova.trial_secs=5 nova.vms_at_shutdown=keep \
             nova.debug_console=../sda",
        )
        .unwrap_err();
        for key in [
            "controller",
            "join_token",
            "ca",
            "cpu_overcommit",
            "mem_overcommit",
            "ip",
            "iface",
            "modules",
            "data_label",
            "format_data",
            "listen_port",
            "insecure_http",
            "tls_cert",
            "hostname",
            "ntp",
            "debug",
            "slot",
            "bogus",
            "trial_secs",
            "vms_at_shutdown",
            "debug_console",
        ] {
            assert!(
                e.0.iter().any(|m| m.starts_with(&format!("nova.{key}:"))),
                "{key} not named in {e}"
            );
        }
    }

    #[test]
    fn controller_and_join_token_come_together() {
        let e =
            from_cmdline("nova.insecure_http=1 nova.controller=http://192.0.2.1:8080").unwrap_err();
        assert_eq!(
            e.0,
            vec!["nova.controller: given without nova.join_token".to_string()]
        );
        let e = from_cmdline("nova.insecure_http=1 nova.join_token=x").unwrap_err();
        assert_eq!(
            e.0,
            vec!["nova.join_token: given without nova.controller".to_string()]
        );
    }

    #[test]
    fn hostd_needs_tls_unless_insecure_http() {
        let e = from_cmdline("").unwrap_err();
        assert!(e.0[0].starts_with("nova.tls_cert:"), "{e}");
        let e = from_cmdline("nova.tls_cert=/a.pem").unwrap_err();
        assert!(e.0[0].contains("needs nova.tls_key"), "{e}");
        from_cmdline("nova.tls_cert=/a.pem nova.tls_key=/k.pem").unwrap();
    }

    #[test]
    fn a_host_joining_a_controller_needs_no_tls_files_and_takes_its_ca_inline() {
        use base64::Engine as _;
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let b64 = base64::engine::general_purpose::STANDARD.encode(pem);
        let c = from_cmdline(&format!(
            "nova.controller=https://192.0.2.1:7443 nova.join_token=0123456789abcdef nova.ca_b64={b64}"
        ))
        .unwrap();
        assert_eq!(
            (c.tls_cert, c.insecure_http),
            (None, false),
            "the certificate is issued"
        );
        assert_eq!(c.ca_pem.as_deref(), Some(pem));
        let e = from_cmdline("nova.insecure_http=1 nova.ca_b64=!!").unwrap_err();
        assert!(e.0[0].starts_with("nova.ca_b64: not base64"), "{e}");
        let not_pem = base64::engine::general_purpose::STANDARD.encode("hello");
        let e = from_cmdline(&format!("nova.insecure_http=1 nova.ca_b64={not_pem}")).unwrap_err();
        assert!(
            e.0[0].starts_with("nova.ca_b64: not a PEM certificate"),
            "{e}"
        );
        let e = from_cmdline(&format!(
            "nova.insecure_http=1 nova.ca=/ca.pem nova.ca_b64={b64}"
        ))
        .unwrap_err();
        assert!(e.0[0].starts_with("nova.ca_b64: given with nova.ca"), "{e}");
    }

    #[test]
    fn config_imds_takes_the_join_settings_from_user_data_where_none_were_given() {
        let c = from_cmdline("nova.config=imds").unwrap();
        assert_eq!(c.imds.as_deref(), Some(DEFAULT_IMDS));
        let c = from_cmdline("nova.config=imds nova.imds_url=http://127.0.0.1:5000").unwrap();
        assert_eq!(c.imds.as_deref(), Some("http://127.0.0.1:5000"));
        let e =
            from_cmdline("nova.insecure_http=1 nova.imds_url=http://127.0.0.1:5000").unwrap_err();
        assert!(
            e.0[0].starts_with("nova.imds_url: needs nova.config=imds"),
            "{e}"
        );
        let e = from_cmdline("nova.config=ec2").unwrap_err();
        assert!(e.0[0].starts_with("nova.config:"), "{e}");
        let u = nova_controller_api::HostUserData {
            format: nova_controller_api::HostUserData::FORMAT.into(),
            controller: "https://192.0.2.1:7443".into(),
            join_token: "t".repeat(43),
            ca_pem: Some("-----BEGIN CERTIFICATE-----\nMIIB\n".into()),
        };
        let mut c = from_cmdline("nova.config=imds").unwrap();
        c.apply_user_data(u.clone()).unwrap();
        assert_eq!(c.controller.as_deref(), Some("https://192.0.2.1:7443"));
        assert_eq!(c.join_token, Some("t".repeat(43)));
        assert!(c.ca_pem.is_some());
        // The command line wins over user-data.
        let mut c = from_cmdline(
            "nova.config=imds nova.controller=https://10.0.0.1:7443 nova.join_token=0123456789abcdef",
        )
        .unwrap();
        c.apply_user_data(u).unwrap();
        assert_eq!(c.controller.as_deref(), Some("https://10.0.0.1:7443"));
    }

    #[test]
    fn command_line_wins_over_the_file() {
        let file = "# the site's settings\ncontroller = \"http://192.0.2.1:8080\"\njoin_token=from-file\n\ninsecure_http=1\nlisten_port=7000\n";
        let c = Config::from_sources(
            Some(file),
            "nova.listen_port=7001 nova.join_token=from-cmdline",
        )
        .unwrap();
        assert_eq!(c.controller.as_deref(), Some("http://192.0.2.1:8080"));
        assert_eq!(c.join_token.as_deref(), Some("from-cmdline"));
        assert_eq!(c.listen_port, 7001);
    }

    #[test]
    fn file_line_without_equals_names_its_line() {
        let e =
            Config::from_sources(Some("insecure_http=1\nthis is not a setting\n"), "").unwrap_err();
        assert_eq!(e.0, vec!["nova.conf line 2: not KEY=VALUE".to_string()]);
    }

    #[test]
    fn quoted_words_keep_their_spaces() {
        assert_eq!(
            words(r#"a nova.x="b c" d  "#),
            vec!["a".to_string(), "nova.x=b c".into(), "d".into()]
        );
        assert_eq!(
            cmdline_pairs("nova.debug nova.ip=dhcp root=x"),
            vec![("debug".into(), "1".into()), ("ip".into(), "dhcp".into())]
        );
    }

    #[test]
    fn ip_forms() {
        assert_eq!(parse_ip("dhcp"), Ok(IpConfig::Dhcp));
        assert!(parse_ip("192.0.2.2/33").is_err());
        assert!(parse_ip("192.0.2.2/24,gw").is_err());
        assert_eq!(
            parse_ip("198.51.100.7/32"),
            Ok(IpConfig::Static {
                addr: "198.51.100.7".parse().unwrap(),
                prefix: 32,
                gateway: None
            })
        );
    }
}
