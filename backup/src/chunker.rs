//! Owns splitting a byte range into chunk boundaries: fixed-size or content-defined
//! (FastCDC, v2020). Returns lengths only; reading and hashing belong to the store.

use crate::manifest::Chunking;

/// Splits `data` into consecutive chunk lengths under `chunking`.
/// Fixed chunks are aligned to `base_offset` so they line up with the dirty bitmap.
pub fn split(chunking: Chunking, base_offset: u64, data: &[u8]) -> Vec<usize> {
    match chunking {
        Chunking::Fixed { size } => {
            let size = size as u64;
            let mut out = Vec::new();
            let mut pos = 0usize;
            while pos < data.len() {
                let abs = base_offset + pos as u64;
                let to_boundary = (size - abs % size) as usize;
                let len = to_boundary.min(data.len() - pos);
                out.push(len);
                pos += len;
            }
            out
        }
        Chunking::Cdc { min, avg, max } => fastcdc::v2020::FastCDC::new(data, min, avg, max)
            .map(|c| c.length)
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_chunks_align_to_absolute_offsets() {
        let data = vec![0u8; 10];
        assert_eq!(split(Chunking::Fixed { size: 4 }, 2, &data), vec![2, 4, 4]);
    }

    #[test]
    fn cdc_boundaries_survive_an_insertion_at_the_front() {
        let mut x: u64 = 1;
        let data: Vec<u8> = (0..(4 << 20))
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let c = Chunking::Cdc {
            min: 16 << 10,
            avg: 64 << 10,
            max: 256 << 10,
        };
        let a = split(c, 0, &data);
        let mut shifted = vec![9u8; 100];
        shifted.extend_from_slice(&data);
        let b = split(c, 0, &shifted);
        assert_eq!(a.iter().sum::<usize>(), data.len());
        // After the first chunk or two, the boundaries re-synchronise: the tails match.
        assert_eq!(a[a.len() - 5..], b[b.len() - 5..]);
    }
}
