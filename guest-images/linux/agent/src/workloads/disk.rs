//! `disk`: reads the host's checksummed blocks once, then forever writes the guest's
//! blocks with a new generation, flushes, reads them back past the page cache and
//! verifies them, all in the abi's block format.

use super::{Env, FirstPass};
use crate::console;
use nova_guest_abi::{
    check_block, fill_block, line, BLOCK_SIZE, BLOCK_WORDS, GUEST_BLOCKS, GUEST_BLOCKS_START,
    GUEST_MAGIC, HOST_BLOCKS, HOST_MAGIC,
};
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The guest's first virtio disk.
pub const GUEST_DISK: &str = "/dev/vda";
/// How long a guest waits for its disk to be probed.
const PROBE_WAIT: Duration = Duration::from_secs(5);
const PASS_GAP: Duration = Duration::from_millis(50);

/// One block, aligned for O_DIRECT.
#[repr(C, align(4096))]
struct Block([u8; BLOCK_SIZE]);

impl Block {
    fn words(&self) -> [u64; BLOCK_WORDS] {
        let mut w = [0u64; BLOCK_WORDS];
        for (word, bytes) in w.iter_mut().zip(self.0.chunks_exact(8)) {
            *word = u64::from_le_bytes(bytes.try_into().expect("8-byte chunk"));
        }
        w
    }

    fn set_words(&mut self, w: &[u64; BLOCK_WORDS]) {
        for (bytes, word) in self.0.chunks_exact_mut(8).zip(w) {
            bytes.copy_from_slice(&word.to_le_bytes());
        }
    }
}

/// The disk opened for the workload: buffered writes, reads that bypass the page
/// cache on a block device (so verification sees the device, not our own writes).
struct Disk {
    writer: File,
    reader: File,
}

impl Disk {
    fn open(path: &Path) -> Result<Disk, String> {
        let writer = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| format!("what=disk_open path={} errno={}", path.display(), errno(&e)))?;
        let meta = writer
            .metadata()
            .map_err(|e| format!("what=disk_stat errno={}", errno(&e)))?;
        let block_dev = meta.file_type().is_block_device();
        let size = if block_dev {
            device_size(&writer)?
        } else {
            meta.len()
        };
        let need = (GUEST_BLOCKS_START + GUEST_BLOCKS) * BLOCK_SIZE as u64;
        if size < need {
            return Err(format!("what=disk_too_small bytes={size} need={need}"));
        }
        let reader = if block_dev {
            OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECT)
                .open(path)
                .map_err(|e| format!("what=disk_open_direct errno={}", errno(&e)))?
        } else {
            writer
                .try_clone()
                .map_err(|e| format!("what=disk_open errno={}", errno(&e)))?
        };
        Ok(Disk { writer, reader })
    }

    fn read(&self, index: u64, block: &mut Block) -> bool {
        self.reader
            .read_exact_at(&mut block.0, index * BLOCK_SIZE as u64)
            .is_ok()
    }

    fn write(&self, index: u64, block: &Block) -> bool {
        self.writer
            .write_all_at(&block.0, index * BLOCK_SIZE as u64)
            .is_ok()
    }
}

/// A block device's size: its end, as lseek sees it.
fn device_size(mut f: &File) -> Result<u64, String> {
    f.seek(SeekFrom::End(0))
        .map_err(|e| format!("what=disk_size errno={}", errno(&e)))
}

fn errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

/// The disk this environment works on: `--disk`, or the guest's first virtio disk.
/// A host has no default: blocks 16.. of a host's own /dev/vda are not ours to write.
fn disk_path(env: &Env) -> Result<PathBuf, String> {
    match (&env.disk, env.pid1) {
        (Some(p), _) => Ok(p.clone()),
        (None, true) => {
            let p = PathBuf::from(GUEST_DISK);
            if !crate::init::wait_for(&p, PROBE_WAIT) {
                return Err(format!("what=no_disk path={GUEST_DISK}"));
            }
            Ok(p)
        }
        (None, false) => Err("what=disk_needs_path".to_string()),
    }
}

/// Runs the disk workload forever; a setup failure is reported and ends it.
pub fn run(env: &Env, mut first: FirstPass) {
    let disk = match disk_path(env).and_then(|p| Disk::open(&p)) {
        Ok(d) => d,
        Err(body) => return console::line(&format!("{} {body}", line::ERROR)),
    };
    let mut block = Box::new(Block([0; BLOCK_SIZE]));
    let host_ok = (0..HOST_BLOCKS)
        .filter(|&i| disk.read(i, &mut block) && check_block(&block.words(), HOST_MAGIC, i).is_ok())
        .count();
    let mut errors: u64 = 0;
    for pass in 1.. {
        let mut words = [0u64; BLOCK_WORDS];
        let mut written = 0;
        for index in GUEST_BLOCKS_START..GUEST_BLOCKS_START + GUEST_BLOCKS {
            fill_block(&mut words, GUEST_MAGIC, index, pass);
            block.set_words(&words);
            if disk.write(index, &block) {
                written += 1;
            } else {
                errors += 1;
            }
        }
        if disk.writer.sync_all().is_err() {
            errors += 1;
        }
        let mut verified = 0;
        for index in GUEST_BLOCKS_START..GUEST_BLOCKS_START + GUEST_BLOCKS {
            if disk.read(index, &mut block)
                && check_block(&block.words(), GUEST_MAGIC, index) == Ok(pass)
            {
                verified += 1;
            } else {
                errors += 1;
            }
        }
        console::line(&format!(
            "{} pass={pass} host_ok={host_ok} written={written} verified={verified} errors={errors}",
            line::DISK
        ));
        first.passed();
        std::thread::sleep(PASS_GAP);
    }
}
