//! Secrets handed to users (API tokens, session ids, CSRF tokens, passwords) and how they are
//! kept: tokens and session ids are stored as SHA-256 digests (they are 256-bit random, so a
//! fast digest is enough), passwords as argon2id hashes.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Every API token starts with this, so secret scanners and people can recognise one.
pub const TOKEN_PREFIX: &str = "olp_";

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("the operating system's random source failed: {0}")]
    Random(String),
    #[error("password hashing failed: {0}")]
    Hash(String),
}

fn random_bytes<const N: usize>() -> Result<[u8; N], CredentialError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| CredentialError::Random(e.to_string()))?;
    Ok(bytes)
}

fn random_text() -> Result<String, CredentialError> {
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<32>()?))
}

/// A new API token, e.g. `olp_3q…`; shown to the user once.
pub fn new_api_token() -> Result<String, CredentialError> {
    Ok(format!("{TOKEN_PREFIX}{}", random_text()?))
}

/// A new session id or CSRF token.
pub fn new_secret() -> Result<String, CredentialError> {
    random_text()
}

/// A readable random password for first start and `admin user create`.
pub fn new_password() -> Result<String, CredentialError> {
    // 20 characters from a 57-symbol alphabet without look-alikes: ~116 bits.
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let bytes = random_bytes::<20>()?;
    Ok(bytes.iter().map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char).collect())
}

/// The digest under which a token or session id is stored and looked up.
pub fn digest(secret: &str) -> String {
    digest_bytes(secret.as_bytes())
}

/// SHA-256 of `bytes`, in hex.
pub fn digest_bytes(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

pub fn hash_password(password: &str) -> Result<String, CredentialError> {
    let salt = SaltString::encode_b64(&random_bytes::<16>()?).map_err(|e| CredentialError::Hash(e.to_string()))?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| CredentialError::Hash(e.to_string()))
}

/// Checks a password against a stored hash; a malformed hash never matches.
pub fn verify_password(password: &str, stored_hash: &str) -> bool {
    PasswordHash::new(stored_hash)
        .is_ok_and(|parsed| argon2::Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
}

/// A hash to verify against when the user does not exist, so a wrong username costs as
/// long as a wrong password and timing does not reveal which accounts exist.
pub fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_password("decoy password that matches nothing").unwrap_or_default())
}

pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

pub const MIN_PASSWORD_LEN: usize = 12;

/// Why a new password is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WeakPassword {
    #[error("the password must be at least {MIN_PASSWORD_LEN} characters long")]
    TooShort,
    /// Past this, hashing it is work an attacker could ask for cheaply.
    #[error("the password must be at most 1024 bytes long")]
    TooLong,
}

pub fn check_password_strength(password: &str) -> Result<(), WeakPassword> {
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(WeakPassword::TooShort);
    }
    if password.len() > 1024 {
        return Err(WeakPassword::TooLong);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_prefixed_and_digests_stable() {
        let first = new_api_token().unwrap();
        let second = new_api_token().unwrap();
        assert!(first.starts_with(TOKEN_PREFIX) && first.len() == TOKEN_PREFIX.len() + 43);
        assert_ne!(first, second);
        assert_eq!(digest(&first), digest(&first));
        assert_ne!(digest(&first), digest(&second));
        assert_eq!(digest(&first).len(), 64);
    }

    #[test]
    fn passwords_hash_with_argon2id_and_verify() {
        let hash = hash_password("correct horse battery").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("correct horse battery", &hash));
        assert!(!verify_password("wrong horse battery", &hash));
        assert!(!verify_password("anything", "not a hash"));
        assert!(!verify_password("anything", decoy_hash()));
    }

    #[test]
    fn generated_passwords_are_long_enough() {
        let password = new_password().unwrap();
        assert!(check_password_strength(&password).is_ok());
        assert_eq!(check_password_strength("short"), Err(WeakPassword::TooShort));
        assert_eq!(check_password_strength(&"x".repeat(1025)), Err(WeakPassword::TooLong));
    }
}
