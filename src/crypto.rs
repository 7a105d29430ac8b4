//! Signatures and certificates: the primitives behind GuestOS and container-config trust (SPEC §8).
//!
//! A signed file travels as three files: the exact bytes, a raw signature over them (DER ECDSA or
//! RSA bytes, no envelope) and a PEM bundle whose first certificate is the signer (the leaf) and
//! whose further certificates are intermediates. [`verify_signature`] checks both halves: the chain
//! from the leaf through the intermediates to one of the registered CA certificates (with time
//! checks), and the signature with the leaf's public key. Signing ([`sign`]) always uses SHA-512;
//! verification also accepts SHA-256 and RSA-PSS, which other tools (and upstream's scripts) use.
//!
//! [`dev_pki`] makes a development PKI (a root CA and a signing leaf, EC P-256) for tests and
//! development setups; it is not meant for production keys.

use std::{
    fs::File,
    io::{self, Read},
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use openssl::{
    asn1::Asn1Time,
    bn::{BigNum, MsbOption},
    ec::{EcGroup, EcKey},
    error::ErrorStack,
    hash::MessageDigest,
    nid::Nid,
    pkey::{Id, PKey, PKeyRef, Private, Public},
    rsa::Padding,
    sha::Sha256,
    sign::{RsaPssSaltlen, Signer, Verifier},
    stack::Stack,
    x509::{
        X509, X509Builder, X509NameBuilder, X509NameRef, X509Ref, X509StoreContext,
        extension::{AuthorityKeyIdentifier, BasicConstraints, KeyUsage, SubjectKeyIdentifier},
        store::X509StoreBuilder,
    },
};

use crate::store::{self, StoreError};

const PEM_BEGIN: &str = "-----BEGIN CERTIFICATE-----";
const PEM_END: &str = "-----END CERTIFICATE-----";

/// A certificate, key or signature operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// The input is not valid PEM (or holds something other than the expected object).
    #[error("bad PEM in {what}")]
    Pem {
        /// What was being read ("certificate", "private key").
        what: &'static str,
        /// The cause.
        #[source]
        source: ErrorStack,
    },
    /// A certificate PEM holds no certificate.
    #[error("no certificate in the PEM data")]
    NoCertificate,
    /// A CA certificate file does not have the single-certificate PEM envelope upstream requires.
    #[error("CA certificate must start with \"{PEM_BEGIN}\" and end with \"{PEM_END}\"")]
    CaEnvelope,
    /// A CA certificate file holds more than one certificate.
    #[error("expected exactly one CA certificate, found {count}")]
    NotSingleCertificate {
        /// How many certificates the PEM holds.
        count: usize,
    },
    /// The certificate is not a CA (no basicConstraints CA:TRUE).
    #[error("certificate '{subject}' is not a CA (basicConstraints CA:TRUE missing)")]
    NotCa {
        /// The certificate's subject.
        subject: String,
    },
    /// The certificate's DER could not be read while looking for basicConstraints.
    #[error("malformed certificate '{subject}': {reason}")]
    MalformedCertificate {
        /// The certificate's subject.
        subject: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// No trusted CA certificate was given to verify against.
    #[error("no trusted CA certificate is registered")]
    NoTrustAnchors,
    /// The certificate chain does not lead to a trusted CA, or a certificate is not valid now.
    #[error("certificate chain of '{subject}' does not verify (at depth {depth}): {reason}")]
    ChainNotTrusted {
        /// The leaf's subject.
        subject: String,
        /// Depth in the chain of the failing certificate (0 = leaf).
        depth: u32,
        /// OpenSSL's verify error string.
        reason: &'static str,
    },
    /// The signature does not match the data and the leaf's public key.
    #[error("signature does not verify with the key of certificate '{subject}'")]
    BadSignature {
        /// The leaf's subject.
        subject: String,
    },
    /// The key is neither EC nor RSA.
    #[error("unsupported key type {kind}: expected EC or RSA")]
    UnsupportedKey {
        /// OpenSSL's key type id.
        kind: String,
    },
    /// The private key does not belong to the certificate.
    #[error("key does not match certificate '{subject}'")]
    KeyMismatch {
        /// The certificate's subject.
        subject: String,
    },
    /// An OpenSSL operation failed.
    #[error("openssl failed to {op}")]
    Openssl {
        /// What was being done.
        op: &'static str,
        /// The cause.
        #[source]
        source: ErrorStack,
    },
    /// A file could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A directory could not be created.
    #[error("cannot create directory {}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A file could not be written.
    #[error("cannot write the development PKI")]
    Write(#[source] StoreError),
}

fn ossl(op: &'static str) -> impl FnOnce(ErrorStack) -> CryptoError {
    move |source| CryptoError::Openssl { op, source }
}

/// Parses a PEM bundle: the first certificate is the leaf, the rest are intermediates.
pub fn parse_cert_chain(pem: &[u8]) -> Result<Vec<X509>, CryptoError> {
    let certs = X509::stack_from_pem(pem).map_err(|source| CryptoError::Pem {
        what: "certificate",
        source,
    })?;
    if certs.is_empty() {
        return Err(CryptoError::NoCertificate);
    }
    Ok(certs)
}

/// A PEM that must be exactly one CA certificate (basicConstraints CA:TRUE); upstream's envelope
/// check too: starts with "-----BEGIN CERTIFICATE-----" and ends with "-----END CERTIFICATE-----" plus
/// optional trailing newline.
pub fn parse_ca_cert(pem: &[u8]) -> Result<X509, CryptoError> {
    let trimmed = pem
        .strip_suffix(b"\n")
        .map(|p| p.strip_suffix(b"\r").unwrap_or(p))
        .unwrap_or(pem);
    if !trimmed.starts_with(PEM_BEGIN.as_bytes()) || !trimmed.ends_with(PEM_END.as_bytes()) {
        return Err(CryptoError::CaEnvelope);
    }
    let mut certs = parse_cert_chain(pem)?;
    if certs.len() != 1 {
        return Err(CryptoError::NotSingleCertificate { count: certs.len() });
    }
    let cert = certs.remove(0);
    if !is_ca(&cert)? {
        return Err(CryptoError::NotCa {
            subject: subject_text(&cert),
        });
    }
    Ok(cert)
}

/// Verifies `sig` over the exact `data` with the leaf of `cert_pem`, and the chain (leaf + intermediates
/// from cert_pem) to one of `anchors` (time checks on). Accepts ECDSA and RSA (PKCS#1 v1.5 and PSS with
/// salt length = digest length), with SHA-512 or SHA-256. Returns the leaf's subject as text for logs.
pub fn verify_signature(
    data: &[u8],
    sig: &[u8],
    cert_pem: &[u8],
    anchors: &[X509],
) -> Result<String, CryptoError> {
    let mut certs = parse_cert_chain(cert_pem)?;
    let leaf = certs.remove(0);
    let subject = subject_text(&leaf);
    verify_chain(&leaf, certs, anchors, &subject)?;
    let key = leaf
        .public_key()
        .map_err(ossl("read the certificate's public key"))?;
    if signature_matches(data, sig, &key)? {
        Ok(subject)
    } else {
        Err(CryptoError::BadSignature { subject })
    }
}

/// Checks that `leaf` chains through `intermediates` to one of `anchors`, at the current time.
fn verify_chain(
    leaf: &X509Ref,
    intermediates: Vec<X509>,
    anchors: &[X509],
    subject: &str,
) -> Result<(), CryptoError> {
    if anchors.is_empty() {
        return Err(CryptoError::NoTrustAnchors);
    }
    let mut store = X509StoreBuilder::new().map_err(ossl("create a certificate store"))?;
    // Only CA certificates anchor a chain: with PARTIAL_CHAIN below, any certificate in the store
    // would otherwise be trusted as it is.
    for anchor in anchors {
        if is_ca(anchor)? {
            store
                .add_cert(anchor.clone())
                .map_err(ossl("add a trusted CA certificate"))?;
        }
    }
    // Every registered CA is an anchor on its own (as upstream), also when it is an intermediate.
    store
        .set_flags(openssl::x509::verify::X509VerifyFlags::PARTIAL_CHAIN)
        .map_err(ossl("configure the certificate store"))?;
    let store = store.build();
    let mut chain = Stack::new().map_err(ossl("create a certificate stack"))?;
    for cert in intermediates {
        chain.push(cert).map_err(ossl("create a certificate stack"))?;
    }
    let mut ctx = X509StoreContext::new().map_err(ossl("create a verify context"))?;
    let outcome = ctx
        .init(&store, leaf, &chain, |c| {
            let ok = c.verify_cert()?;
            Ok((ok, c.error(), c.error_depth()))
        })
        .map_err(ossl("verify the certificate chain"))?;
    match outcome {
        (true, _, _) => Ok(()),
        (false, error, depth) => Err(CryptoError::ChainNotTrusted {
            subject: subject.to_owned(),
            depth,
            reason: error.error_string(),
        }),
    }
}

/// Tries every accepted algorithm for the key's type. A malformed signature is a mismatch, not an
/// error: the caller reports it as "signature does not verify".
fn signature_matches(data: &[u8], sig: &[u8], key: &PKeyRef<Public>) -> Result<bool, CryptoError> {
    let digests = [MessageDigest::sha512(), MessageDigest::sha256()];
    let paddings: &[Option<Padding>] = match key.id() {
        Id::EC => &[None],
        Id::RSA => &[Some(Padding::PKCS1), Some(Padding::PKCS1_PSS)],
        other => {
            return Err(CryptoError::UnsupportedKey {
                kind: format!("{other:?}"),
            });
        }
    };
    for padding in paddings {
        for digest in digests {
            let attempt = (|| -> Result<bool, ErrorStack> {
                let mut verifier = Verifier::new(digest, key)?;
                if let Some(padding) = padding {
                    verifier.set_rsa_padding(*padding)?;
                    if *padding == Padding::PKCS1_PSS {
                        verifier.set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH)?;
                    }
                }
                verifier.verify_oneshot(sig, data)
            })();
            if attempt.unwrap_or(false) {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

fn private_key(key_pem: &[u8]) -> Result<PKey<Private>, CryptoError> {
    PKey::private_key_from_pem(key_pem).map_err(|source| CryptoError::Pem {
        what: "private key",
        source,
    })
}

/// Signs with SHA-512 (ECDSA for EC keys, PKCS#1 v1.5 for RSA keys); output = raw DER/bytes signature.
pub fn sign(data: &[u8], key_pem: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let key = private_key(key_pem)?;
    let mut signer = Signer::new(MessageDigest::sha512(), &key).map_err(ossl("create a signer"))?;
    match key.id() {
        Id::EC => {}
        Id::RSA => signer
            .set_rsa_padding(Padding::PKCS1)
            .map_err(ossl("set RSA padding"))?,
        other => {
            return Err(CryptoError::UnsupportedKey {
                kind: format!("{other:?}"),
            });
        }
    }
    signer.sign_oneshot_to_vec(data).map_err(ossl("sign"))
}

/// Checks that the private key `key_pem` belongs to the leaf certificate of `cert_pem`, so that a
/// signature made with it will verify with that certificate.
pub fn check_key_matches_cert(key_pem: &[u8], cert_pem: &[u8]) -> Result<(), CryptoError> {
    let key = private_key(key_pem)?;
    let leaf = parse_cert_chain(cert_pem)?.remove(0);
    let public = leaf
        .public_key()
        .map_err(ossl("read the certificate's public key"))?;
    if public.public_eq(&key) {
        Ok(())
    } else {
        Err(CryptoError::KeyMismatch {
            subject: subject_text(&leaf),
        })
    }
}

/// Checks that the leaf of `cert_pem` chains (through the PEM's further certificates) to one of
/// `anchors`, at the current time. Returns the leaf's subject.
pub fn verify_cert_chain(cert_pem: &[u8], anchors: &[X509]) -> Result<String, CryptoError> {
    let mut certs = parse_cert_chain(cert_pem)?;
    let leaf = certs.remove(0);
    let subject = subject_text(&leaf);
    verify_chain(&leaf, certs, anchors, &subject)?;
    Ok(subject)
}

/// A new EC P-256 private key, as PKCS#8 PEM.
pub fn new_ec_key_pem() -> Result<Vec<u8>, CryptoError> {
    ec_key()?
        .private_key_to_pem_pkcs8()
        .map_err(ossl("encode a private key"))
}

/// A PEM certificate signing request for `key_pem` with subject `CN=<cn>`, signed with SHA-256.
pub fn csr_pem(key_pem: &[u8], cn: &str) -> Result<Vec<u8>, CryptoError> {
    let key = private_key(key_pem)?;
    let mut name = openssl::x509::X509NameBuilder::new().map_err(ossl("build a subject"))?;
    name.append_entry_by_nid(Nid::COMMONNAME, cn)
        .map_err(ossl("build a subject"))?;
    let mut req = openssl::x509::X509ReqBuilder::new().map_err(ossl("build a CSR"))?;
    req.set_subject_name(&name.build()).map_err(ossl("build a CSR"))?;
    req.set_pubkey(&key).map_err(ossl("build a CSR"))?;
    req.sign(&key, MessageDigest::sha256())
        .map_err(ossl("sign a CSR"))?;
    req.build().to_pem().map_err(ossl("encode a CSR"))
}

/// Hex SHA-256 of a file, streaming.
pub fn sha256_file(path: &Path) -> Result<String, CryptoError> {
    let read_err = |source| CryptoError::Read {
        path: path.to_owned(),
        source,
    };
    let mut file = File::open(path).map_err(read_err)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_err(e)),
        }
    }
    Ok(hex(&hasher.finish()))
}

/// Lowercase hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A certificate's subject as `CN=…, O=…` for messages and logs.
pub fn subject_text(cert: &X509Ref) -> String {
    name_text(cert.subject_name())
}

fn name_text(name: &X509NameRef) -> String {
    let parts: Vec<String> = name
        .entries()
        .map(|e| {
            let key = e.object().nid().short_name().unwrap_or("?");
            let value = e.data().to_string().unwrap_or_else(|_| "?".into());
            format!("{key}={value}")
        })
        .collect();
    parts.join(", ")
}

/// Writes DIR/root-ca.cert, DIR/root-ca.key, DIR/signing.cert, DIR/signing.key (EC P-256; root self-signed,
/// CA:TRUE + keyCertSign/cRLSign, 10 years; signing leaf CA:FALSE + digitalSignature, 5 years, signed by the root;
/// keys 0600). signing.cert = the leaf followed by any intermediate (none here).
pub fn dev_pki(dir: &Path) -> Result<(), CryptoError> {
    std::fs::create_dir_all(dir).map_err(|source| CryptoError::CreateDir {
        path: dir.to_owned(),
        source,
    })?;
    let root_key = ec_key()?;
    let root = CertSpec {
        cn: "cml development root CA",
        days: 3650,
        ca: true,
    }
    .build(&root_key, None)?;
    let leaf_key = ec_key()?;
    let leaf = CertSpec {
        cn: "cml development signing",
        days: 5 * 365 + 1,
        ca: false,
    }
    .build(&leaf_key, Some((&root, &root_key)))?;

    let pem = |r: Result<Vec<u8>, ErrorStack>| r.map_err(ossl("encode PEM"));
    let root_pem = pem(root.to_pem())?;
    let root_key_pem = pem(root_key.private_key_to_pem_pkcs8())?;
    let leaf_pem = pem(leaf.to_pem())?;
    let leaf_key_pem = pem(leaf_key.private_key_to_pem_pkcs8())?;
    let write = |name: &str, data: &[u8], mode: u32| {
        store::atomic_write(&dir.join(name), data, mode).map_err(CryptoError::Write)
    };
    write("root-ca.key", &root_key_pem, 0o600)?;
    write("root-ca.cert", &root_pem, 0o644)?;
    write("signing.key", &leaf_key_pem, 0o600)?;
    write("signing.cert", &leaf_pem, 0o644)
}

fn ec_key() -> Result<PKey<Private>, CryptoError> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).map_err(ossl("load curve P-256"))?;
    let key = EcKey::generate(&group).map_err(ossl("generate an EC key"))?;
    PKey::from_ec_key(key).map_err(ossl("wrap an EC key"))
}

