//! The tails of a VM's text files (console, VMM log) for the API and crash reports:
//! the last lines only, without a line still being written, without colour codes.

use std::path::Path;

/// The last `n` lines of a text file (reads at most the last 256 KiB).
pub fn tail_lines(path: &Path, n: usize) -> (Vec<String>, u64) {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return (Vec::new(), 0);
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(256 << 10);
    let mut buf = Vec::new();
    if f.seek(SeekFrom::Start(start)).is_err() || f.read_to_end(&mut buf).is_err() {
        return (Vec::new(), len);
    }
    // A line still being written is left for the next read.
    let complete = buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let text = String::from_utf8_lossy(&buf[..complete]);
    let mut lines: Vec<String> = text.lines().map(strip_ansi).collect();
    if start > 0 && !lines.is_empty() {
        lines.remove(0); // partial first line
    }
    let skip = lines.len().saturating_sub(n);
    (lines.split_off(skip), len)
}

/// Removes ANSI colour sequences (the VMM's log may have them) and `\r`.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for d in chars.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        if c != '\r' {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn tail_leaves_out_a_line_still_being_written() {
        let p = std::env::temp_dir().join(format!("hostd-tail-{}", std::process::id()));
        std::fs::write(&p, "a\nb\nNOVA-PAR").unwrap();
        assert_eq!(super::tail_lines(&p, 10).0, vec!["a", "b"]);
        assert_eq!(super::tail_lines(&p, 1).0, vec!["b"]);
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn strips_colour_codes() {
        assert_eq!(
            super::strip_ansi("\x1b[2m2026\x1b[0m \x1b[32m INFO\x1b[0m x\r"),
            "2026  INFO x"
        );
    }
}
