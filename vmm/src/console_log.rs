//! The console file (`--console`), bounded: once it would grow past its cap
//! (`--console-max-bytes`), what it holds moves to `<file>.1` (replacing the previous
//! one) and it starts again empty. At most the cap plus one write is ever on disk per
//! file, and no byte is lost between the two files. Rotation copies and truncates
//! in place instead of renaming: under hostd's jail both files are bind-mounted into
//! the VMM's root, where a rename fails, and the vCPU thread that writes the console
//! may not open files.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// The cap when none is given: enough for a long boot log of a chatty kernel.
pub const DEFAULT_MAX_BYTES: u64 = 8 << 20;
/// The smallest cap accepted.
pub const MIN_MAX_BYTES: u64 = nova_vmm_api::config::MIN_CONSOLE_MAX_BYTES;

pub use nova_vmm_api::config::rotated_console as rotated_path;

/// The console file and its one rotated sibling.
pub struct RotatingLog {
    current: File,
    rotated: File,
    /// Bytes in `current`.
    len: u64,
    max: u64,
    /// A failed rotation was logged (once, not on every write after it).
    warned: bool,
}

impl RotatingLog {
    /// Opens (appending) `path` and `<path>.1`, capped at `max` bytes each.
    pub fn open(path: &Path, max: u64) -> std::io::Result<RotatingLog> {
        let open = |p: &Path| File::options().create(true).append(true).open(p);
        // Read as well: rotation copies it out.
        let current = File::options()
            .create(true)
            .append(true)
            .read(true)
            .open(path)?;
        let rotated = open(&rotated_path(path))?;
        let len = current.metadata()?.len();
        Ok(RotatingLog {
            current,
            rotated,
            len,
            max: max.max(MIN_MAX_BYTES),
            warned: false,
        })
    }

    /// Moves the current file's bytes into the rotated one and empties it.
    fn rotate(&mut self) -> std::io::Result<()> {
        self.rotated.set_len(0)?;
        let mut buf = vec![0u8; 64 << 10];
        let mut off = 0u64;
        while off < self.len {
            let n = self.current.read_at(&mut buf, off)?;
            if n == 0 {
                break;
            }
            self.rotated.write_all(&buf[..n])?;
            off += n as u64;
        }
        self.current.set_len(0)?;
        self.len = 0;
        Ok(())
    }
}

impl Write for RotatingLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.len > 0 && self.len + buf.len() as u64 > self.max {
            if let Err(e) = self.rotate() {
                // Keep the bytes (the file grows past its cap) rather than lose them.
                if !self.warned {
                    tracing::warn!("console log rotation failed: {e}");
                    self.warned = true;
                }
            }
        }
        self.current.write_all(buf)?;
        self.len += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.current.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_rotates_at_its_cap_into_one_file_and_loses_no_byte() {
        let dir = std::env::temp_dir().join(format!("nova-conlog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("console.log");
        let mut log = RotatingLog::open(&path, 4096).unwrap();
        let mut all = Vec::new();
        for i in 0..1000u32 {
            let line = format!("line {i:05}\n");
            log.write_all(line.as_bytes()).unwrap();
            all.extend_from_slice(line.as_bytes());
        }
        let cur = std::fs::read(&path).unwrap();
        let old = std::fs::read(rotated_path(&path)).unwrap();
        assert!(cur.len() <= 4096 && old.len() <= 4096, "bounded");
        assert!(!old.is_empty());
        let mut tail = old.clone();
        tail.extend_from_slice(&cur);
        assert!(
            all.ends_with(&tail),
            "the two files are the last output, in order"
        );
        // Reopening continues from the current file's length.
        drop(log);
        let mut log = RotatingLog::open(&path, 4096).unwrap();
        log.write_all(b"more\n").unwrap();
        assert!(std::fs::read(&path)
            .unwrap()
            .ends_with(b"line 00999\nmore\n"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
