//! The bit format of a stored chunk (codec 1): Gorilla's ideas (delta-of-delta
//! times, XOR'd values) without the parts a chunk row already says. The row holds the
//! window, the point count and the first and last times, so a chunk carries no 64-bit
//! start time, no raw first value and no end marker; times are offsets in the window,
//! and a chunk whose points are evenly spaced (every scrape on time, the usual case)
//! stores its spacing once instead of a bit per point.
//!
//! Layout, most significant bit first:
//! - first offset, then (from two points) the first delta: each as [`put_len`] (6 bits
//!   of length, then that many bits);
//! - from three points: 1 bit "evenly spaced"; when 0, one delta-of-delta per further
//!   point: `0` (same delta), `10` + 7, `110` + 9, `1110` + 12 bits, or `1111` + a
//!   length-prefixed value (zigzag-coded);
//! - per value, XOR with the previous one (the first with 0.0's bits): `0` (same),
//!   `10` + the meaningful bits within the previous window, or `11` + 6 bits leading
//!   zeros + 6 bits (length - 1) + the meaningful bits.
//!
//! Decoding never panics on any bytes: a short or malformed chunk is an error.

/// Bits appended to a byte vector, most significant first.
#[derive(Default)]
struct Bits {
    out: Vec<u8>,
    acc: u64,
    n: u32,
}

impl Bits {
    /// Appends the low `width` (<= 64) bits of `v`.
    fn put(&mut self, v: u64, width: u32) {
        if width == 0 {
            return;
        }
        if width > 32 {
            self.put(v >> 32, width - 32);
            return self.put(v & 0xffff_ffff, 32);
        }
        let v = v & ((1u64 << width) - 1);
        self.acc = (self.acc << width) | v;
        self.n += width;
        while self.n >= 8 {
            self.n -= 8;
            self.out.push((self.acc >> self.n) as u8);
        }
        self.acc &= (1u64 << self.n) - 1;
    }

    fn finish(mut self) -> Vec<u8> {
        if self.n > 0 {
            let pad = 8 - self.n;
            self.put(0, pad);
        }
        self.out
    }
}

/// Bits read back; `None` past the end.
struct Reader<'a> {
    data: &'a [u8],
    bit: usize,
}

impl Reader<'_> {
    fn get(&mut self, width: u32) -> Option<u64> {
        let mut v = 0u64;
        for _ in 0..width {
            let byte = *self.data.get(self.bit / 8)?;
            let b = (byte >> (7 - self.bit % 8)) & 1;
            v = (v << 1) | b as u64;
            self.bit += 1;
        }
        Some(v)
    }

    /// Ones before the first zero, at most `max` (no zero read after `max` ones).
    fn ones(&mut self, max: u32) -> Option<u32> {
        let mut n = 0;
        while n < max && self.get(1)? == 1 {
            n += 1;
        }
        Some(n)
    }
}

/// Writes `v` as 6 bits of bit length, then the bits (0 takes 6 bits).
fn put_len(b: &mut Bits, v: u64) {
    let len = 64 - v.leading_zeros();
    if len >= 63 {
        // 64 does not fit in 6 bits: 63 says "64 bits follow".
        b.put(63, 6);
        b.put(v, 64);
    } else {
        b.put(len as u64, 6);
        b.put(v, len);
    }
}

