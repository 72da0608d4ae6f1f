//! PVH boot information (`hvm_start_info`: memory map and command line) and the
//! command-line parser (`nova.workload=`, `nova.tsc_khz=`, `nova.ip=`,
//! `virtio_mmio.device=`).

use crate::serial::{error, Line};

const START_INFO_MAGIC: u32 = 0x336e_c578;
const MAX_RAM: usize = 32;
const MAX_MMIO: usize = 8;
const MAX_CMDLINE: usize = 4096;
const E820_RAM: u32 = 1;

/// A RAM range from the memory map.
#[derive(Clone, Copy, Default)]
pub struct Region {
    /// First byte.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
}

/// What the boot loader told us.
pub struct BootInfo {
    /// The command line (without the NUL).
    pub cmdline: &'static [u8],
    /// RAM ranges (type 1) from the memory map.
    pub ram: [Region; MAX_RAM],
    /// Valid entries in `ram`.
    pub nram: usize,
    /// Total RAM in bytes.
    pub ram_bytes: u64,
}

/// Reads a little-endian value of type `T` at physical address `addr`.
///
/// # Safety
/// `addr` must be identity-mapped memory.
unsafe fn rd<T: Copy>(addr: u64) -> T {
    // SAFETY: per the caller's contract; unaligned reads are fine on x86.
    unsafe { (addr as *const T).read_unaligned() }
}

impl BootInfo {
    /// Parses `hvm_start_info` at physical address `addr` (from EBX at entry).
    pub fn parse(addr: u64) -> BootInfo {
        let mut info = BootInfo {
            cmdline: &[],
            ram: [Region::default(); MAX_RAM],
            nram: 0,
            ram_bytes: 0,
        };
        // SAFETY: the PVH loader put start_info at `addr`, below 4 GiB (identity-mapped).
        let (magic, version) = unsafe { (rd::<u32>(addr), rd::<u32>(addr + 4)) };
        if addr == 0 || magic != START_INFO_MAGIC {
            error("bad_start_info");
            return info;
        }
        // SAFETY: fields of a valid start_info (checked magic).
        let cmdline_paddr = unsafe { rd::<u64>(addr + 24) };
        if cmdline_paddr != 0 && cmdline_paddr < (1 << 32) {
            let mut n = 0;
            // SAFETY: the cmdline is a NUL-terminated string in guest RAM; we stop at
            // MAX_CMDLINE bytes.
            while n < MAX_CMDLINE && unsafe { rd::<u8>(cmdline_paddr + n as u64) } != 0 {
                n += 1;
            }
            // SAFETY: the n bytes just scanned are RAM the loader wrote and nobody
            // writes again.
            info.cmdline = unsafe { core::slice::from_raw_parts(cmdline_paddr as *const u8, n) };
        }
        if version < 1 {
            error("no_memmap");
            return info;
        }
        // SAFETY: version >= 1 start_info has memmap_paddr (40) and memmap_entries (48).
        let (map, entries) = unsafe { (rd::<u64>(addr + 40), rd::<u32>(addr + 48)) };
        if map == 0 || map >= (1 << 32) {
            error("no_memmap");
            return info;
        }
        for i in 0..entries.min(256) as u64 {
            let e = map + i * 24;
            // SAFETY: entry i < memmap_entries of the loader's table.
            let (start, len, kind) = unsafe { (rd::<u64>(e), rd::<u64>(e + 8), rd::<u32>(e + 16)) };
            if start == 0 && len == 0 && kind == 0 {
                break;
            }
            if kind != E820_RAM || len == 0 {
                continue;
            }
            info.ram_bytes += len;
            if let Some(r) = info.ram.get_mut(info.nram) {
                *r = Region { start, len };
                info.nram += 1;
            }
        }
        info
    }

    /// RAM entries.
    pub fn ram(&self) -> &[Region] {
        self.ram.get(..self.nram).unwrap_or(&[])
    }
}

