//! Ed25519 keys for tokens: reading the public keys operators register (PEM, DER, raw
//! or base64, never one of small order), writing them as PEM, and the private key an
//! operator signs with locally. The cluster itself only ever holds public keys.
//!
//! PEM is read with `rustls-pki-types` (the reader rustls uses for certificates) and
//! written with the `pem` crate (rcgen's writer): no PEM code of our own.

use crate::primitives::base64_decode;
use crate::{base64url, message, Purpose};
use ring::signature::{Ed25519KeyPair, KeyPair};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{PrivatePkcs8KeyDer, SubjectPublicKeyInfoDer};

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): SEQUENCE { SEQUENCE { OID
/// 1.3.101.112 }, BIT STRING (0 unused bits) } followed by the 32 key bytes.
pub(crate) const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Encodings of the points of small order (sign bit ignored, as in libsodium's list),
/// including the non-canonical `p` and `p + 1`. A public key among them lets anyone
/// forge signatures (with the identity, `R = identity, S = 0` verifies every message).
const SMALL_ORDER: [[u8; 32]; 7] = {
    let mut ff = [0xff; 32];
    ff[31] = 0x7f;
    let mut minus_one = ff;
    minus_one[0] = 0xec;
    let mut p = ff;
    p[0] = 0xed;
    let mut p1 = ff;
    p1[0] = 0xee;
    let mut one = [0; 32];
    one[0] = 1;
    [
        [0; 32],
        one,
        [
            0x26, 0xe8, 0x95, 0x8f, 0xc2, 0xb2, 0x27, 0xb0, 0x45, 0xc3, 0xf4, 0x89, 0xf2, 0xef,
            0x98, 0xf0, 0xd5, 0xdf, 0xac, 0x05, 0xd3, 0xc6, 0x33, 0x39, 0xb1, 0x38, 0x02, 0x88,
            0x6d, 0x53, 0xfc, 0x05,
        ],
        [
            0xc7, 0x17, 0x6a, 0x70, 0x3d, 0x4d, 0xd8, 0x4f, 0xba, 0x3c, 0x0b, 0x76, 0x0d, 0x10,
            0x67, 0x0f, 0x2a, 0x20, 0x53, 0xfa, 0x2c, 0x39, 0xcc, 0xc6, 0x4e, 0xc7, 0xfd, 0x77,
            0x92, 0xac, 0x03, 0x7a,
        ],
        minus_one,
        p,
        p1,
    ]
};

/// Reads an Ed25519 public key given as PEM (`-----BEGIN PUBLIC KEY-----`, what
/// `openssl pkey -pubout` and [`Ed25519Signer::public_key_pem`] write), as its DER, as
/// the raw 32 bytes, or as base64/base64url text of those. Refuses anything else, a
/// private key, and keys of small order (which would let anyone forge tokens).
pub fn parse_ed25519_public_key(input: &[u8]) -> Result<[u8; 32], String> {
    let raw: Vec<u8> = if input.len() == 32 {
        input.to_vec()
    } else if let Some(der) = input.strip_prefix(&ED25519_SPKI_PREFIX[..]) {
        der.to_vec()
    } else {
        let text = std::str::from_utf8(input)
            .map_err(|_| "not an Ed25519 public key (PEM, DER or 32 bytes)".to_owned())?
            .trim();
        if text.contains("PRIVATE KEY-----") {
            return Err(
                "this is a private key: register the public key (keep the private one with the signer)"
                    .into(),
            );
        }
        if text.starts_with("-----BEGIN") {
            let der = SubjectPublicKeyInfoDer::from_pem_slice(text.as_bytes())
                .map_err(|e| format!("not a PEM \"PUBLIC KEY\" ({e})"))?;
            der.as_ref()
                .strip_prefix(&ED25519_SPKI_PREFIX[..])
                .filter(|k| k.len() == 32)
                .ok_or_else(|| "the PEM public key is not an Ed25519 key".to_owned())?
                .to_vec()
        } else {
            base64_decode(text).ok_or_else(|| {
                "not an Ed25519 public key (PEM, DER, 32 bytes or their base64)".to_owned()
            })?
        }
    };
    let key: [u8; 32] = raw
        .try_into()
        .map_err(|v: Vec<u8>| format!("an Ed25519 public key has 32 bytes, not {}", v.len()))?;
    let mut cleared = key;
    cleared[31] &= 0x7f;
    if SMALL_ORDER.contains(&cleared) {
        return Err("weak Ed25519 public key (a point of small order)".into());
    }
    Ok(key)
}

/// The SubjectPublicKeyInfo PEM of an Ed25519 public key.
pub fn ed25519_public_key_pem(key: &[u8; 32]) -> String {
    let mut der = ED25519_SPKI_PREFIX.to_vec();
    der.extend_from_slice(key);
    write_pem("PUBLIC KEY", der)
}

/// An Ed25519 private key, for operators who sign tokens locally (`ferrocast ctl token
/// sign`) and for tests. The cluster never needs one.
#[derive(Debug)]
pub struct Ed25519Signer {
    pair: Ed25519KeyPair,
}

impl Ed25519Signer {
    /// A new key pair, with its PKCS#8 v2 document as PEM (`-----BEGIN PRIVATE KEY-----`).
    pub fn generate() -> Result<(Self, String), String> {
        let rng = ring::rand::SystemRandom::new();
        let doc = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| "no randomness".to_owned())?;
        let pem = write_pem("PRIVATE KEY", doc.as_ref());
        Ok((Self::from_pem(&pem)?, pem))
    }

    /// Reads an unencrypted PKCS#8 PEM private key, v1 (`openssl genpkey -algorithm
    /// ed25519`) or v2 ([`generate`](Self::generate)).
    pub fn from_pem(pem: &str) -> Result<Self, String> {
        let der = PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes())
            .map_err(|e| format!("not a PEM \"PRIVATE KEY\" (unencrypted PKCS#8): {e}"))?;
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der.secret_pkcs8_der())
            .map_err(|e| format!("not an Ed25519 private key: {e}"))?;
        Ok(Self { pair })
    }

    /// The public half.
    pub fn public_key(&self) -> [u8; 32] {
        let mut k = [0; 32];
        k.copy_from_slice(self.pair.public_key().as_ref());
        k
    }

    /// The public half as PEM, to register with the controller.
    pub fn public_key_pem(&self) -> String {
        ed25519_public_key_pem(&self.public_key())
    }

    /// Signs a token for `stream` valid until `expiry` (Unix seconds).
    pub fn sign(&self, purpose: Purpose, key_id: &str, stream: &str, expiry: u64) -> String {
        let sig = self
            .pair
            .sign(message(purpose, key_id, stream, expiry).as_bytes());
        format!("{key_id}.{expiry}.{}", base64url(sig.as_ref()))
    }
}

