//! Who may take part in a migration, and how its connections are secured: TLS 1.3
//! (rustls) on every connection, the destination presenting the certificate of its
//! per-migration credential (its SHA-256 pinned by the source: no CA, no names), the
//! source then proving itself with the credential's secret as its first application
//! data. A connection that fails either is dropped before a single message of the
//! migration protocol is read from it. After the handshake the records are carried by
//! [`super::channel`] with the agreed keys. `--insecure` (benchmarks only) skips all of
//! this: plaintext, and no authentication.
//!
//! The handshake is fed one TLS record at a time, so that nothing past the handshake
//! is read into rustls: the keys are then handed to the channel with nothing left
//! behind in rustls' buffers.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

use nova_vmm_api::{IncomingCredential, MigrationPeer};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{ring as provider, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, ServerConfig, ServerConnection,
};

use super::channel::Link;

/// The name in every destination certificate (the pin is what is checked, not it).
pub const SERVER_NAME: &str = "nova-migration";
/// Largest handshake record accepted (a TLS 1.3 record's limit).
const MAX_RECORD: usize = (1 << 14) + 256;

/// Why a connection was not let in (destination) or could not be made (source).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("the connection did not present this migration's secret")]
    WrongSecret,
    #[error("credential: {0}")]
    Credential(String),
}

fn crypto() -> Arc<CryptoProvider> {
    Arc::new(provider::default_provider())
}

/// How the destination lets connections in.
#[derive(Clone)]
pub enum Listen {
    /// TLS with this credential's certificate; each connection must send `secret`.
    Tls {
        config: Arc<ServerConfig>,
        secret: [u8; 32],
    },
    /// Plaintext, anyone (`--insecure`).
    Insecure,
}

impl Listen {
    /// The destination's side of `cred` (read from `--incoming-credential`).
    pub fn from_credential(cred: &IncomingCredential) -> Result<Listen, TlsError> {
        let bytes = |field: &str, hex: &str| -> Result<Vec<u8>, TlsError> {
            if !hex.len().is_multiple_of(2) || hex.len() > 64 << 10 {
                return Err(TlsError::Credential(format!("{field}: not hex")));
            }
            (0..hex.len() / 2)
                .map(|i| {
                    hex.get(2 * i..2 * i + 2)
                        .and_then(|b| u8::from_str_radix(b, 16).ok())
                        .ok_or_else(|| TlsError::Credential(format!("{field}: not hex")))
                })
                .collect()
        };
        let cert = CertificateDer::from(bytes("cert_der", &cred.cert_der)?);
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(bytes("key_der", &cred.key_der)?));
        let secret = nova_vmm_api::migration::hex32("secret", &cred.secret)
            .map_err(|e| TlsError::Credential(e.to_string()))?;
        let mut config = ServerConfig::builder_with_provider(crypto())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)?;
        // The channel carries the records after the handshake: it needs the keys, and
        // nothing may follow the handshake that it would not understand.
        config.enable_secret_extraction = true;
        config.send_tls13_tickets = 0;
        Ok(Listen::Tls {
            config: Arc::new(config),
            secret,
        })
    }

    /// Lets `sock` in, or says why not. The caller bounds the time it may take with
    /// the socket's timeouts.
    pub fn accept(&self, mut sock: TcpStream) -> Result<Link, TlsError> {
        let (config, secret) = match self {
            Listen::Insecure => return Ok(Link::plain(sock)?),
            Listen::Tls { config, secret } => (config, secret),
        };
        let mut conn = ServerConnection::new(config.clone())?;
        handshake(&mut conn, &mut sock)?;
        let s = conn.dangerous_extract_secrets()?;
        let mut link = Link::tls(sock, s.tx, s.rx)?;
        let mut got = [0u8; 32];
        link.reader.read_exact(&mut got)?;
        if !same(&got, secret) {
            return Err(TlsError::WrongSecret);
        }
        Ok(link)
    }
}

/// Compares without stopping at the first difference (the secret's bytes must not
/// be guessable one at a time by timing).
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// How the source connects.
#[derive(Clone)]
pub enum Dial {
    /// TLS to a destination whose certificate has this hash, proving itself with `secret`.
    Tls {
        config: Arc<ClientConfig>,
        secret: [u8; 32],
    },
    /// Plaintext (`--insecure`).
    Insecure,
}