/// A virtio-mmio device named on the command line.
#[derive(Clone, Copy, Default)]
pub struct MmioDev {
    /// Base address of its register window.
    pub addr: u64,
}

/// The `dirty:<MiB>:<MiB/s|max>` workload's parameters.
#[derive(Clone, Copy)]
pub struct DirtyArgs {
    /// Buffer size in MiB.
    pub mib: u64,
    /// Rate in MiB/s, 0 for `max`.
    pub rate: u64,
}

/// Workloads named by `nova.workload=`.
#[derive(Clone, Copy, Default)]
pub struct Workloads {
    /// `counter`.
    pub counter: bool,
    /// `dirty:..`.
    pub dirty: Option<DirtyArgs>,
    /// `disk`.
    pub disk: bool,
    /// `net`.
    pub net: bool,
    /// `poweroff`.
    pub poweroff: bool,
    /// `reset`.
    pub reset: bool,
    /// `echo`: each console input line comes back as `NOVA-ECHO text=...`.
    pub echo: bool,
    /// `spin:<seconds>`: halt that long, then keep the vCPU busy.
    pub spin_after_s: Option<u64>,
}

/// Everything the command line configures.
pub struct Config {
    /// Workloads to run.
    pub work: Workloads,
    /// `nova.tsc_khz=`.
    pub tsc_khz: Option<u64>,
    /// `nova.ip=` address.
    pub ip: Option<[u8; 4]>,
    /// `virtio_mmio.device=` entries, in order.
    pub mmio: [MmioDev; MAX_MMIO],
    /// Valid entries in `mmio`.
    pub nmmio: usize,
}

impl Config {
    /// Parses a kernel-style command line (space separated `key=value` words).
    pub fn parse(cmdline: &[u8]) -> Config {
        let mut cfg = Config {
            work: Workloads::default(),
            tsc_khz: None,
            ip: None,
            mmio: [MmioDev::default(); MAX_MMIO],
            nmmio: 0,
        };
        let mut workload: &[u8] = b"idle";
        for word in cmdline.split(|&b| b == b' ' || b == b'\t' || b == b'\n') {
            if let Some(v) = word.strip_prefix(b"nova.workload=") {
                workload = v;
            } else if let Some(v) = word.strip_prefix(b"nova.tsc_khz=") {
                cfg.tsc_khz = parse_num(v).filter(|&k| k > 0);
                if cfg.tsc_khz.is_none() {
                    error("bad_tsc_khz");
                }
            } else if let Some(v) = word.strip_prefix(b"nova.ip=") {
                cfg.ip = parse_ip(v);
                if cfg.ip.is_none() {
                    error("bad_ip");
                }
            } else if let Some(v) = word.strip_prefix(b"virtio_mmio.device=") {
                match parse_mmio(v) {
                    Some(d) => {
                        if let Some(slot) = cfg.mmio.get_mut(cfg.nmmio) {
                            *slot = d;
                            cfg.nmmio += 1;
                        }
                    }
                    None => error("bad_virtio_mmio"),
                }
            }
        }
        for item in workload.split(|&b| b == b',') {
            match item {
                b"idle" | b"" => {}
                b"counter" => cfg.work.counter = true,
                b"disk" => cfg.work.disk = true,
                b"net" => cfg.work.net = true,
                b"poweroff" => cfg.work.poweroff = true,
                b"reset" => cfg.work.reset = true,
                b"echo" => cfg.work.echo = true,
                _ if item.starts_with(b"spin") => {
                    cfg.work.spin_after_s = item
                        .strip_prefix(b"spin:")
                        .and_then(parse_num)
                        .filter(|&s| s <= 86_400);
                    if cfg.work.spin_after_s.is_none() {
                        Line::new(nova_guest_abi::line::ERROR)
                            .s(" what=bad_spin_args")
                            .ks("name", item)
                            .emit();
                    }
                }
                _ => match item.strip_prefix(b"dirty:").and_then(parse_dirty) {
                    Some(d) => cfg.work.dirty = Some(d),
                    None if item.starts_with(b"dirty") => {
                        Line::new(nova_guest_abi::line::ERROR)
                            .s(" what=bad_dirty_args")
                            .ks("name", item)
                            .emit();
                    }
                    None => {
                        Line::new(nova_guest_abi::line::ERROR)
                            .s(" what=unknown_workload")
                            .ks("name", item)
                            .emit();
                    }
                },
            }
        }
        cfg
    }