fn get_len(r: &mut Reader) -> Option<u64> {
    let len = r.get(6)? as u32;
    r.get(if len == 63 { 64 } else { len })
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Encodes points given as (offset in the window, value), offsets increasing.
pub fn encode(points: &[(u32, f64)]) -> Vec<u8> {
    let mut b = Bits::default();
    let Some(&(first, _)) = points.first() else {
        return vec![];
    };
    put_len(&mut b, first as u64);
    if points.len() >= 2 {
        let d1 = points[1].0.wrapping_sub(first) as u64;
        put_len(&mut b, d1);
        if points.len() >= 3 {
            let even = points
                .windows(2)
                .all(|w| w[1].0.wrapping_sub(w[0].0) as u64 == d1);
            b.put(even as u64, 1);
            if !even {
                let mut prev = d1 as i64;
                for w in points[1..].windows(2) {
                    let d = w[1].0.wrapping_sub(w[0].0) as i64;
                    let z = zigzag(d - prev);
                    prev = d;
                    match z {
                        0 => b.put(0, 1),
                        1..=127 => {
                            b.put(0b10, 2);
                            b.put(z, 7);
                        }
                        128..=511 => {
                            b.put(0b110, 3);
                            b.put(z, 9);
                        }
                        512..=4095 => {
                            b.put(0b1110, 4);
                            b.put(z, 12);
                        }
                        _ => {
                            b.put(0b1111, 4);
                            put_len(&mut b, z);
                        }
                    }
                }
            }
        }
    }
    let mut prev = 0u64;
    // The previous XOR's window: (leading zeros, meaningful bits); none yet.
    let mut window: Option<(u32, u32)> = None;
    for &(_, v) in points {
        let bits = v.to_bits();
        let x = bits ^ prev;
        prev = bits;
        if x == 0 {
            b.put(0, 1);
            continue;
        }
        let lead = x.leading_zeros().min(63);
        let trail = x.trailing_zeros();
        let len = 64 - lead - trail;
        // Reuse the previous window when it holds this XOR and costs no more bits.
        if let Some((pl, plen)) = window {
            let ptrail = 64 - pl - plen;
            if lead >= pl && trail >= ptrail && plen <= len + 12 {
                b.put(0b10, 2);
                b.put(x >> ptrail, plen);
                continue;
            }
        }
        b.put(0b11, 2);
        b.put(lead as u64, 6);
        b.put((len - 1) as u64, 6);
        b.put(x >> trail, len);
        window = Some((lead, len));
    }
    b.finish()
}

/// Decodes `n` points of a chunk whose window starts at `start`, appending
/// (seconds, value) to `out`; `None` when the bytes do not hold `n` points.
pub fn decode(data: &[u8], start: u64, n: usize, out: &mut Vec<(u64, f64)>) -> Option<()> {
    if n == 0 {
        return Some(());
    }
    // No more points than bits: a hostile count cannot make us allocate.
    if n > data.len().saturating_mul(8) {
        return None;
    }
    let mut r = Reader { data, bit: 0 };
    let mut times = Vec::with_capacity(n);
    let mut t = get_len(&mut r)?;
    times.push(t);
    if n >= 2 {
        let mut d = get_len(&mut r)?;
        t = t.checked_add(d)?;
        times.push(t);
        if n >= 3 {
            let even = r.get(1)? == 1;
            for _ in 2..n {
                if !even {
                    let z = match r.ones(4)? {
                        0 => 0,
                        1 => r.get(7)?,
                        2 => r.get(9)?,
                        3 => r.get(12)?,
                        _ => get_len(&mut r)?,
                    };
                    d = (d as i64).checked_add(unzigzag(z))? as u64;
                }
                t = t.checked_add(d)?;
                times.push(t);
            }
        }
    }
    let mut prev = 0u64;
    let mut window: Option<(u32, u32)> = None;
    for &off in &times {
        let v = match r.ones(2)? {
            0 => prev,
            1 => {
                let (lead, len) = window?;
                prev ^ (r.get(len)? << (64 - lead - len))
            }
            _ => {
                let lead = r.get(6)? as u32;
                let len = r.get(6)? as u32 + 1;
                if lead + len > 64 {
                    return None;
                }
                window = Some((lead, len));
                prev ^ (r.get(len)? << (64 - lead - len))
            }
        };
        prev = v;
        out.push((start.checked_add(off)?, f64::from_bits(v)));
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(points: &[(u32, f64)]) -> Vec<u8> {
        let data = encode(points);
        let mut out = vec![];
        decode(&data, 1_000_000, points.len(), &mut out).expect("decodes");
        let want: Vec<(u64, u64)> = points
            .iter()
            .map(|&(t, v)| (1_000_000 + t as u64, v.to_bits()))
            .collect();
        let got: Vec<(u64, u64)> = out.iter().map(|&(t, v)| (t, v.to_bits())).collect();
        assert_eq!(got, want);
        data
    }

    #[test]
    fn evenly_spaced_and_irregular_points_and_odd_values_come_back_bit_for_bit() {
        round_trip(&[]);
        round_trip(&[(7, 1.5)]);
        round_trip(&[(0, 0.0), (10, -0.0)]);
        let even: Vec<(u32, f64)> = (0..180).map(|i| (i * 10, 42.0)).collect();
        // A constant, evenly spaced chunk: header, one value, a bit per repeat.
        assert!(round_trip(&even).len() <= 8 + 180 / 8);
        let odd = [
            (0, f64::NAN),
            (10, f64::INFINITY),
            (21, f64::NEG_INFINITY),
            (29, f64::MIN_POSITIVE),
            (40, f64::MAX),
            (4000, -3.25),
            (4_000_000, 1e-300),
            (u32::MAX, 12.0),
        ];
        round_trip(&odd);
        let mut x = 1u64;
        let noisy: Vec<(u32, f64)> = (0..500u32)
            .map(|i| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                (i * 10 + (x >> 62) as u32, (x >> 20) as f64 / 7.0)
            })
            .collect();
        round_trip(&noisy);
    }

    #[test]
    fn length_prefixed_numbers_of_every_width_come_back() {
        let mut b = Bits::default();
        let vals: Vec<u64> = (0..64)
            .map(|i| 1u64 << i)
            .chain([0, u64::MAX, (1 << 63) - 1])
            .collect();
        for &v in &vals {
            put_len(&mut b, v);
        }
        let data = b.finish();
        let mut r = Reader {
            data: &data,
            bit: 0,
        };
        for &v in &vals {
            assert_eq!(get_len(&mut r), Some(v));
        }
    }

    #[test]
    fn any_bytes_decode_to_an_answer_or_an_error_never_a_panic() {
        let mut x = 7u64;
        for len in 0..200usize {
            for _ in 0..50 {
                let data: Vec<u8> = (0..len)
                    .map(|_| {
                        x = x
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        (x >> 56) as u8
                    })
                    .collect();
                let mut out = vec![];
                let n = (x >> 40) as usize % 300;
                if decode(&data, u64::MAX - 5, n, &mut out).is_some() {
                    assert_eq!(out.len(), n);
                }
            }
        }
        // A count no chunk of that size can hold is refused before any allocation.
        assert!(decode(&[0xff; 4], 0, usize::MAX, &mut vec![]).is_none());
    }
}