/// What [`dev_pki`] puts into a certificate.
struct CertSpec {
    cn: &'static str,
    days: u32,
    ca: bool,
}

impl CertSpec {
    /// Builds a certificate for `key`, self-signed when `issuer` is `None`.
    fn build(
        &self,
        key: &PKey<Private>,
        issuer: Option<(&X509, &PKey<Private>)>,
    ) -> Result<X509, CryptoError> {
        self.build_inner(key, issuer).map_err(ossl("build a certificate"))
    }

    fn build_inner(
        &self,
        key: &PKey<Private>,
        issuer: Option<(&X509, &PKey<Private>)>,
    ) -> Result<X509, ErrorStack> {
        let mut name = X509NameBuilder::new()?;
        name.append_entry_by_nid(Nid::ORGANIZATIONNAME, "cml development")?;
        name.append_entry_by_nid(Nid::COMMONNAME, self.cn)?;
        let name = name.build();

        let mut b = X509Builder::new()?;
        b.set_version(2)?;
        let mut serial = BigNum::new()?;
        serial.rand(127, MsbOption::MAYBE_ZERO, false)?;
        let serial = serial.to_asn1_integer()?;
        b.set_serial_number(&serial)?;
        b.set_subject_name(&name)?;
        b.set_issuer_name(issuer.map_or(&*name, |(c, _)| c.subject_name()))?;
        b.set_pubkey(key)?;
        // A little slack for clocks that lag behind the machine that made the PKI.
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let not_before = Asn1Time::from_unix(now - 3600)?;
        let not_after = Asn1Time::days_from_now(self.days)?;
        b.set_not_before(&not_before)?;
        b.set_not_after(&not_after)?;
        if self.ca {
            b.append_extension(BasicConstraints::new().critical().ca().build()?)?;
            b.append_extension(KeyUsage::new().critical().key_cert_sign().crl_sign().build()?)?;
        } else {
            b.append_extension(BasicConstraints::new().critical().build()?)?;
            b.append_extension(KeyUsage::new().critical().digital_signature().build()?)?;
        }
        let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(issuer.map(|(c, _)| &**c), None))?;
        b.append_extension(ski)?;
        if let Some((ca, _)) = issuer {
            let aki = AuthorityKeyIdentifier::new()
                .keyid(false)
                .build(&b.x509v3_context(Some(ca), None))?;
            b.append_extension(aki)?;
        }
        let signing_key = issuer.map_or(key, |(_, k)| k);
        b.sign(signing_key, MessageDigest::sha256())?;
        Ok(b.build())
    }
}

