//! Signed one-time links to acknowledge or resolve an incident from a page (an email, a chat
//! message), without logging in.
//!
//! A token is URL-safe base64 (no padding) of `payload ‖ HMAC-SHA256(key, domain ‖ payload)`,
//! where the payload is a version byte, the action, the expiry (Unix seconds, big-endian), a
//! 16-byte random nonce and the incident id. Verifying checks the MAC in constant time, then
//! the expiry, then the nonce against the set of used ones the host keeps (a [`NonceStore`]),
//! so a link works once. The nonce is consumed only by a token that is genuine and unexpired,
//! so garbage cannot fill the store.
//!
//! Mail scanners open links before people do: a host should answer a link's GET with a
//! confirmation page ([`AckSigner::decode`], which consumes nothing) and act on its POST
//! ([`AckSigner::verify`]).

use std::collections::{HashMap, HashSet};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// Shorter keys are refused: the MAC is only as strong as its key.
pub const MIN_KEY_LEN: usize = 32;
/// Incident ids longer than this are refused: the token goes into a URL.
pub const MAX_INCIDENT_LEN: usize = 200;

const VERSION: u8 = 1;
/// Separates these MACs from any other use of the same server key.
const DOMAIN: &[u8] = b"opsloop-oncall-ack\0";
const HEADER_LEN: usize = 1 + 1 + 8 + 16;
const TAG_LEN: usize = 32;

pub type Nonce = [u8; 16];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AckAction {
    Acknowledge,
    Resolve,
}

impl AckAction {
    fn to_byte(self) -> u8 {
        match self {
            AckAction::Acknowledge => 1,
            AckAction::Resolve => 2,
        }
    }
    fn from_byte(byte: u8) -> Option<AckAction> {
        match byte {
            1 => Some(AckAction::Acknowledge),
            2 => Some(AckAction::Resolve),
            _ => None,
        }
    }
}

/// What a genuine token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckClaims {
    pub incident: String,
    pub action: AckAction,
    /// The token is refused from this instant on.
    pub expires: Timestamp,
    pub nonce: Nonce,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    #[error("the ack key must be at least {MIN_KEY_LEN} bytes")]
    WeakKey,
    #[error("an incident id in an ack link is at most {MAX_INCIDENT_LEN} bytes")]
    IncidentTooLong,
    #[error("no randomness for the ack link's nonce: {0}")]
    Random(String),
    #[error("this is not an ack link")]
    Malformed,
    #[error("this ack link was not signed by this server, or was altered")]
    BadSignature,
    #[error("this ack link expired at {0}")]
    Expired(Timestamp),
    #[error("this ack link was already used")]
    Replayed,
}

/// The used nonces, persisted by the host (a table, a file): `consume` records a nonce and
/// says whether it was new. `expires` lets a store forget nonces whose tokens expired, since
/// those are refused before the store is asked.
pub trait NonceStore {
    fn consume(&mut self, nonce: &Nonce, expires: Timestamp) -> bool;
}

impl NonceStore for HashSet<Nonce> {
    fn consume(&mut self, nonce: &Nonce, _expires: Timestamp) -> bool {
        self.insert(*nonce)
    }
}

/// Remembers each nonce's expiry, so [`prune`] can forget the ones no token can use again.
impl NonceStore for HashMap<Nonce, Timestamp> {
    fn consume(&mut self, nonce: &Nonce, expires: Timestamp) -> bool {
        if self.contains_key(nonce) {
            return false;
        }
        self.insert(*nonce, expires);
        true
    }
}

/// Drops nonces whose tokens have expired by `now`.
pub fn prune(store: &mut HashMap<Nonce, Timestamp>, now: Timestamp) {
    store.retain(|_, expires| *expires > now);
}

/// Signs and verifies ack links with the server's key.
#[derive(Clone)]
pub struct AckSigner {
    /// Keyed once; each MAC starts from a clone of it.
    keyed: Hmac<Sha256>,
}

impl std::fmt::Debug for AckSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key itself.
        f.debug_struct("AckSigner").finish_non_exhaustive()
    }
}

impl AckSigner {
    pub fn new(key: &[u8]) -> Result<AckSigner, AckError> {
        if key.len() < MIN_KEY_LEN {
            return Err(AckError::WeakKey);
        }
        let keyed = <Hmac<Sha256> as Mac>::new_from_slice(key).map_err(|_| AckError::WeakKey)?;
        Ok(AckSigner { keyed })
    }

    fn mac(&self, payload: &[u8]) -> Hmac<Sha256> {
        let mut mac = self.keyed.clone();
        mac.update(DOMAIN);
        mac.update(payload);
        mac
    }