    /// `virtio_mmio.device=` entries.
    pub fn mmio(&self) -> &[MmioDev] {
        self.mmio.get(..self.nmmio).unwrap_or(&[])
    }
}

fn parse_dirty(v: &[u8]) -> Option<DirtyArgs> {
    let mut it = v.split(|&b| b == b':');
    let mib = parse_num(it.next()?)?;
    let rate = match it.next()? {
        b"max" => 0,
        r => parse_num(r).filter(|&r| r > 0 && r <= 1 << 20)?,
    };
    if it.next().is_some() || mib == 0 || mib > 1 << 20 {
        return None;
    }
    Some(DirtyArgs { mib, rate })
}

/// Parses a decimal number, or hex with a `0x` prefix.
pub fn parse_num(v: &[u8]) -> Option<u64> {
    let (digits, radix) = match v.strip_prefix(b"0x").or_else(|| v.strip_prefix(b"0X")) {
        Some(h) => (h, 16),
        None => (v, 10),
    };
    if digits.is_empty() {
        return None;
    }
    let mut n: u64 = 0;
    for &c in digits {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' if radix == 16 => c - b'a' + 10,
            b'A'..=b'F' if radix == 16 => c - b'A' + 10,
            _ => return None,
        } as u64;
        n = n.checked_mul(radix)?.checked_add(d)?;
    }
    Some(n)
}

/// Parses a Linux `memparse` size: a number with an optional K/M/G suffix.
fn parse_size(v: &[u8]) -> Option<u64> {
    let (num, shift) = match v.split_last() {
        Some((b'k' | b'K', rest)) => (rest, 10),
        Some((b'm' | b'M', rest)) => (rest, 20),
        Some((b'g' | b'G', rest)) => (rest, 30),
        _ => (v, 0),
    };
    parse_num(num)?.checked_mul(1 << shift)
}

/// `<size>@<addr>:<irq>[:<id>]`; the address is what we need.
fn parse_mmio(v: &[u8]) -> Option<MmioDev> {
    let at = v.iter().position(|&b| b == b'@')?;
    let (size, rest) = (v.get(..at)?, v.get(at + 1..)?);
    let colon = rest.iter().position(|&b| b == b':').unwrap_or(rest.len());
    let addr = parse_num(rest.get(..colon)?)?;
    let size = parse_size(size)?;
    if size < 0x100 || addr == 0 || addr >= (1 << 32) || addr & 3 != 0 {
        return None;
    }
    Some(MmioDev { addr })
}

/// `A.B.C.D/PREFIX` (the prefix is accepted and ignored: replies go back to the sender).
fn parse_ip(v: &[u8]) -> Option<[u8; 4]> {
    let addr = match v.iter().position(|&b| b == b'/') {
        Some(p) => {
            let prefix = parse_num(v.get(p + 1..)?)?;
            if prefix > 32 {
                return None;
            }
            v.get(..p)?
        }
        None => v,
    };
    let mut ip = [0u8; 4];
    let mut n = 0;
    for part in addr.split(|&b| b == b'.') {
        let x = parse_num(part).filter(|&x| x < 256 && !part.starts_with(b"0x"))?;
        *ip.get_mut(n)? = x as u8;
        n += 1;
    }
    (n == 4).then_some(ip)
}
