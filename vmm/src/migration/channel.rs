//! One migration connection as two halves that two threads may use at once: a
//! [`LinkReader`] and a [`LinkWriter`]. Under TLS they carry TLS 1.3 application data
//! records themselves, with the keys [`super::tls`]'s rustls handshake agreed on
//! (as the kernel's TLS offload does): each direction has its own key and sequence
//! number, so the reader and writer share no lock, and a frame of pages is sealed
//! in place as it is copied into its record (one copy, as plaintext TCP's into the
//! socket), and opened in place in the receive buffer. Without TLS (`--insecure`)
//! they are the plain socket.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use rustls::ConnectionTrafficSecrets;

/// TLS record header: type, legacy version (2), length (2).
const HEADER: usize = 5;
/// Largest plaintext in a record (RFC 8446 5.1).
const MAX_PLAIN: usize = 1 << 14;
/// AEAD tag length of every TLS 1.3 cipher suite used here.
const TAG: usize = 16;
/// Largest ciphertext a peer may send in a record (RFC 8446 5.2).
const MAX_CIPHER: usize = MAX_PLAIN + 256;
const APPLICATION_DATA: u8 = 23;
const ALERT: u8 = 21;

fn invalid(what: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("TLS record: {what}"),
    )
}

/// One direction's record protection: its key, static IV and sequence number.
struct Direction {
    key: LessSafeKey,
    iv: [u8; 12],
    seq: u64,
}

impl Direction {
    fn new(seq: u64, secrets: ConnectionTrafficSecrets) -> std::io::Result<Self> {
        let (alg, key, iv) = match secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&aead::AES_128_GCM, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&aead::AES_256_GCM, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                (&aead::CHACHA20_POLY1305, key, iv)
            }
            _ => return Err(invalid("unsupported cipher suite")),
        };
        let key = UnboundKey::new(alg, key.as_ref()).map_err(|_| invalid("bad key"))?;
        let iv: [u8; 12] = iv.as_ref().try_into().map_err(|_| invalid("bad IV"))?;
        Ok(Direction {
            key: LessSafeKey::new(key),
            iv,
            seq,
        })
    }

    /// The next record's nonce: the IV with the sequence number XORed into its end.
    fn next_nonce(&mut self) -> std::io::Result<Nonce> {
        let mut n = self.iv;
        for (b, s) in n[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *b ^= s;
        }
        // A sequence number never repeats under one key (2^64 records is unreachable;
        // refusing beats wrapping).
        self.seq = self
            .seq
            .checked_add(1)
            .ok_or_else(|| invalid("sequence exhausted"))?;
        Ok(Nonce::assume_unique_for_key(n))
    }
}

/// The sending half's record state and its reused output buffer.
struct Sealer {
    dir: Direction,
    out: Vec<u8>,
}

impl Sealer {
    /// Seals `plain` into records at the end of `self.out`.
    fn seal(&mut self, plain: &[u8]) -> std::io::Result<()> {
        for chunk in plain.chunks(MAX_PLAIN) {
            let len = chunk.len() + 1 + TAG;
            let header = [APPLICATION_DATA, 3, 3, (len >> 8) as u8, (len & 0xff) as u8];
            self.out.extend_from_slice(&header);
            let body = self.out.len();
            self.out.extend_from_slice(chunk);
            self.out.push(APPLICATION_DATA);
            let nonce = self.dir.next_nonce()?;
            let tag = self
                .dir
                .key
                .seal_in_place_separate_tag(nonce, Aad::from(header), &mut self.out[body..])
                .map_err(|_| invalid("cannot seal"))?;
            self.out.extend_from_slice(tag.as_ref());
        }
        Ok(())
    }
}

/// The receiving half's record state: ciphertext read ahead, and the plaintext of the
/// record opened last (in place, inside `buf`).
struct Opener {
    dir: Direction,
    buf: Box<[u8]>,
    /// Unread plaintext: `buf[plain.0..plain.1]`.
    plain: (usize, usize),
    /// Ciphertext not opened yet: `buf[start..end]`.
    start: usize,
    end: usize,
    closed: bool,
}

