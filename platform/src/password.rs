//! argon2id password hashes: the gateway hashes at registration (so clear text never
//! reaches the broker's disk), accounts verifies at login. Both read the cost from
//! `ARGON2_MEMORY_KIB` and `ARGON2_ITERATIONS`.

use crate::config::{ConfigError, Source, parse_or};
use argon2::{Algorithm, Argon2, Params, Version};
use argon2::{PasswordHash, PasswordHasher, PasswordVerifier};

/// argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashParams {
    /// Memory in KiB (OWASP: 19 MiB with 2 iterations).
    pub memory_kib: u32,
    /// Iterations.
    pub iterations: u32,
}

impl Default for HashParams {
    fn default() -> Self {
        Self {
            memory_kib: 19 * 1024,
            iterations: 2,
        }
    }
}

impl HashParams {
    /// Reads `ARGON2_MEMORY_KIB` and `ARGON2_ITERATIONS`.
    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        let memory_kib: u32 = parse_or(source, "ARGON2_MEMORY_KIB", defaults.memory_kib)?;
        let iterations: u32 = parse_or(source, "ARGON2_ITERATIONS", defaults.iterations)?;
        if Params::new(memory_kib, iterations, 1, None).is_err() {
            return Err(ConfigError::new(
                "ARGON2_MEMORY_KIB",
                &memory_kib.to_string(),
                "not valid argon2 parameters",
            ));
        }
        Ok(Self {
            memory_kib,
            iterations,
        })
    }

    fn argon2(self) -> Argon2<'static> {
        let params = Params::new(self.memory_kib, self.iterations, 1, None).unwrap_or_default();
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
    }
}

/// Hashes `password` into a PHC string. CPU-heavy: call from `spawn_blocking`.
pub fn hash(password: &str, params: HashParams) -> Result<String, String> {
    let hashed: Result<PasswordHash, _> = params.argon2().hash_password(password.as_bytes());
    hashed.map(|h| h.to_string()).map_err(|e| e.to_string())
}

/// Whether `phc` is an argon2id hash we can verify against.
pub fn is_argon2id(phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| h.algorithm.as_str() == "argon2id")
}

/// Checks `password` against `phc` (whose parameters it carries). CPU-heavy.
pub fn verify(password: &str, phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHEAP: HashParams = HashParams {
        memory_kib: 256,
        iterations: 1,
    };

    #[test]
    fn a_hash_verifies_its_password_and_no_other() {
        let phc = hash("correct horse battery", CHEAP).unwrap();
        assert!(is_argon2id(&phc));
        assert!(verify("correct horse battery", &phc));
        assert!(!verify("correct horse battery!", &phc));
        assert!(!verify("x", "not a hash"));
        assert!(!is_argon2id("$2b$10$abcdefghijklmnopqrstuv"));
    }
}
