//! Page data on the wire, compressed as the migration asks (zstd or lz4, or not at
//! all): a batch encoded by the sender, decoded by the receiver into exactly the pages
//! the batch names, or refused.

use std::borrow::Cow;

use nova_vmm_api::Compression;

use super::protocol::ProtocolError;

/// Encodes page data (a multiple of 4096 bytes).
pub fn compress(c: Compression, data: &[u8]) -> Cow<'_, [u8]> {
    match c {
        Compression::None => Cow::Borrowed(data),
        Compression::Zstd => {
            Cow::Owned(zstd::bulk::compress(data, 1).expect("zstd compression of memory"))
        }
        Compression::Lz4 => Cow::Owned(lz4_flex::compress(data)),
    }
}

/// Decodes page data that must come out as exactly `len` bytes.
pub fn decompress(c: Compression, data: &[u8], len: usize) -> Result<Cow<'_, [u8]>, ProtocolError> {
    let out: Cow<[u8]> = match c {
        Compression::None => Cow::Borrowed(data),
        Compression::Zstd => Cow::Owned(
            zstd::bulk::decompress(data, len)
                .map_err(|e| ProtocolError::Decompress(e.to_string()))?,
        ),
        Compression::Lz4 => Cow::Owned(
            lz4_flex::decompress(data, len)
                .map_err(|e| ProtocolError::Decompress(e.to_string()))?,
        ),
    };
    if out.len() != len {
        return Err(ProtocolError::Decompress(format!(
            "{} bytes, expected {len}",
            out.len()
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_data_compresses_and_bad_data_is_refused() {
        let data: Vec<u8> = (0..8192u32).map(|i| (i % 7) as u8).collect();
        for c in [Compression::None, Compression::Zstd, Compression::Lz4] {
            let z = compress(c, &data);
            assert_eq!(&*decompress(c, &z, data.len()).unwrap(), &data[..]);
            assert!(decompress(c, &z[..z.len() / 2], data.len()).is_err());
        }
        assert!(compress(Compression::Zstd, &data).len() < data.len() / 4);
    }
}