impl Dial {
    /// The source's side of `peer` (from `PUT /v1/migration`).
    pub fn from_peer(peer: &MigrationPeer) -> Result<Dial, TlsError> {
        let (pin, secret) = peer
            .decode()
            .map_err(|e| TlsError::Credential(e.to_string()))?;
        let crypto = crypto();
        let verifier = Arc::new(Pinned {
            pin,
            algs: crypto.signature_verification_algorithms,
        });
        let mut config = ClientConfig::builder_with_provider(crypto)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        config.enable_secret_extraction = true;
        config.resumption = rustls::client::Resumption::disabled();
        config.enable_sni = false;
        Ok(Dial::Tls {
            config: Arc::new(config),
            secret,
        })
    }

    /// Secures the connected `sock` as this says.
    pub fn secure(&self, mut sock: TcpStream) -> Result<Link, TlsError> {
        let (config, secret) = match self {
            Dial::Insecure => return Ok(Link::plain(sock)?),
            Dial::Tls { config, secret } => (config, secret),
        };
        let name =
            ServerName::try_from(SERVER_NAME).map_err(|e| TlsError::Credential(e.to_string()))?;
        let mut conn = ClientConnection::new(config.clone(), name)?;
        handshake(&mut conn, &mut sock)?;
        let s = conn.dangerous_extract_secrets()?;
        let mut link = Link::tls(sock, s.tx, s.rx)?;
        link.writer.write_all(secret)?;
        Ok(link)
    }
}

/// Runs a handshake to its end, reading one record at a time (see the module's note).
fn handshake<D>(
    conn: &mut rustls::ConnectionCommon<D>,
    sock: &mut TcpStream,
) -> Result<(), TlsError> {
    loop {
        while conn.wants_write() {
            conn.write_tls(sock)?;
        }
        if !conn.is_handshaking() {
            return Ok(());
        }
        let mut header = [0u8; 5];
        sock.read_exact(&mut header)?;
        let len = u16::from_be_bytes([header[3], header[4]]) as usize;
        if len > MAX_RECORD {
            return Err(TlsError::Tls(rustls::Error::General(
                "oversized record in the handshake".into(),
            )));
        }
        let mut record = vec![0u8; 5 + len];
        record[..5].copy_from_slice(&header);
        sock.read_exact(&mut record[5..])?;
        let mut rest = &record[..];
        while !rest.is_empty() {
            conn.read_tls(&mut rest)?;
            if let Err(e) = conn.process_new_packets() {
                // Tell the peer why (an alert) before giving up.
                let _ = conn.write_tls(sock);
                return Err(e.into());
            }
        }
    }
}

/// The source's check of the destination: its certificate is the pinned one, and
/// it holds that certificate's key (the handshake signature verifies).
#[derive(Debug)]
struct Pinned {
    pin: [u8; 32],
    algs: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = ring::digest::digest(&ring::digest::SHA256, end_entity.as_ref());
        if got.as_ref() != self.pin {
            return Err(rustls::Error::General(
                "the destination's certificate is not this migration's".into(),
            ));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not used".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// SHA-256 of a certificate (DER), as a [`MigrationPeer`]'s `cert_sha256` holds it.
pub fn cert_sha256(cert_der: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, cert_der);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use nova_vmm_api::migration::to_hex;

    /// A fresh credential, as hostd makes one for each incoming migration.
    pub(crate) fn credential() -> (IncomingCredential, MigrationPeer) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![SERVER_NAME.into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let secret: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(37) ^ 0x5a);
        (
            IncomingCredential {
                cert_der: to_hex(cert.der()),
                key_der: to_hex(&key.serialize_der()),
                secret: to_hex(&secret),
            },
            MigrationPeer {
                cert_sha256: to_hex(&cert_sha256(cert.der())),
                secret: to_hex(&secret),
            },
        )
    }

