//! GRUB's environment block, `EFI/nova/grubenv` on the EFI partition: the boot
//! loader's state nova-init owns. `nova_slot` is the slot booted by default (the last
//! one known good), `nova_try` a slot to boot once (GRUB clears it as it boots it, so
//! any failed boot falls back to `nova_slot`), `nova_cmdline` extra kernel arguments.
//! The block is exactly 1024 bytes: a header line, `name=value` lines, `#` padding;
//! it is rewritten in place so GRUB (which writes it by its block list) finds it.

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

/// The size GRUB requires.
pub const SIZE: usize = 1024;
const HEADER: &str = "# GRUB Environment Block\n";

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EnvError {
    #[error("not a GRUB environment block: {0}")]
    Bad(String),
    #[error("the variables take {0} bytes: more than a {SIZE}-byte block holds")]
    TooLong(usize),
}

/// The variables of a block, in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Env {
    vars: Vec<(String, String)>,
}

fn valid_name(n: &str) -> bool {
    !n.is_empty() && n.len() <= 64 && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Env {
    /// Reads a block (hostile input: the partition is writable by anyone with the disk).
    pub fn parse(bytes: &[u8]) -> Result<Env, EnvError> {
        if bytes.len() != SIZE {
            return Err(EnvError::Bad(format!("{} bytes, not {SIZE}", bytes.len())));
        }
        let text = std::str::from_utf8(bytes).map_err(|_| EnvError::Bad("not UTF-8".into()))?;
        let body = text
            .strip_prefix(HEADER)
            .ok_or_else(|| EnvError::Bad("no header line".into()))?;
        let mut env = Env::default();
        for line in body.split('\n') {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (k, v) = line
                .split_once('=')
                .ok_or_else(|| EnvError::Bad(format!("line '{line}' is not name=value")))?;
            if !valid_name(k) || v.contains('\\') {
                return Err(EnvError::Bad(format!("line '{line}' is not name=value")));
            }
            env.set(k, v);
        }
        Ok(env)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Sets `name` (replacing its value in place, or adding it at the end).
    pub fn set(&mut self, name: &str, value: &str) {
        match self.vars.iter_mut().find(|(k, _)| k == name) {
            Some(kv) => kv.1 = value.to_string(),
            None => self.vars.push((name.to_string(), value.to_string())),
        }
    }

    /// The 1024-byte block.
    pub fn render(&self) -> Result<Vec<u8>, EnvError> {
        let mut s = String::from(HEADER);
        for (k, v) in &self.vars {
            if !valid_name(k) || v.contains(['\\', '\n']) {
                return Err(EnvError::Bad(format!("variable '{k}' cannot be written")));
            }
            s.push_str(&format!("{k}={v}\n"));
        }
        if s.len() > SIZE {
            return Err(EnvError::TooLong(s.len()));
        }
        let mut b = s.into_bytes();
        b.resize(SIZE, b'#');
        Ok(b)
    }

    /// Reads the block at `path`.
    pub fn read(path: &Path) -> anyhow::Result<Env> {
        let b =
            std::fs::read(path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        Env::parse(&b).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// Writes the block over the one at `path`, in place (same blocks on disk), durably.
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        let b = self.render()?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| anyhow::anyhow!("opening {}: {e}", path.display()))?;
        f.seek(SeekFrom::Start(0))?;
        f.write_all(&b)
            .and_then(|()| f.sync_all())
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
        Ok(())
    }
}

/// What a boot is, from the slot booted and the block: on trial when the slot is not
/// the default one (an upgrade being tried once).
pub fn on_trial(env: &Env, booted: char) -> bool {
    env.get("nova_slot").unwrap_or("a") != booted.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The block host-image/build.sh writes.
    fn built() -> Vec<u8> {
        let mut b = b"# GRUB Environment Block\nnova_slot=a\n".to_vec();
        b.resize(SIZE, b'#');
        b
    }

    #[test]
    fn the_built_block_reads_and_round_trips() {
        let mut e = Env::parse(&built()).unwrap();
        assert_eq!(e.get("nova_slot"), Some("a"));
        assert_eq!(e.render().unwrap(), built());
        e.set("nova_try", "b");
        e.set("nova_slot", "b");
        let again = Env::parse(&e.render().unwrap()).unwrap();
        assert_eq!(again.get("nova_slot"), Some("b"));
        assert_eq!(again.get("nova_try"), Some("b"));
        assert_eq!(again.render().unwrap().len(), SIZE);
    }

    #[test]
    fn a_trial_boot_is_one_off_the_default_slot() {
        let e = Env::parse(&built()).unwrap();
        assert!(!on_trial(&e, 'a'));
        assert!(on_trial(&e, 'b'));
    }

    #[test]
    fn bad_blocks_and_oversized_variables_are_refused() {
        assert!(Env::parse(b"short").is_err());
        let mut b = b"# not grub\n".to_vec();
        b.resize(SIZE, b'#');
        assert!(Env::parse(&b).is_err());
        let mut b = b"# GRUB Environment Block\nno equals here\n".to_vec();
        b.resize(SIZE, b'#');
        assert!(Env::parse(&b).is_err());
        let mut e = Env::default();
        e.set("nova_cmdline", &"x".repeat(SIZE));
        assert!(matches!(e.render(), Err(EnvError::TooLong(_))));
        e.set("nova_cmdline", "a\nb");
        assert!(e.render().is_err());
    }
}