impl Opener {
    fn new(dir: Direction) -> Self {
        Opener {
            dir,
            // Room for several full records per socket read.
            buf: vec![0u8; 4 * (HEADER + MAX_CIPHER)].into_boxed_slice(),
            plain: (0, 0),
            start: 0,
            end: 0,
            closed: false,
        }
    }

    /// Reads from `sock` until `n` ciphertext bytes wait from `start` on; `false` at
    /// the end of the stream before that.
    fn fill(&mut self, sock: &mut impl Read, n: usize) -> std::io::Result<bool> {
        if self.start + n > self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        while self.end - self.start < n {
            let got = sock.read(&mut self.buf[self.end..])?;
            if got == 0 {
                return Ok(false);
            }
            self.end += got;
        }
        Ok(true)
    }

    /// Opens the next record in place; `false` at the end of the stream (the peer's
    /// close_notify, or the socket's end between records).
    fn open_next(&mut self, sock: &mut impl Read) -> std::io::Result<bool> {
        if !self.fill(sock, HEADER)? {
            if self.start == self.end {
                return Ok(false);
            }
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let h: [u8; HEADER] = self.buf[self.start..self.start + HEADER]
            .try_into()
            .map_err(|_| invalid("header"))?;
        let len = u16::from_be_bytes([h[3], h[4]]) as usize;
        if h[0] != APPLICATION_DATA || h[1] != 3 || !(TAG + 1..=MAX_CIPHER).contains(&len) {
            return Err(invalid("not an application data record"));
        }
        if !self.fill(sock, HEADER + len)? {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let body = self.start + HEADER;
        let nonce = self.dir.next_nonce()?;
        let opened = self
            .dir
            .key
            .open_in_place(nonce, Aad::from(h), &mut self.buf[body..body + len])
            .map_err(|_| invalid("does not authenticate"))?;
        // TLSInnerPlaintext: content, its type, zero padding.
        let inner = opened
            .iter()
            .rposition(|b| *b != 0)
            .ok_or_else(|| invalid("no content type"))?;
        let kind = opened[inner];
        self.start = body + len;
        match kind {
            APPLICATION_DATA => {
                self.plain = (body, body + inner);
                Ok(true)
            }
            // An alert from this peer only ever says it closed (or failed): either way
            // nothing more comes.
            ALERT => {
                self.closed = true;
                Ok(false)
            }
            _ => Err(invalid("unexpected content type")),
        }
    }
}

/// The reading half of a migration connection.
pub struct LinkReader {
    sock: TcpStream,
    rx: Option<Box<Opener>>,
}

/// The writing half of a migration connection; clones share its record state, and
/// each `write` is sealed and sent whole before another clone's.
pub struct LinkWriter {
    sock: TcpStream,
    tx: Option<Arc<Mutex<Sealer>>>,
}

/// A connection, both halves.
pub struct Link {
    pub reader: LinkReader,
    pub writer: LinkWriter,
}

impl Link {
    /// `sock` in plaintext (`--insecure`).
    pub fn plain(sock: TcpStream) -> std::io::Result<Link> {
        Ok(Link {
            reader: LinkReader {
                sock: sock.try_clone()?,
                rx: None,
            },
            writer: LinkWriter { sock, tx: None },
        })
    }

    /// `sock` carrying TLS records under the keys of a finished handshake: `tx` for
    /// what this side sends, `rx` for what it receives, each with its next sequence
    /// number.
    pub fn tls(
        sock: TcpStream,
        tx: (u64, ConnectionTrafficSecrets),
        rx: (u64, ConnectionTrafficSecrets),
    ) -> std::io::Result<Link> {
        Ok(Link {
            reader: LinkReader {
                sock: sock.try_clone()?,
                rx: Some(Box::new(Opener::new(Direction::new(rx.0, rx.1)?))),
            },
            writer: LinkWriter {
                sock,
                tx: Some(Arc::new(Mutex::new(Sealer {
                    dir: Direction::new(tx.0, tx.1)?,
                    out: Vec::new(),
                }))),
            },
        })
    }
}

impl LinkReader {
    /// The socket (timeouts, shutdown, arrival stamps; never read it directly).
    pub fn socket(&self) -> &TcpStream {
        &self.sock
    }

    /// Whether plaintext is ready without reading the socket (a decrypted record's
    /// rest, or ciphertext already read): polling the socket would miss it.
    pub fn has_buffered(&self) -> bool {
        self.rx
            .as_ref()
            .is_some_and(|rx| rx.plain.0 < rx.plain.1 || rx.start < rx.end)
    }
}

impl Read for LinkReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let Some(rx) = self.rx.as_mut() else {
            return self.sock.read(out);
        };
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            let (s, e) = rx.plain;
            if s < e {
                let n = out.len().min(e - s);
                out[..n].copy_from_slice(&rx.buf[s..s + n]);
                rx.plain.0 += n;
                return Ok(n);
            }
            if rx.closed || !rx.open_next(&mut self.sock)? {
                return Ok(0);
            }
        }
    }
}

