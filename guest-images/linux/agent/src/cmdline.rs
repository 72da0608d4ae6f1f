//! The kernel command line: splitting it into words, and the agent's contract on it
//! (`nova.workload=`, `nova.ip=`, `<module>.<param>=` for the modules it loads).

use std::net::Ipv4Addr;

/// One workload named in `nova.workload=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// `counter`: `NOVA-TICK <seq>` every millisecond.
    Counter,
    /// `dirty:<MiB>:<MiB/s|max>`: `rate_mib_s` is `None` for `max`.
    Dirty { mib: u64, rate_mib_s: Option<u64> },
    /// `disk`: host blocks read once, guest blocks written and verified each pass.
    Disk,
    /// `net`: interface configured from `nova.ip`, UDP echo.
    Net,
    /// `poweroff`: after the first pass of `disk` and `dirty`.
    Poweroff,
    /// `reset`: like `poweroff`, but reboots.
    Reset,
}

/// An IPv4 address with its prefix length (`nova.ip=A.B.C.D/PREFIX`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpConfig {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl IpConfig {
    /// The netmask of the prefix, e.g. 255.255.255.0 for /24.
    pub fn netmask(&self) -> Ipv4Addr {
        let bits = u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0);
        Ipv4Addr::from(bits)
    }
}

/// What the command line asks of the agent.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    pub workloads: Vec<Workload>,
    pub ip: Option<IpConfig>,
    /// `NOVA-ERROR` bodies (`what=... k=v`) for words that could not be understood.
    pub errors: Vec<String>,
}

impl Plan {
    /// Whether `w` (compared by kind, ignoring `dirty`'s arguments) is planned.
    pub fn has(&self, w: Workload) -> bool {
        self.workloads
            .iter()
            .any(|x| std::mem::discriminant(x) == std::mem::discriminant(&w))
    }
}