/// Whether the certificate carries basicConstraints with cA = TRUE.
///
/// The openssl crate exposes no accessor for it (X509_check_ca is not wrapped), so this reads the
/// extension from the DER: Certificate → TBSCertificate → [3] extensions → the extension whose
/// OID is 2.5.29.19 → BasicConstraints SEQUENCE { cA BOOLEAN DEFAULT FALSE, … }.
fn is_ca(cert: &X509Ref) -> Result<bool, CryptoError> {
    let der = cert.to_der().map_err(ossl("encode a certificate"))?;
    let malformed = |reason| CryptoError::MalformedCertificate {
        subject: subject_text(cert),
        reason,
    };
    basic_constraints_ca(&der).map_err(malformed)
}

const OID_BASIC_CONSTRAINTS: &[u8] = &[0x55, 0x1d, 0x13];

fn basic_constraints_ca(der: &[u8]) -> Result<bool, &'static str> {
    let (tag, cert, _) = der::tlv(der)?;
    der::expect(tag, 0x30)?;
    let (tag, tbs, _) = der::tlv(cert)?;
    der::expect(tag, 0x30)?;
    let mut rest = tbs;
    while !rest.is_empty() {
        let (tag, content, next) = der::tlv(rest)?;
        rest = next;
        if tag != 0xa3 {
            continue;
        }
        let (tag, exts, _) = der::tlv(content)?;
        der::expect(tag, 0x30)?;
        let mut exts = exts;
        while !exts.is_empty() {
            let (tag, ext, next) = der::tlv(exts)?;
            der::expect(tag, 0x30)?;
            exts = next;
            let (tag, oid, mut ext) = der::tlv(ext)?;
            der::expect(tag, 0x06)?;
            if oid != OID_BASIC_CONSTRAINTS {
                continue;
            }
            let (mut tag, mut value, next) = der::tlv(ext)?;
            if tag == 0x01 {
                // the `critical` flag
                ext = next;
                (tag, value, _) = der::tlv(ext)?;
            }
            der::expect(tag, 0x04)?;
            let (tag, constraints, _) = der::tlv(value)?;
            der::expect(tag, 0x30)?;
            if constraints.is_empty() {
                return Ok(false);
            }
            let (tag, flag, _) = der::tlv(constraints)?;
            return Ok(tag == 0x01 && flag.first().is_some_and(|b| *b != 0));
        }
        return Ok(false);
    }
    Ok(false)
}

