//! opsloop's secrets vault: values (CI/CD variables, later deploy secrets) are stored encrypted
//! with XChaCha20-Poly1305, an AEAD, under a 256-bit key that never enters the database. The key
//! comes from `OPSLOOP_MASTER_KEY` (base64) or `<data-dir>/secrets.key`, created on first use
//! with mode 0600. Each value is bound to what it belongs to (associated data), so a ciphertext
//! copied to another variable or project does not decrypt.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

pub const MASTER_KEY_VARIABLE: &str = "OPSLOOP_MASTER_KEY";
const KEY_FILE: &str = "secrets.key";
const NONCE_BYTES: usize = 24;

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("{MASTER_KEY_VARIABLE} must be 32 bytes, base64-encoded (e.g. `head -c 32 /dev/urandom | base64`)")]
    BadKey,
    #[error("cannot read or create the key file {path}: {source}")]
    KeyFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the operating system's random source failed")]
    Random,
    #[error("a stored secret does not decrypt with this key (wrong key, or the value was tampered with)")]
    Decrypt,
}

/// Encrypts and decrypts secrets with the instance's key.
pub struct Vault {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Vault { key: [REDACTED] }")
    }
}

impl Vault {
    /// The key from the environment, else from `<data_dir>/secrets.key` (made if missing).
    pub fn open(data_dir: &Path) -> Result<Vault, VaultError> {
        if let Ok(text) = std::env::var(MASTER_KEY_VARIABLE) {
            return Vault::from_base64(text.trim());
        }
        let path = data_dir.join(KEY_FILE);
        let io = |source| VaultError::KeyFile { path: path.display().to_string(), source };
        match std::fs::read_to_string(&path) {
            Ok(text) => Vault::from_base64(text.trim()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                getrandom::fill(&mut key).map_err(|_| VaultError::Random)?;
                std::fs::create_dir_all(data_dir).map_err(io)?;
                write_private(&path, STANDARD.encode(key).as_bytes()).map_err(io)?;
                Ok(Vault { cipher: XChaCha20Poly1305::new(&key.into()) })
            }
            Err(error) => Err(io(error)),
        }
    }

    pub fn from_base64(text: &str) -> Result<Vault, VaultError> {
        let key = STANDARD.decode(text).map_err(|_| VaultError::BadKey)?;
        let key: [u8; 32] = key.try_into().map_err(|_| VaultError::BadKey)?;
        Ok(Vault { cipher: XChaCha20Poly1305::new(&key.into()) })
    }

    /// `base64(nonce || ciphertext)`, bound to `context` (e.g. `project:7/variable:TOKEN`).
    pub fn encrypt(&self, plaintext: &str, context: &str) -> Result<String, VaultError> {
        let mut nonce = [0u8; NONCE_BYTES];
        getrandom::fill(&mut nonce).map_err(|_| VaultError::Random)?;
        let sealed = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: plaintext.as_bytes(), aad: context.as_bytes() })
            .map_err(|_| VaultError::Random)?;
        let mut out = nonce.to_vec();
        out.extend(sealed);
        Ok(STANDARD.encode(out))
    }

    pub fn decrypt(&self, stored: &str, context: &str) -> Result<String, VaultError> {
        let bytes = STANDARD.decode(stored).map_err(|_| VaultError::Decrypt)?;
        if bytes.len() < NONCE_BYTES {
            return Err(VaultError::Decrypt);
        }
        let (nonce, sealed) = bytes.split_at(NONCE_BYTES);
        let plain = self
            .cipher
            .decrypt(XNonce::from_slice(nonce), Payload { msg: sealed, aad: context.as_bytes() })
            .map_err(|_| VaultError::Decrypt)?;
        String::from_utf8(plain).map_err(|_| VaultError::Decrypt)
    }
}

/// Writes a file only its owner can read, created with that mode (no window where it is wider).
pub fn write_private(path: &Path, content: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(content)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_binds_values_to_their_context() {
        let dir = tempfile::tempdir().unwrap();
        let vault = Vault::open(dir.path()).unwrap();
        let sealed = vault.encrypt("s3cret value", "project:1/variable:TOKEN").unwrap();
        assert!(!sealed.contains("s3cret"));
        assert_eq!(vault.decrypt(&sealed, "project:1/variable:TOKEN").unwrap(), "s3cret value");
        assert!(vault.decrypt(&sealed, "project:2/variable:TOKEN").is_err(), "moved to another project");
        let mut tampered = STANDARD.decode(&sealed).unwrap();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(vault.decrypt(&STANDARD.encode(tampered), "project:1/variable:TOKEN").is_err());
        assert_ne!(sealed, vault.encrypt("s3cret value", "project:1/variable:TOKEN").unwrap(), "fresh nonce each time");
    }

    #[test]
    fn the_key_file_is_private_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let first = Vault::open(dir.path()).unwrap();
        let sealed = first.encrypt("x", "c").unwrap();
        let mode = std::fs::metadata(dir.path().join(KEY_FILE)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let second = Vault::open(dir.path()).unwrap();
        assert_eq!(second.decrypt(&sealed, "c").unwrap(), "x");
        assert!(Vault::from_base64("short").is_err());
        assert_eq!(format!("{second:?}"), "Vault { key: [REDACTED] }");
    }
}