/// Splits a command line into words; double quotes group spaces into one word and
/// are removed, as the kernel does.
pub fn words(cmdline: &str) -> Vec<String> {
    let mut out = Vec::new();
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

/// Parses the agent's part of the command line. Words after a lone `--` belong to
/// init's argv, not to the command line's parameters, and are skipped.
pub fn plan(cmdline: &str) -> Plan {
    let mut plan = Plan::default();
    let mut workload = String::from("idle");
    for word in words(cmdline) {
        if word == "--" {
            break;
        }
        if let Some(v) = word.strip_prefix("nova.workload=") {
            workload = v.to_string();
        } else if let Some(v) = word.strip_prefix("nova.ip=") {
            plan.ip = parse_ip(v);
            if plan.ip.is_none() {
                plan.errors.push(format!("what=bad_ip value={v}"));
            }
        }
    }
    for item in workload.split(',') {
        let w = match item {
            "idle" | "" => continue,
            "counter" => Workload::Counter,
            "disk" => Workload::Disk,
            "net" => Workload::Net,
            "poweroff" => Workload::Poweroff,
            "reset" => Workload::Reset,
            _ => match item.strip_prefix("dirty:").map(parse_dirty) {
                Some(Some(d)) => d,
                Some(None) => {
                    plan.errors.push(format!("what=bad_dirty_args name={item}"));
                    continue;
                }
                None => {
                    plan.errors
                        .push(format!("what=unknown_workload name={item}"));
                    continue;
                }
            },
        };
        if !plan.has(w) {
            plan.workloads.push(w);
        }
    }
    plan
}

/// The parameters the command line gives module `module` (`module.key=value` words,
/// `-` and `_` alike in the module name), as the `key=value ...` string
/// `finit_module` takes. The kernel applies such words itself only to built-in code;
/// for loadable modules it is the loader's job (modprobe does the same).
pub fn module_params(cmdline: &str, module: &str) -> String {
    let want = module.replace('-', "_");
    let mut params = Vec::new();
    for word in words(cmdline) {
        if word == "--" {
            break;
        }
        let Some((name, param)) = word.split_once('.') else {
            continue;
        };
        if name.replace('-', "_") == want && !param.is_empty() && !name.contains('=') {
            params.push(quote(param));
        }
    }
    params.join(" ")
}

/// Quotes a `key=value` whose value has spaces, so the kernel's parser keeps it whole.
fn quote(param: &str) -> String {
    match param.split_once('=') {
        Some((k, v)) if v.contains(char::is_whitespace) => format!("{k}=\"{v}\""),
        _ => param.to_string(),
    }
}

fn parse_dirty(v: &str) -> Option<Workload> {
    let (mib, rate) = v.split_once(':')?;
    let mib: u64 = mib.parse().ok().filter(|&m| m > 0 && m <= 1 << 20)?;
    let rate_mib_s = match rate {
        "max" => None,
        r => Some(r.parse().ok().filter(|&r: &u64| r > 0 && r <= 1 << 20)?),
    };
    Some(Workload::Dirty { mib, rate_mib_s })
}

fn parse_ip(v: &str) -> Option<IpConfig> {
    let (addr, prefix) = match v.split_once('/') {
        Some((a, p)) => (a, p.parse().ok().filter(|&p: &u8| p <= 32)?),
        None => (v, 24),
    };
    Some(IpConfig {
        addr: addr.parse().ok()?,
        prefix,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_words_keep_their_spaces() {
        assert_eq!(
            words(r#"a b="c d"  e"#),
            vec!["a".to_string(), "b=c d".into(), "e".into()]
        );
    }

    #[test]
    fn workloads_default_to_idle_and_keep_order() {
        assert_eq!(plan("console=ttyS0").workloads, vec![]);
        let p = plan("nova.workload=counter,dirty:8:max,disk,net,poweroff nova.ip=192.0.2.2/24");
        assert_eq!(
            p.workloads,
            vec![
                Workload::Counter,
                Workload::Dirty {
                    mib: 8,
                    rate_mib_s: None
                },
                Workload::Disk,
                Workload::Net,
                Workload::Poweroff
            ]
        );
        assert_eq!(p.ip.unwrap().addr, Ipv4Addr::new(192, 0, 2, 2));
        assert!(p.errors.is_empty());
    }

    #[test]
    fn bad_words_become_errors() {
        let p = plan("nova.workload=bogus,dirty:0:1,dirty:4:fast nova.ip=300.1.1.1/24");
        assert_eq!(
            p.errors,
            vec![
                "what=bad_ip value=300.1.1.1/24".to_string(),
                "what=unknown_workload name=bogus".into(),
                "what=bad_dirty_args name=dirty:0:1".into(),
                "what=bad_dirty_args name=dirty:4:fast".into(),
            ]
        );
        assert!(p.workloads.is_empty());
    }

    #[test]
    fn netmask_follows_prefix() {
        let ip = |prefix| IpConfig {
            addr: Ipv4Addr::LOCALHOST,
            prefix,
        };
        assert_eq!(ip(24).netmask(), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(ip(0).netmask(), Ipv4Addr::new(0, 0, 0, 0));
        assert_eq!(ip(32).netmask(), Ipv4Addr::new(255, 255, 255, 255));
    }

    #[test]
    fn module_params_are_collected_for_that_module_only() {
        let c = "virtio_mmio.device=4K@0xd0000000:5 virtio-mmio.device=4K@0xd0001000:6 \
                 virtio_net.napi_tx=1 x.y=\"a b\" -- virtio_mmio.device=argv";
        assert_eq!(
            module_params(c, "virtio_mmio"),
            "device=4K@0xd0000000:5 device=4K@0xd0001000:6"
        );
        assert_eq!(module_params(c, "virtio_net"), "napi_tx=1");
        assert_eq!(module_params(c, "x"), "y=\"a b\"");
        assert_eq!(module_params(c, "virtio_blk"), "");
    }
}
