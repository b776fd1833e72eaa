//! JWT authentication for routes: the `jwt:` section ([`config`]), token verification
//! with a verified-token cache ([`verifier`]), JWKS fetching and refreshing (`jwks`), and
//! the helpers the proxy needs (`Authorization: Bearer` parsing, reason classes and
//! statuses, minting test tokens).
//!
//! [`Verifier::verify`] is synchronous and I/O-free, so it runs inline in the request
//! filter; a JWKS verifier's keys come from a background refresher that the runtime
//! starts. Nothing in this module ever formats a token, a secret or key material into
//! an error, a log line or a `Debug` output: tokens are bearer credentials.

mod cache;
pub mod config;
mod jwks;
mod token;
pub mod verifier;

#[cfg(test)]
mod tests;

/// For other caches keyed by a SipHash (forward-auth decisions).
pub(crate) use cache::IdentityHasher;
pub use config::{
    validate, validate_raw, JwtConfig, KeySource, RawJwt, TokenSource, VALID_ALGORITHMS,
};
pub use token::{bearer_token, mint_hs256, AuthError, Claims};
pub use verifier::Verifier;

use crate::config::error::ConfigError;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Validate a `jwt:` section and build its verifiers (tests, benchmarks, tools).
pub fn build_verifiers(
    raw: &BTreeMap<String, RawJwt>,
) -> Result<HashMap<String, Arc<Verifier>>, Vec<ConfigError>> {
    Ok(validate_raw(raw)?
        .into_iter()
        .map(|(name, c)| (name, Arc::new(Verifier::new(&c))))
        .collect())
}
