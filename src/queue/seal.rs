//! At-rest protection of queued face images: XChaCha20-Poly1305 under a
//! device key read from a credential file.
//!
//! A sealed value is `nonce (24 bytes) ++ ciphertext ++ tag (16 bytes)`. The
//! nonce is random (192 bits, so random nonces never collide in practice).
//! The associated data binds a value to its place (entry id and image
//! index), so sealed images cannot be swapped between entries unnoticed.
//!
//! The key file holds 32 random bytes, raw or as 64 hex digits (what
//! `enrolld keygen` writes). It must not be readable by other users. The key
//! and the cipher state are wiped from memory when dropped.

use crate::config::Secret;
use chacha20poly1305::aead::rand_core::RngCore;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use std::fmt;
use std::path::Path;
use zeroize::Zeroizing;

/// Bytes a sealed value adds to its plaintext.
pub const OVERHEAD: usize = NONCE_BYTES + TAG_BYTES;
const NONCE_BYTES: usize = 24;
const TAG_BYTES: usize = 16;
/// Key length in bytes.
pub const KEY_BYTES: usize = 32;

/// The device key. Never printed; wiped when dropped.
#[derive(Clone)]
pub struct QueueKey {
    cipher: XChaCha20Poly1305,
}

/// Why a value could not be opened or sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SealError {
    /// Shorter than a nonce and a tag.
    Truncated,
    /// The tag does not match: another key, or altered bytes.
    Mismatch,
    /// The cipher refused to seal (only for absurd lengths).
    Seal,
}

impl fmt::Display for SealError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SealError::Truncated => f.write_str("sealed value is truncated"),
            SealError::Mismatch => f.write_str("sealed value does not open with this key"),
            SealError::Seal => f.write_str("could not seal value"),
        }
    }
}

impl std::error::Error for SealError {}

impl QueueKey {
    /// Reads a key file (a relative path is looked up in
    /// `$CREDENTIALS_DIRECTORY`). The file must not be readable by others.
    pub fn from_file(path: &Path) -> Result<QueueKey, String> {
        const HINT: &str = "the queue cannot be opened without the key it was written with; \
                            a new device makes one with `enrolld keygen --output FILE`";
        let secret = Secret::from_file(path).map_err(|e| format!("queue key: {e} ({HINT})"))?;
        QueueKey::from_encoded(secret.expose())
            .map_err(|e| format!("queue key {}: {e} ({HINT})", path.display()))
    }

    /// Parses 32 raw bytes or 64 hex digits.
    pub fn from_encoded(bytes: &[u8]) -> Result<QueueKey, String> {
        let mut key = Zeroizing::new([0u8; KEY_BYTES]);
        if bytes.len() == KEY_BYTES {
            key.copy_from_slice(bytes);
        } else if bytes.len() == 2 * KEY_BYTES {
            for (i, pair) in bytes.chunks(2).enumerate() {
                let hi = hex_digit(pair[0]);
                let lo = hex_digit(pair[1]);
                match (hi, lo) {
                    (Some(h), Some(l)) => key[i] = (h << 4) | l,
                    _ => return Err("key file holds something other than 64 hex digits".into()),
                }
            }
        } else {
            return Err(format!(
                "key file holds {} bytes; expected 64 hex digits or 32 raw bytes",
                bytes.len()
            ));
        }
        if key.iter().all(|b| *b == 0) {
            return Err("key is all zeros".into());
        }
        Ok(QueueKey::from_bytes(&key))
    }

    fn from_bytes(key: &[u8; KEY_BYTES]) -> QueueKey {
        QueueKey {
            cipher: XChaCha20Poly1305::new(key.into()),
        }
    }

    /// A new random key and its hex form (for `enrolld keygen`).
    pub fn generate() -> (QueueKey, Zeroizing<String>) {
        let mut raw = Zeroizing::new([0u8; KEY_BYTES]);
        OsRng.fill_bytes(raw.as_mut());
        let mut hex = Zeroizing::new(String::with_capacity(2 * KEY_BYTES + 1));
        for b in raw.iter() {
            hex.push(char::from(HEX[usize::from(b >> 4)]));
            hex.push(char::from(HEX[usize::from(b & 15)]));
        }
        (QueueKey::from_bytes(&raw), hex)
    }