    fn pair(listen: Listen, dial: Dial) -> (Result<Link, TlsError>, Result<Link, TlsError>) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
                .unwrap();
            listen.accept(s)
        });
        let c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let client = dial.secure(c);
        (server.join().unwrap(), client)
    }

    #[test]
    fn both_directions_carry_data_after_the_handshake_in_records_of_any_size() {
        let (cred, peer) = credential();
        let (server, client) = pair(
            Listen::from_credential(&cred).unwrap(),
            Dial::from_peer(&peer).unwrap(),
        );
        let (mut server, mut client) = (server.unwrap(), client.unwrap());
        let big: Vec<u8> = (0..(3 << 20) + 17).map(|i| (i * 7 % 251) as u8).collect();
        let b2 = big.clone();
        let mut w = client.writer.try_clone().unwrap();
        let sender = std::thread::spawn(move || {
            w.write_all(b"x").unwrap();
            w.write_all(&b2).unwrap();
            w.write_all(&[]).unwrap();
        });
        let mut got = vec![0u8; big.len() + 1];
        server.reader.read_exact(&mut got).unwrap();
        assert_eq!(got[0], b'x');
        assert!(got[1..] == big[..]);
        sender.join().unwrap();
        // The other way, while the first is still open.
        server.writer.write_all(b"answer").unwrap();
        let mut a = [0u8; 6];
        client.reader.read_exact(&mut a).unwrap();
        assert_eq!(&a, b"answer");
        // The end of the stream reads as such.
        drop(client);
        assert_eq!(server.reader.read(&mut a).unwrap(), 0);
    }

    #[test]
    fn a_wrong_secret_or_another_certificate_is_refused() {
        let (cred, peer) = credential();
        let (_, other) = credential();
        let mut wrong_secret = peer.clone();
        wrong_secret.secret = "00".repeat(32);
        let (server, _client) = pair(
            Listen::from_credential(&cred).unwrap(),
            Dial::from_peer(&wrong_secret).unwrap(),
        );
        assert!(
            matches!(server, Err(TlsError::WrongSecret)),
            "{:?}",
            server.err()
        );
        // A destination presenting another certificate (an impostor) is refused by
        // the source before it sends the secret.
        let mut pinned_elsewhere = peer.clone();
        pinned_elsewhere.cert_sha256 = other.cert_sha256;
        let (server, client) = pair(
            Listen::from_credential(&cred).unwrap(),
            Dial::from_peer(&pinned_elsewhere).unwrap(),
        );
        assert!(client.is_err());
        assert!(server.is_err());
        // Plaintext to a TLS destination is no handshake.
        let (server, _client) = pair(Listen::from_credential(&cred).unwrap(), Dial::Insecure);
        drop(_client);
        assert!(server.is_err());
    }

    #[test]
    fn the_records_after_the_handshake_are_standard_tls_as_rustls_reads_and_writes_them() {
        // The destination here is rustls end to end (its own record layer), so a
        // record format of our own that both our halves merely agreed on would fail.
        let (cred, peer) = credential();
        let Listen::Tls { config, .. } = Listen::from_credential(&cred).unwrap() else {
            unreachable!()
        };
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut conn = ServerConnection::new(config).unwrap();
            let mut tls = rustls::Stream::new(&mut conn, &mut s);
            let mut secret = [0u8; 32];
            tls.read_exact(&mut secret).unwrap();
            let mut rest = vec![0u8; 40_000];
            tls.read_exact(&mut rest).unwrap();
            tls.write_all(b"from rustls").unwrap();
            (secret, rest)
        });
        let mut link = Dial::from_peer(&peer)
            .unwrap()
            .secure(TcpStream::connect(addr).unwrap())
            .unwrap();
        let data: Vec<u8> = (0..40_000u32).map(|i| (i % 253) as u8).collect();
        link.writer.write_all(&data).unwrap();
        let mut back = [0u8; 11];
        link.reader.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"from rustls");
        let (secret, rest) = server.join().unwrap();
        assert_eq!(to_hex(&secret), peer.secret);
        assert_eq!(rest, data);
    }

    #[test]
    fn a_tampered_record_is_an_error_not_data() {
        let (cred, peer) = credential();
        let (server, client) = pair(
            Listen::from_credential(&cred).unwrap(),
            Dial::from_peer(&peer).unwrap(),
        );
        let (mut server, client) = (server.unwrap(), client.unwrap());
        // A record with a flipped bit, written beside the TLS layer.
        let mut raw = client.writer.socket().try_clone().unwrap();
        let mut rec = vec![23u8, 3, 3, 0, 40];
        rec.extend_from_slice(&[0x55; 40]);
        raw.write_all(&rec).unwrap();
        let mut b = [0u8; 4];
        let e = server.reader.read_exact(&mut b).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
    }
}