/// Just enough DER to walk a certificate.
mod der {
    /// Splits one tag-length-value off `input`: (tag, content, rest). Single-byte tags only, which
    /// is all a certificate's structure down to the extensions uses.
    pub fn tlv(input: &[u8]) -> Result<(u8, &[u8], &[u8]), &'static str> {
        let truncated = "truncated DER";
        let (&tag, rest) = input.split_first().ok_or(truncated)?;
        let (&first, rest) = rest.split_first().ok_or(truncated)?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return Err("bad DER length");
            }
            let len = rest[..n]
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            (len, &rest[n..])
        };
        if rest.len() < len {
            return Err(truncated);
        }
        Ok((tag, &rest[..len], &rest[len..]))
    }

    /// Fails unless `tag` is `want`.
    pub fn expect(tag: u8, want: u8) -> Result<(), &'static str> {
        if tag == want {
            Ok(())
        } else {
            Err("unexpected DER tag")
        }
    }
}

#[cfg(test)]
mod tests {
    use openssl::rsa::Rsa;

    use super::*;

    struct Pki {
        _dir: tempfile::TempDir,
        root: X509,
        root_pem: Vec<u8>,
        leaf_pem: Vec<u8>,
        leaf_key: Vec<u8>,
        root_key: PKey<Private>,
    }