    /// A token for these claims (a given nonce: tests, or a host with its own randomness).
    pub fn sign(&self, claims: &AckClaims) -> Result<String, AckError> {
        if claims.incident.len() > MAX_INCIDENT_LEN {
            return Err(AckError::IncidentTooLong);
        }
        let mut bytes = Vec::with_capacity(HEADER_LEN + claims.incident.len() + TAG_LEN);
        bytes.push(VERSION);
        bytes.push(claims.action.to_byte());
        bytes.extend_from_slice(&claims.expires.as_second().to_be_bytes());
        bytes.extend_from_slice(&claims.nonce);
        bytes.extend_from_slice(claims.incident.as_bytes());
        let tag = self.mac(&bytes).finalize().into_bytes();
        bytes.extend_from_slice(&tag);
        Ok(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// A fresh token with a random nonce, valid until `expires`.
    pub fn issue(&self, incident: &str, action: AckAction, expires: Timestamp) -> Result<String, AckError> {
        let mut nonce = [0u8; 16];
        getrandom::fill(&mut nonce).map_err(|e| AckError::Random(e.to_string()))?;
        self.sign(&AckClaims { incident: incident.to_owned(), action, expires, nonce })
    }

    /// The claims of a genuine token, expired or not, consuming nothing: for a confirmation
    /// page.
    pub fn decode(&self, token: &str) -> Result<AckClaims, AckError> {
        // A token is short; refuse a huge input before decoding it.
        if token.len() > 4 * (HEADER_LEN + MAX_INCIDENT_LEN + TAG_LEN) / 3 + 4 {
            return Err(AckError::Malformed);
        }
        let bytes = URL_SAFE_NO_PAD.decode(token.trim()).map_err(|_| AckError::Malformed)?;
        if bytes.len() < HEADER_LEN + TAG_LEN {
            return Err(AckError::Malformed);
        }
        let (payload, tag) = bytes.split_at(bytes.len() - TAG_LEN);
        // Constant-time comparison, so the tag cannot be guessed byte by byte.
        self.mac(payload).verify_slice(tag).map_err(|_| AckError::BadSignature)?;
        if payload[0] != VERSION {
            return Err(AckError::Malformed);
        }
        let action = AckAction::from_byte(payload[1]).ok_or(AckError::Malformed)?;
        let mut seconds = [0u8; 8];
        seconds.copy_from_slice(&payload[2..10]);
        let expires = Timestamp::from_second(i64::from_be_bytes(seconds)).map_err(|_| AckError::Malformed)?;
        let mut nonce = [0u8; 16];
        nonce.copy_from_slice(&payload[10..HEADER_LEN]);
        let incident = String::from_utf8(payload[HEADER_LEN..].to_vec()).map_err(|_| AckError::Malformed)?;
        Ok(AckClaims { incident, action, expires, nonce })
    }

    /// The claims of a genuine, unexpired, unused token, which is used from now on.
    pub fn verify(&self, token: &str, now: Timestamp, used: &mut impl NonceStore) -> Result<AckClaims, AckError> {
        let claims = self.decode(token)?;
        if now >= claims.expires {
            return Err(AckError::Expired(claims.expires));
        }
        if !used.consume(&claims.nonce, claims.expires) {
            return Err(AckError::Replayed);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn ts(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn a_token_works_once_until_it_expires() {
        let signer = AckSigner::new(KEY).unwrap();
        let token = signer.issue("inc-42", AckAction::Acknowledge, ts("2026-01-01T01:00Z")).unwrap();
        assert!(token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{token}");
        let mut used = HashSet::new();
        let claims = signer.verify(&token, ts("2026-01-01T00:30Z"), &mut used).unwrap();
        assert_eq!((claims.incident.as_str(), claims.action), ("inc-42", AckAction::Acknowledge));
        assert_eq!(signer.verify(&token, ts("2026-01-01T00:31Z"), &mut used), Err(AckError::Replayed));
        let other = signer.issue("inc-42", AckAction::Resolve, ts("2026-01-01T01:00Z")).unwrap();
        assert_eq!(
            signer.verify(&other, ts("2026-01-01T01:00Z"), &mut used),
            Err(AckError::Expired(ts("2026-01-01T01:00Z")))
        );
        assert_eq!(used.len(), 1, "an expired token consumes nothing");
    }

    #[test]
    fn tampering_and_other_keys_are_refused() {
        let signer = AckSigner::new(KEY).unwrap();
        let claims = AckClaims {
            incident: "inc-1".into(),
            action: AckAction::Acknowledge,
            expires: ts("2030-01-01T00:00Z"),
            nonce: [7; 16],
        };
        let token = signer.sign(&claims).unwrap();
        let mut bytes = URL_SAFE_NO_PAD.decode(&token).unwrap();
        bytes[1] = AckAction::Resolve.to_byte();
        let forged = URL_SAFE_NO_PAD.encode(&bytes);
        let now = ts("2026-01-01T00:00Z");
        let mut used = HashSet::new();
        assert_eq!(signer.verify(&forged, now, &mut used), Err(AckError::BadSignature));
        let other = AckSigner::new(b"another key, also 32 bytes long!").unwrap();
        assert_eq!(other.verify(&token, now, &mut used), Err(AckError::BadSignature));
        for garbage in ["", "!!!", "AAAA", &"A".repeat(10_000)] {
            assert_eq!(signer.verify(garbage, now, &mut used), Err(AckError::Malformed), "{garbage}");
        }
        assert!(used.is_empty());
        assert_eq!(signer.decode(&token).unwrap(), claims);
        assert_eq!(AckSigner::new(b"short").unwrap_err(), AckError::WeakKey);
        assert!(format!("{signer:?}").find("0123").is_none());
    }

    #[test]
    fn a_pruned_store_forgets_only_expired_nonces() {
        let signer = AckSigner::new(KEY).unwrap();
        let mut used: HashMap<Nonce, Timestamp> = HashMap::new();
        let early = signer.issue("a", AckAction::Resolve, ts("2026-01-01T01:00Z")).unwrap();
        let late = signer.issue("b", AckAction::Resolve, ts("2026-01-02T01:00Z")).unwrap();
        signer.verify(&early, ts("2026-01-01T00:00Z"), &mut used).unwrap();
        signer.verify(&late, ts("2026-01-01T00:00Z"), &mut used).unwrap();
        prune(&mut used, ts("2026-01-01T02:00Z"));
        assert_eq!(used.len(), 1);
        assert_eq!(signer.verify(&late, ts("2026-01-01T03:00Z"), &mut used), Err(AckError::Replayed));
    }
}