/// PEM as `openssl` writes it: `-----BEGIN {label}-----`, base64 in lines of 64, `\n`
/// line endings (the `pem` crate's default is `\r\n`).
fn write_pem(label: &str, der: impl Into<Vec<u8>>) -> String {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    pem::encode_config(&pem::Pem::new(label, der), config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{sign, Token, TokenError, VerifyKey};
    use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
    use base64::Engine as _;
    use ring::signature::{UnparsedPublicKey, ED25519};

    /// The base64url alphabet, to respell a signature's last character.
    const B64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

    #[test]
    fn ed25519_tokens_verify_only_with_their_key_stream_purpose_and_time() {
        let (signer, pem) = Ed25519Signer::generate().unwrap();
        let public = VerifyKey::Ed25519(signer.public_key());
        let t = signer.sign(Purpose::Play, "ed1", "cam", 1000);
        let p = Token::parse(&t).unwrap();
        assert_eq!((p.key_id, p.expiry, p.signature.len()), ("ed1", 1000, 86));
        assert_eq!(p.verify_with(Purpose::Play, "cam", &public, 1000), Ok(()));
        // The signature is Ed25519 over exactly the documented message.
        let msg = b"ferrocast/play\ned1\ncam\n1000";
        UnparsedPublicKey::new(&ED25519, signer.public_key())
            .verify(msg, &base64_decode(p.signature).unwrap())
            .unwrap();
        assert_eq!(
            p.verify_with(Purpose::Play, "cam", &public, 1001),
            Err(TokenError::Expired(1000))
        );
        for (purpose, stream) in [(Purpose::Play, "dog"), (Purpose::Publish, "cam")] {
            assert_eq!(
                p.verify_with(purpose, stream, &public, 1),
                Err(TokenError::BadSignature)
            );
        }
        // Another key pair's public key, and an HMAC key of the same id, refuse it.
        let (other, _) = Ed25519Signer::generate().unwrap();
        assert_eq!(
            p.verify_with(
                Purpose::Play,
                "cam",
                &VerifyKey::Ed25519(other.public_key()),
                1
            ),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            p.verify_with(Purpose::Play, "cam", &VerifyKey::Hmac(b"s".to_vec()), 1),
            Err(TokenError::BadSignature)
        );
        // An HMAC token is refused by an Ed25519 key.
        let h = sign(Purpose::Play, "ed1", "cam", 1000, b"s");
        assert_eq!(
            Token::parse(&h)
                .unwrap()
                .verify_with(Purpose::Play, "cam", &public, 1),
            Err(TokenError::BadSignature)
        );
        // A changed expiry, and a non-canonical spelling of the same 64 bytes (the last
        // character carries 4 unused bits), are refused: one token, one signature string.
        let forged = t.replacen(".1000.", ".9999.", 1);
        assert_eq!(
            Token::parse(&forged)
                .unwrap()
                .verify_with(Purpose::Play, "cam", &public, 1),
            Err(TokenError::BadSignature)
        );
        let last = t.as_bytes()[t.len() - 1];
        let idx = B64URL.iter().position(|c| *c == last).unwrap();
        let respelled = format!("{}{}", &t[..t.len() - 1], B64URL[idx ^ 1] as char);
        let lenient = GeneralPurpose::new(
            &base64::alphabet::URL_SAFE,
            GeneralPurposeConfig::new()
                .with_decode_allow_trailing_bits(true)
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
        );
        assert_eq!(
            lenient
                .decode(Token::parse(&respelled).unwrap().signature)
                .unwrap(),
            lenient.decode(p.signature).unwrap()
        );
        assert_eq!(
            Token::parse(&respelled)
                .unwrap()
                .verify_with(Purpose::Play, "cam", &public, 1),
            Err(TokenError::BadSignature)
        );
        // The private key round-trips through PEM; the public key through every form.
        let again = Ed25519Signer::from_pem(&pem).unwrap();
        assert_eq!(again.public_key(), signer.public_key());
        let pk = signer.public_key();
        let pub_pem = signer.public_key_pem();
        assert!(pub_pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        assert_eq!(parse_ed25519_public_key(pub_pem.as_bytes()), Ok(pk));
        assert_eq!(parse_ed25519_public_key(&pk), Ok(pk));
        assert_eq!(parse_ed25519_public_key(base64url(&pk).as_bytes()), Ok(pk));
        let mut der = ED25519_SPKI_PREFIX.to_vec();
        der.extend_from_slice(&pk);
        assert_eq!(parse_ed25519_public_key(&der), Ok(pk));
    }

    #[test]
    fn malformed_and_weak_ed25519_public_keys_are_refused() {
        let (signer, private_pem) = Ed25519Signer::generate().unwrap();
        let err = parse_ed25519_public_key(private_pem.as_bytes()).unwrap_err();
        assert!(err.contains("private key"), "{err}");
        let pk = signer.public_key();
        for bad in [
            &pk[..31],
            &[pk.as_slice(), &[0]].concat()[..],
            b"",
            b"hello",
        ] {
            assert!(parse_ed25519_public_key(bad).is_err(), "{bad:?}");
        }
        let short = base64url(&pk[..16]);
        assert!(parse_ed25519_public_key(short.as_bytes())
            .unwrap_err()
            .contains("32 bytes"));
        // A PEM public key of another algorithm (an RSA SPKI header) is not Ed25519.
        let rsa = write_pem(
            "PUBLIC KEY",
            [0x30, 0x82, 0x01, 0x22, 0x30, 0x0d, 0x06, 0x09],
        );
        assert!(parse_ed25519_public_key(rsa.as_bytes())
            .unwrap_err()
            .contains("not an Ed25519"));
        // Points of small order, with either sign bit: the identity would accept
        // R = identity, S = 0 as a signature of every message.
        for weak in SMALL_ORDER {
            for sign_bit in [0, 0x80] {
                let mut k = weak;
                k[31] |= sign_bit;
                assert!(
                    parse_ed25519_public_key(&k).unwrap_err().contains("weak"),
                    "{k:?}"
                );
            }
        }
        assert!(Ed25519Signer::from_pem(
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
        )
        .is_err());
    }

    #[test]
    fn pem_is_written_as_openssl_writes_it_and_read_back() {
        // RFC 4648's vector with padding, as PEM writes it.
        assert_eq!(
            write_pem("PUBLIC KEY", b"fo".to_vec()),
            "-----BEGIN PUBLIC KEY-----\nZm8=\n-----END PUBLIC KEY-----\n"
        );
        for n in [0usize, 1, 47, 48, 49, 100] {
            let raw: Vec<u8> = (0..n).map(|i| (i * 37 + 11) as u8).collect();
            let pem = write_pem("PUBLIC KEY", raw.clone());
            assert!(pem.lines().all(|l| l.len() <= 64), "{pem}");
            let der = SubjectPublicKeyInfoDer::from_pem_slice(pem.as_bytes()).unwrap();
            assert_eq!(der.as_ref(), raw.as_slice());
        }
    }

    #[test]
    fn pem_with_the_wrong_label_is_refused_with_a_clear_error() {
        let (signer, private_pem) = Ed25519Signer::generate().unwrap();
        // A public key where a private one belongs, and a certificate where a public key does.
        let err = Ed25519Signer::from_pem(&signer.public_key_pem()).unwrap_err();
        assert!(err.contains("not a PEM \"PRIVATE KEY\""), "{err}");
        let sec1 = private_pem.replace("PRIVATE KEY", "EC PRIVATE KEY");
        let err = Ed25519Signer::from_pem(&sec1).unwrap_err();
        assert!(err.contains("not a PEM \"PRIVATE KEY\""), "{err}");
        let cert = signer.public_key_pem().replace("PUBLIC KEY", "CERTIFICATE");
        let err = parse_ed25519_public_key(cert.as_bytes()).unwrap_err();
        assert!(err.contains("not a PEM \"PUBLIC KEY\""), "{err}");
        // Other blocks around the one wanted are skipped.
        let both = format!("{cert}{}", signer.public_key_pem());
        assert_eq!(
            parse_ed25519_public_key(both.as_bytes()),
            Ok(signer.public_key())
        );
    }
}