    fn pki() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        dev_pki(dir.path()).unwrap();
        let read = |n: &str| std::fs::read(dir.path().join(n)).unwrap();
        let root_pem = read("root-ca.cert");
        Pki {
            root: parse_ca_cert(&root_pem).unwrap(),
            root_pem,
            leaf_pem: read("signing.cert"),
            leaf_key: read("signing.key"),
            root_key: PKey::private_key_from_pem(&read("root-ca.key")).unwrap(),
            _dir: dir,
        }
    }

    /// A leaf for `key` issued by `issuer`, valid from `from` to `to` (unix seconds).
    fn leaf_for<T: openssl::pkey::HasPublic>(
        key: &PKeyRef<T>,
        issuer: &X509,
        issuer_key: &PKey<Private>,
        from: i64,
        to: i64,
    ) -> X509 {
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_nid(Nid::COMMONNAME, "test leaf").unwrap();
        let name = name.build();
        let mut b = X509Builder::new().unwrap();
        b.set_version(2).unwrap();
        b.set_serial_number(&BigNum::from_u32(7).unwrap().to_asn1_integer().unwrap())
            .unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(issuer.subject_name()).unwrap();
        b.set_pubkey(key).unwrap();
        b.set_not_before(&Asn1Time::from_unix(from).unwrap()).unwrap();
        b.set_not_after(&Asn1Time::from_unix(to).unwrap()).unwrap();
        b.append_extension(BasicConstraints::new().build().unwrap())
            .unwrap();
        b.sign(issuer_key, MessageDigest::sha256()).unwrap();
        b.build()
    }

    fn now() -> i64 {
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
    }

    #[test]
    fn ec_round_trip_and_tampering() {
        let p = pki();
        let data = b"name: \"busybox\"\nversion: 1\n";
        let sig = sign(data, &p.leaf_key).unwrap();
        let anchors = [p.root.clone()];
        let subject = verify_signature(data, &sig, &p.leaf_pem, &anchors).unwrap();
        assert!(subject.contains("cml development signing"), "{subject}");

        let mut bad_data = data.to_vec();
        bad_data[3] ^= 1;
        assert!(matches!(
            verify_signature(&bad_data, &sig, &p.leaf_pem, &anchors),
            Err(CryptoError::BadSignature { .. })
        ));
        let mut bad_sig = sig.clone();
        let last = bad_sig.len() - 1;
        bad_sig[last] ^= 1;
        assert!(matches!(
            verify_signature(data, &bad_sig, &p.leaf_pem, &anchors),
            Err(CryptoError::BadSignature { .. })
        ));
        check_key_matches_cert(&p.leaf_key, &p.leaf_pem).unwrap();
    }

    #[test]
    fn rsa_pkcs1_and_pss() {
        let p = pki();
        let rsa = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let cert = leaf_for(&rsa, &p.root, &p.root_key, now() - 60, now() + 3600);
        let cert_pem = cert.to_pem().unwrap();
        let key_pem = rsa.private_key_to_pem_pkcs8().unwrap();
        let anchors = [p.root.clone()];
        let data = b"some config";

        let sig = sign(data, &key_pem).unwrap();
        verify_signature(data, &sig, &cert_pem, &anchors).unwrap();
        assert!(matches!(
            verify_signature(b"some confih", &sig, &cert_pem, &anchors),
            Err(CryptoError::BadSignature { .. })
        ));

        for digest in [MessageDigest::sha256(), MessageDigest::sha512()] {
            let mut signer = Signer::new(digest, &rsa).unwrap();
            signer.set_rsa_padding(Padding::PKCS1_PSS).unwrap();
            signer.set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH).unwrap();
            let pss = signer.sign_oneshot_to_vec(data).unwrap();
            verify_signature(data, &pss, &cert_pem, &anchors).unwrap();
        }
        assert!(matches!(
            check_key_matches_cert(&key_pem, &p.leaf_pem),
            Err(CryptoError::KeyMismatch { .. })
        ));
    }

    #[test]
    fn ecdsa_sha256_accepted() {
        let p = pki();
        let key = PKey::private_key_from_pem(&p.leaf_key).unwrap();
        let mut signer = Signer::new(MessageDigest::sha256(), &key).unwrap();
        let sig = signer.sign_oneshot_to_vec(b"x").unwrap();
        verify_signature(b"x", &sig, &p.leaf_pem, std::slice::from_ref(&p.root)).unwrap();
    }

    #[test]
    fn other_root_fails_the_chain() {
        let p = pki();
        let other = pki();
        let sig = sign(b"data", &p.leaf_key).unwrap();
        let err =
            verify_signature(b"data", &sig, &p.leaf_pem, std::slice::from_ref(&other.root)).unwrap_err();
        assert!(
            matches!(err, CryptoError::ChainNotTrusted { depth: 0, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("issuer certificate"), "{err}");
        assert!(matches!(
            verify_signature(b"data", &sig, &p.leaf_pem, &[]),
            Err(CryptoError::NoTrustAnchors)
        ));
        // The leaf alone is not a trust anchor for itself (it is no CA).
        let leaf = parse_cert_chain(&p.leaf_pem).unwrap().remove(0);
        assert!(verify_signature(b"data", &sig, &p.leaf_pem, &[leaf]).is_err());
    }

    #[test]
    fn intermediate_in_bundle_verifies() {
        let p = pki();
        // An intermediate CA signed by the root, and a leaf under it.
        let inter_key = ec_key().unwrap();
        let inter = CertSpec {
            cn: "intermediate",
            days: 10,
            ca: true,
        }
        .build(&inter_key, Some((&p.root, &p.root_key)))
        .unwrap();
        let leaf_key = ec_key().unwrap();
        let leaf = leaf_for(&leaf_key, &inter, &inter_key, now() - 60, now() + 3600);
        let mut bundle = leaf.to_pem().unwrap();
        bundle.extend(inter.to_pem().unwrap());
        let key_pem = leaf_key.private_key_to_pem_pkcs8().unwrap();
        let sig = sign(b"d", &key_pem).unwrap();
        verify_signature(b"d", &sig, &bundle, std::slice::from_ref(&p.root)).unwrap();
        // Without the intermediate the chain is incomplete.
        let alone = leaf.to_pem().unwrap();
        assert!(matches!(
            verify_signature(b"d", &sig, &alone, std::slice::from_ref(&p.root)),
            Err(CryptoError::ChainNotTrusted { .. })
        ));
        // A registered intermediate is an anchor on its own.
        verify_signature(b"d", &sig, &alone, std::slice::from_ref(&inter)).unwrap();
    }

    #[test]
    fn expired_cert_fails() {
        let p = pki();
        let key = ec_key().unwrap();
        let cert = leaf_for(&key, &p.root, &p.root_key, now() - 7200, now() - 3600);
        let sig = sign(b"d", &key.private_key_to_pem_pkcs8().unwrap()).unwrap();
        let err =
            verify_signature(b"d", &sig, &cert.to_pem().unwrap(), std::slice::from_ref(&p.root)).unwrap_err();
        assert!(err.to_string().contains("expired"), "{err}");
    }

    #[test]
    fn ca_parsing() {
        let p = pki();
        assert!(matches!(
            parse_ca_cert(&p.leaf_pem),
            Err(CryptoError::NotCa { .. })
        ));
        let mut two = p.root_pem.clone();
        two.extend_from_slice(&p.root_pem);
        assert!(matches!(
            parse_ca_cert(&two),
            Err(CryptoError::NotSingleCertificate { count: 2 })
        ));
        let mut prefixed = b"junk\n".to_vec();
        prefixed.extend_from_slice(&p.root_pem);
        assert!(matches!(parse_ca_cert(&prefixed), Err(CryptoError::CaEnvelope)));
        let trimmed = p.root_pem.strip_suffix(b"\n").unwrap();
        parse_ca_cert(trimmed).unwrap();
        let mut two_nl = p.root_pem.clone();
        two_nl.push(b'\n');
        assert!(matches!(parse_ca_cert(&two_nl), Err(CryptoError::CaEnvelope)));
        assert!(matches!(
            parse_ca_cert(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
            Err(CryptoError::Pem { .. })
        ));
        assert!(matches!(
            parse_cert_chain(b"hello"),
            Err(CryptoError::Pem { .. }) | Err(CryptoError::NoCertificate)
        ));
        // basicConstraints present but without cA is no CA.
        let key = ec_key().unwrap();
        let plain = leaf_for(&key, &p.root, &p.root_key, now(), now() + 10);
        assert!(!is_ca(&plain).unwrap());
    }

    #[test]
    fn dev_pki_files() {
        let dir = tempfile::tempdir().unwrap();
        dev_pki(dir.path()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        for (name, mode) in [
            ("root-ca.cert", 0o644),
            ("root-ca.key", 0o600),
            ("signing.cert", 0o644),
            ("signing.key", 0o600),
        ] {
            let meta = std::fs::metadata(dir.path().join(name)).unwrap();
            assert_eq!(meta.permissions().mode() & 0o777, mode, "{name}");
        }
    }

    #[test]
    fn sha256_of_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, b"abc").unwrap();
        assert_eq!(
            sha256_file(&f).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(matches!(
            sha256_file(&dir.path().join("missing")),
            Err(CryptoError::Read { .. })
        ));
    }
}
