//! The gitleaks, osv-scanner and Syft roles, as a library (no HTTP server, no store): secret
//! scanning of trees, git history and staged changes with gitleaks-compatible rules; lockfile
//! inventories audited against an offline OSV database with each ecosystem's version ordering;
//! SBOMs. Kept apart from `opsloop-secure`, the vault.

pub mod audit;
pub mod sbom;
pub mod secrets;
pub mod version;