    /// Seals `plain`, bound to `aad`.
    pub fn seal(&self, aad: &[u8], plain: &[u8]) -> Result<Vec<u8>, SealError> {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let sealed = self
            .cipher
            .encrypt(&nonce, Payload { msg: plain, aad })
            .map_err(|_| SealError::Seal)?;
        let mut out = Vec::with_capacity(NONCE_BYTES + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Opens a value sealed with the same key and `aad`.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        if sealed.len() < OVERHEAD {
            return Err(SealError::Truncated);
        }
        let (nonce, body) = sealed.split_at(NONCE_BYTES);
        self.cipher
            .decrypt(XNonce::from_slice(nonce), Payload { msg: body, aad })
            .map_err(|_| SealError::Mismatch)
    }

    /// [`QueueKey::open`] without a copy: decrypts `sealed` where it lies
    /// and returns where in it the plaintext is. The tag is checked before
    /// anything is decrypted, so on an error the bytes are as they were.
    pub fn open_in_place(
        &self,
        aad: &[u8],
        sealed: &mut [u8],
    ) -> Result<std::ops::Range<usize>, SealError> {
        use chacha20poly1305::aead::AeadInPlace;
        if sealed.len() < OVERHEAD {
            return Err(SealError::Truncated);
        }
        let end = sealed.len() - TAG_BYTES;
        let (head, tag) = sealed.split_at_mut(end);
        let (nonce, body) = head.split_at_mut(NONCE_BYTES);
        self.cipher
            .decrypt_in_place_detached(
                XNonce::from_slice(nonce),
                aad,
                body,
                chacha20poly1305::Tag::from_slice(tag),
            )
            .map_err(|_| SealError::Mismatch)?;
        Ok(NONCE_BYTES..end)
    }
}

impl fmt::Debug for QueueKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("QueueKey(***)")
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> QueueKey {
        QueueKey::from_encoded(&[byte; KEY_BYTES]).expect("key")
    }

    #[test]
    fn seal_then_open_round_trips_and_hides_the_plaintext() {
        let k = key(7);
        let plain = b"\xff\xd8\xff\xe0 a jpeg, say".repeat(100);
        let sealed = k.seal(b"id-1", &plain).expect("seal");
        assert_eq!(sealed.len(), plain.len() + OVERHEAD);
        assert!(!sealed
            .windows(16)
            .any(|w| plain.windows(16).any(|p| p == w)));
        assert_eq!(k.open(b"id-1", &sealed).expect("open"), plain);
        // Two seals of the same value differ (fresh nonce).
        assert_ne!(k.seal(b"id-1", &plain).expect("seal"), sealed);
    }

    #[test]
    fn wrong_key_other_place_altered_or_short_values_do_not_open() {
        let k = key(7);
        let sealed = k.seal(b"id-1", b"face").expect("seal");
        assert_eq!(key(8).open(b"id-1", &sealed), Err(SealError::Mismatch));
        assert_eq!(k.open(b"id-2", &sealed), Err(SealError::Mismatch));
        let mut altered = sealed.clone();
        altered[30] ^= 1;
        assert_eq!(k.open(b"id-1", &altered), Err(SealError::Mismatch));
        assert_eq!(k.open(b"id-1", &sealed[..20]), Err(SealError::Truncated));
    }

    #[test]
    fn opening_in_place_gives_the_same_bytes_and_leaves_a_refused_value_as_it_was() {
        let k = key(7);
        let plain: Vec<u8> = (0..10_000u32).map(|i| (i % 253) as u8).collect();
        let sealed = k.seal(b"id-1", &plain).expect("seal");
        let mut buf = sealed.clone();
        let at = k.open_in_place(b"id-1", &mut buf).expect("opens");
        assert_eq!(&buf[at], &plain[..]);
        for (aad, mut value) in [
            (&b"id-2"[..], sealed.clone()),
            (&b"id-1"[..], {
                let mut v = sealed.clone();
                v[5_000] ^= 1;
                v
            }),
        ] {
            let before = value.clone();
            assert_eq!(k.open_in_place(aad, &mut value), Err(SealError::Mismatch));
            assert_eq!(value, before, "nothing decrypted");
        }
        assert_eq!(
            k.open_in_place(b"id-1", &mut buf[..20]),
            Err(SealError::Truncated)
        );
    }

    #[test]
    fn key_files_hold_hex_or_raw_bytes_and_nothing_else() {
        let (generated, hex) = QueueKey::generate();
        let parsed = QueueKey::from_encoded(hex.as_bytes()).expect("hex");
        let sealed = generated.seal(b"", b"x").expect("seal");
        assert_eq!(parsed.open(b"", &sealed).expect("same key"), b"x");
        assert!(QueueKey::from_encoded(hex.to_uppercase().as_bytes()).is_ok());
        assert!(QueueKey::from_encoded(&[1; 31]).is_err());
        assert!(QueueKey::from_encoded(&[b'g'; 64]).is_err());
        assert!(QueueKey::from_encoded(&[0; 32]).is_err());
        assert_eq!(format!("{generated:?}"), "QueueKey(***)");
    }
}