impl LinkWriter {
    /// The socket (timeouts, buffer sizes, shutdown; never write it directly).
    pub fn socket(&self) -> &TcpStream {
        &self.sock
    }

    /// Another handle on the same connection (and the same record state).
    pub fn try_clone(&self) -> std::io::Result<LinkWriter> {
        Ok(LinkWriter {
            sock: self.sock.try_clone()?,
            tx: self.tx.clone(),
        })
    }
}

impl Write for LinkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let Some(tx) = &self.tx else {
            return self.sock.write(data);
        };
        let mut tx = tx.lock().unwrap_or_else(|e| e.into_inner());
        tx.out.clear();
        tx.seal(data)?;
        let r = (&self.sock).write_all(&tx.out);
        // A frame of pages is 1 MiB: keep the buffer for the next, not a larger one.
        if tx.out.capacity() > 4 << 20 {
            tx.out = Vec::new();
        }
        r?;
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Seals `plain` into TLS records with `tx`'s keys, as a [`LinkWriter`] sends them.
pub fn seal_records(tx: (u64, ConnectionTrafficSecrets), plain: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = Sealer {
        dir: Direction::new(tx.0, tx.1)?,
        out: Vec::new(),
    };
    s.seal(plain)?;
    Ok(s.out)
}

/// Reads the plaintext of `records` (bytes as a peer sends them) with `rx`'s keys
/// into `out` until their end or the first error, as a [`LinkReader`] does: what the
/// fuzz target `migration_tls_records` runs on arbitrary bytes.
pub fn open_records(
    rx: (u64, ConnectionTrafficSecrets),
    mut records: &[u8],
    out: &mut Vec<u8>,
) -> std::io::Result<()> {
    let mut o = Opener::new(Direction::new(rx.0, rx.1)?);
    loop {
        let (s, e) = o.plain;
        out.extend_from_slice(&o.buf[s..e]);
        o.plain = (e, e);
        if o.closed || !o.open_next(&mut records)? {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::crypto::cipher::{AeadKey, Iv};

    fn keys() -> (u64, ConnectionTrafficSecrets) {
        (
            5,
            ConnectionTrafficSecrets::Aes256Gcm {
                key: AeadKey::from([3u8; 32]),
                iv: Iv::new([1u8; 12]),
            },
        )
    }

    #[test]
    fn sealed_records_open_to_their_plaintext_and_a_damaged_one_does_not() {
        let plain: Vec<u8> = (0..40_000u32).map(|i| i as u8).collect();
        let sealed = seal_records(keys(), &plain).unwrap();
        // Three records of at most 16 KiB, each 22 bytes longer.
        assert_eq!(sealed.len(), plain.len() + 3 * 22);
        let mut out = Vec::new();
        open_records(keys(), &sealed, &mut out).unwrap();
        assert_eq!(out, plain);
        for at in [0, 3, 4, 5, 100, sealed.len() - 1] {
            let mut bad = sealed.clone();
            bad[at] ^= 0x40;
            let mut out = Vec::new();
            assert!(open_records(keys(), &bad, &mut out).is_err(), "{at}");
            assert!(out.len() < plain.len());
        }
        // Cut short: an error, not a wait or a panic.
        let mut out = Vec::new();
        assert!(open_records(keys(), &sealed[..sealed.len() - 7], &mut out).is_err());
    }
}
