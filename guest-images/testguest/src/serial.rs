//! The 8250 UART on COM1 (output, and input lines for the `echo` workload) and line building: every console line is
//! assembled in a buffer and written whole under a spinlock shared by all vCPUs.

use crate::cpu::inb;
use core::sync::atomic::{AtomicBool, Ordering};

const COM1: u16 = 0x3f8;
const LSR: u16 = COM1 + 5;
const LSR_THRE: u8 = 0x20;
/// LSR: a received byte is waiting.
const LSR_DR: u8 = 0x01;

static LOCK: AtomicBool = AtomicBool::new(false);

/// Bytes a 16550's transmit FIFO takes once THRE says it is empty.
const TX_FIFO: usize = 16;

/// Writes `bytes` a FIFO-load at a time: one LSR poll and one `rep outsb` per 16
/// bytes (the entry code enabled the FIFOs), as Linux's 8250 driver does for a 16550A.
/// Each port access is a VM exit, so this is 2 exits per 16 bytes instead of 2 per byte.
fn put(bytes: &[u8]) {
    for chunk in bytes.chunks(TX_FIFO) {
        while inb(LSR) & LSR_THRE == 0 {
            core::hint::spin_loop();
        }
        // SAFETY: reads `chunk` (rsi, rcx bytes) and writes them to COM1's THR; the
        // direction flag is clear (Rust ABI).
        unsafe {
            core::arch::asm!(
                "rep outsb",
                inout("rsi") chunk.as_ptr() => _,
                inout("rcx") chunk.len() => _,
                in("dx") COM1,
                options(nostack, preserves_flags, readonly)
            )
        };
    }
}

/// Console input: bytes received on COM1, a line at a time.
pub struct Input {
    buf: [u8; 64],
    len: usize,
}

impl Input {
    pub const fn new() -> Input {
        Input {
            buf: [0; 64],
            len: 0,
        }
    }

    /// Reads what the UART holds (LSR data ready); each line, ended by `\n` or `\r`
    /// and cut at 64 bytes, comes back as `NOVA-ECHO text=<line>`.
    pub fn poll(&mut self) {
        while inb(LSR) & LSR_DR != 0 {
            let c = inb(COM1);
            if c == b'\n' || c == b'\r' {
                if self.len > 0 {
                    Line::new("NOVA-ECHO")
                        .ks("text", self.buf.get(..self.len).unwrap_or(&[]))
                        .emit();
                }
                self.len = 0;
            } else if let Some(slot) = self.buf.get_mut(self.len) {
                *slot = c;
                self.len += 1;
            }
        }
    }
}

/// Writes `line` (newline included) to COM1, whole, under the console lock.
pub fn write_line(line: &[u8]) {
    while LOCK
        .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        core::hint::spin_loop();
    }
    put(line);
    LOCK.store(false, Ordering::Release);
}

/// Bytes a line holds before its newline; longer is truncated.
const LINE_MAX: usize = 160;

/// One console line under construction (at most [`LINE_MAX`] bytes, then the newline).
pub struct Line {
    /// The line and room for its newline, so [`Line::emit`] writes it in place: every
    /// byte the guest touches costs ~1 us under emulation, a copy or a clear ~0.1 ms.
    buf: [u8; LINE_MAX + 1],
    len: usize,
}

impl Line {
    /// Starts a line with `key` (e.g. `NOVA-MEM`).
    pub fn new(key: &str) -> Line {
        let mut l = Line {
            buf: [0; LINE_MAX + 1],
            len: 0,
        };
        l.s(key);
        l
    }

    /// Appends one byte.
    pub fn b(&mut self, b: u8) -> &mut Line {
        if self.len < LINE_MAX {
            self.buf[self.len] = b;
            self.len += 1;
        }
        self
    }

    /// Appends raw bytes.
    pub fn bytes(&mut self, s: &[u8]) -> &mut Line {
        for &b in s {
            self.b(b);
        }
        self
    }

    /// Appends a string.
    pub fn s(&mut self, s: &str) -> &mut Line {
        self.bytes(s.as_bytes())
    }

    /// Appends a decimal number (no core::fmt: it uses SSE).
    pub fn u(&mut self, mut v: u64) -> &mut Line {
        let mut digits = [0u8; 20];
        let mut n = 0;
        loop {
            if let Some(d) = digits.get_mut(n) {
                *d = b'0' + (v % 10) as u8;
            }
            n += 1;
            v /= 10;
            if v == 0 || n >= 20 {
                break;
            }
        }
        while n > 0 {
            n -= 1;
            if let Some(&d) = digits.get(n) {
                self.b(d);
            }
        }
        self
    }

    /// Appends `v` as `digits` lowercase hex digits (no prefix).
    pub fn hex(&mut self, v: u64, digits: u32) -> &mut Line {
        let mut i = digits;
        while i > 0 {
            i -= 1;
            let nib = ((v >> (i * 4)) & 0xf) as u8;
            self.b(if nib < 10 {
                b'0' + nib
            } else {
                b'a' + nib - 10
            });
        }
        self
    }

    /// Appends ` key=<decimal>`.
    pub fn kv(&mut self, key: &str, v: u64) -> &mut Line {
        self.b(b' ').s(key).b(b'=').u(v)
    }

    /// Appends ` key=0x<hex>`.
    pub fn kx(&mut self, key: &str, v: u64) -> &mut Line {
        self.b(b' ').s(key).s("=0x").hex(v, 8)
    }

    /// Appends ` key=value`.
    pub fn ks(&mut self, key: &str, v: &[u8]) -> &mut Line {
        self.b(b' ').s(key).b(b'=').bytes(v)
    }

    /// Writes the line and a newline to COM1, whole, under the console lock.
    pub fn emit(&mut self) {
        let n = self.len;
        self.buf[n] = b'\n';
        write_line(&self.buf[..=n]);
    }
}

/// Prints `NOVA-ERROR what=<what>`.
pub fn error(what: &str) {
    Line::new(nova_guest_abi::line::ERROR)
        .s(" what=")
        .s(what)
        .emit();
}
