//! Configuration: defaults, overridden by environment variables, validated at startup.
//!
//! Values are read through [`Source`] so tests feed a map instead of mutating the process
//! environment. Every variable is `SWITCHYARD_<NAME>`.

use std::collections::HashMap;
use std::fmt::Display;
use std::str::FromStr;
use std::time::Duration;

use secrecy::SecretString;

/// Where configuration values come from.
pub trait Source {
    /// The raw value of `SWITCHYARD_<name>`, if set.
    fn get(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug, Default, Clone, Copy)]
pub struct Environment;

impl Source for Environment {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(format!("SWITCHYARD_{name}")).ok()
    }
}

impl Source for HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name).cloned()
    }
}

/// Every `SWITCHYARD_*` variable of this process, read once at startup, as a [`Source`].
///
/// `SWITCHYARD_<NAME>_FILE=/path` stands for `SWITCHYARD_<NAME>` with the file's content
/// (one trailing newline dropped): container platforms hand secrets over as files
/// (compose `secrets:`, Kubernetes secret volumes), and a value in a file stays out of
/// `docker inspect` and `/proc/<pid>/environ`. Setting both forms, or naming a file that
/// cannot be read, is an error rather than a silent default.
pub fn environment() -> Result<HashMap<String, String>, ConfigError> {
    from_variables(std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v))))
}

fn from_variables(
    variables: impl Iterator<Item = (String, std::ffi::OsString)>,
) -> Result<HashMap<String, String>, ConfigError> {
    let mut plain = HashMap::new();
    let mut files = Vec::new();
    for (key, value) in variables {
        let Some(name) = key.strip_prefix("SWITCHYARD_") else {
            continue;
        };
        let value = value
            .into_string()
            .map_err(|_| ConfigError::new(name, "<not UTF-8>", "must be UTF-8"))?;
        match name.strip_suffix("_FILE") {
            Some(base) if !base.is_empty() => files.push((base.to_owned(), value)),
            _ => {
                plain.insert(name.to_owned(), value);
            }
        }
    }
    for (name, path) in files {
        let file = format!("{name}_FILE");
        if plain.contains_key(&name) {
            let reason = format!("set either SWITCHYARD_{name} or SWITCHYARD_{file}, not both");
            return Err(ConfigError::new(&file, &path, reason));
        }
        let text = std::fs::read_to_string(&path)
            .map_err(|e| ConfigError::new(&file, &path, format!("cannot read it: {e}")))?;
        let text = text.strip_suffix('\n').unwrap_or(&text);
        let text = text.strip_suffix('\r').unwrap_or(text);
        plain.insert(name, text.to_owned());
    }
    Ok(plain)
}

/// A [`Source`] that remembers every name asked of it: `<binary> check-config` reports
/// which variables a service reads, so deployment files can be checked against the code.
pub struct Recording<'a> {
    inner: &'a dyn Source,
    asked: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

impl<'a> Recording<'a> {
    /// Records what is asked of `inner`.
    pub fn new(inner: &'a dyn Source) -> Self {
        Self {
            inner,
            asked: Default::default(),
        }
    }

    /// The names asked so far, sorted, without the prefix.
    pub fn asked(&self) -> Vec<String> {
        match self.asked.lock() {
            Ok(asked) => asked.iter().cloned().collect(),
            Err(poisoned) => poisoned.into_inner().iter().cloned().collect(),
        }
    }
}

impl Source for Recording<'_> {
    fn get(&self, name: &str) -> Option<String> {
        match self.asked.lock() {
            Ok(mut asked) => asked.insert(name.to_owned()),
            Err(poisoned) => poisoned.into_inner().insert(name.to_owned()),
        };
        self.inner.get(name)
    }
}

impl std::fmt::Debug for Recording<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recording")
            .field("asked", &self.asked())
            .finish()
    }
}

/// A configuration value that could not be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: SWITCHYARD_{name}={value:?}: {reason}")]
pub struct ConfigError {
    /// Variable name without the prefix.
    pub name: String,
    /// The offending value.
    pub value: String,
    /// Why it was refused.
    pub reason: String,
}

impl ConfigError {
    /// Builds an error for `name`.
    pub fn new(name: &str, value: &str, reason: impl Display) -> Self {
        Self {
            name: name.to_owned(),
            value: value.to_owned(),
            reason: reason.to_string(),
        }
    }
}

/// Reads `name` and parses it, or falls back to `default`.
pub fn parse_or<T>(source: &dyn Source, name: &str, default: T) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: Display,
{
    match source.get(name) {
        None => Ok(default),
        Some(raw) => raw
            .trim()
            .parse()
            .map_err(|e| ConfigError::new(name, &raw, e)),
    }
}

/// Reads a duration given in milliseconds, bounded to `min..=max`.
pub fn millis_or(
    source: &dyn Source,
    name: &str,
    default: Duration,
    range: std::ops::RangeInclusive<u64>,
) -> Result<Duration, ConfigError> {
    let ms: u64 = parse_or(source, name, default.as_millis() as u64)?;
    if !range.contains(&ms) {
        let reason = format!("must be between {} and {} ms", range.start(), range.end());
        return Err(ConfigError::new(name, &ms.to_string(), reason));
    }
    Ok(Duration::from_millis(ms))
}

/// Settings every service needs to reach the broker.
#[derive(Debug, Clone)]
pub struct BusConfig {
    /// AMQP URI, with credentials; kept secret so it never lands in a log line.
    pub amqp_url: SecretString,
    /// Prefix of every exchange and queue name; tests use a fresh one each.
    pub prefix: String,
    /// Unacknowledged deliveries a consumer may hold.
    pub prefetch: u16,
    /// Channels publishing in parallel.
    pub publish_channels: usize,
    /// How long a publish may wait for the broker's confirm.
    pub confirm_timeout: Duration,
    /// Handling attempts of a message that keeps failing transiently before it is
    /// dead-lettered.
    pub retry_max_attempts: u32,
    /// Delay before the first retry; each further retry waits twice as long.
    pub retry_base: Duration,
    /// Longest delay between retries.
    pub retry_max_delay: Duration,
    /// Longest pause between reconnection attempts.
    pub reconnect_max_delay: Duration,
    /// How long start-up keeps trying to reach the broker before giving up.
    pub connect_timeout: Duration,
    /// Most messages a service's command queue holds; past it the broker refuses
    /// publishes (`reject-publish`) and the gateway answers 503 instead of letting a
    /// backlog grow until the broker's memory alarm stops every service.
    pub command_queue_max_length: u32,
}

impl BusConfig {
    /// Reads `AMQP_URL`, `PREFIX`, `PREFETCH`, `PUBLISH_CHANNELS`, `CONFIRM_TIMEOUT_MS`,
    /// `RETRY_MAX_ATTEMPTS`, `RETRY_BASE_MS`, `RETRY_MAX_DELAY_MS`, `RECONNECT_MAX_DELAY_MS`,
    /// `CONNECT_TIMEOUT_MS` and `COMMAND_QUEUE_MAX_LENGTH`.
    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        let url = source
            .get("AMQP_URL")
            .unwrap_or_else(|| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned());
        if !(url.starts_with("amqp://") || url.starts_with("amqps://")) {
            return Err(ConfigError::new(
                "AMQP_URL",
                "<hidden>",
                "must start with amqp://",
            ));
        }
        let prefix = source
            .get("PREFIX")
            .unwrap_or_else(|| "switchyard".to_owned());
        let prefix_ok = !prefix.is_empty()
            && prefix.len() <= 64
            && prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !prefix_ok {
            return Err(ConfigError::new(
                "PREFIX",
                &prefix,
                "use 1-64 of [A-Za-z0-9_-]",
            ));
        }
        let prefetch: u16 = parse_or(source, "PREFETCH", 64)?;
        if prefetch == 0 {
            return Err(ConfigError::new("PREFETCH", "0", "must be at least 1"));
        }
        let publish_channels: usize = parse_or(source, "PUBLISH_CHANNELS", 4)?;
        if !(1..=64).contains(&publish_channels) {
            let value = publish_channels.to_string();
            return Err(ConfigError::new(
                "PUBLISH_CHANNELS",
                &value,
                "must be 1 to 64",
            ));
        }
        let confirm_timeout = millis_or(
            source,
            "CONFIRM_TIMEOUT_MS",
            Duration::from_secs(5),
            100..=60_000,
        )?;
        let retry_max_attempts: u32 = parse_or(source, "RETRY_MAX_ATTEMPTS", 10)?;
        if !(1..=100).contains(&retry_max_attempts) {
            let value = retry_max_attempts.to_string();
            return Err(ConfigError::new(
                "RETRY_MAX_ATTEMPTS",
                &value,
                "must be 1 to 100",
            ));
        }
        let retry_base = millis_or(
            source,
            "RETRY_BASE_MS",
            Duration::from_secs(1),
            10..=600_000,
        )?;
        let retry_max_delay = millis_or(
            source,
            "RETRY_MAX_DELAY_MS",
            Duration::from_secs(60),
            10..=3_600_000,
        )?;
        // Each distinct delay is a queue on the broker; a base far below the cap would
        // declare dozens of them.
        if retry_max_delay.as_millis() / retry_base.as_millis().max(1) > 1024 {
            return Err(ConfigError::new(
                "RETRY_MAX_DELAY_MS",
                &retry_max_delay.as_millis().to_string(),
                "must be at most 1024 times SWITCHYARD_RETRY_BASE_MS",
            ));
        }
        let reconnect_max_delay = millis_or(
            source,
            "RECONNECT_MAX_DELAY_MS",
            Duration::from_secs(5),
            50..=300_000,
        )?;
        let connect_timeout = millis_or(
            source,
            "CONNECT_TIMEOUT_MS",
            Duration::from_secs(30),
            0..=3_600_000,
        )?;
        let command_queue_max_length: u32 = parse_or(source, "COMMAND_QUEUE_MAX_LENGTH", 100_000)?;
        if !(1..=100_000_000).contains(&command_queue_max_length) {
            let value = command_queue_max_length.to_string();
            return Err(ConfigError::new(
                "COMMAND_QUEUE_MAX_LENGTH",
                &value,
                "must be 1 to 100000000",
            ));
        }
        Ok(Self {
            amqp_url: SecretString::from(url),
            prefix,
            prefetch,
            publish_channels,
            confirm_timeout,
            retry_max_attempts,
            retry_base,
            retry_max_delay,
            reconnect_max_delay,
            connect_timeout,
            command_queue_max_length,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn variables(pairs: &[(&str, &str)]) -> Result<HashMap<String, String>, ConfigError> {
        from_variables(pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).into())))
    }

    #[test]
    fn a_file_variable_stands_for_the_value_in_the_file() {
        let dir = std::env::temp_dir().join(format!("switchyard-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let secret = dir.join("actor.key");
        std::fs::write(&secret, "s3cret\n").unwrap();
        let path = secret.to_str().unwrap();
        let read = variables(&[
            ("SWITCHYARD_ACTOR_KEY_FILE", path),
            ("SWITCHYARD_PREFIX", "p"),
            ("HOME", "/root"),
        ])
        .unwrap();
        assert_eq!(read.get("ACTOR_KEY").map(String::as_str), Some("s3cret"));
        assert_eq!(read.get("PREFIX").map(String::as_str), Some("p"));
        assert!(!read.contains_key("ACTOR_KEY_FILE") && !read.contains_key("HOME"));

        let both = variables(&[
            ("SWITCHYARD_ACTOR_KEY_FILE", path),
            ("SWITCHYARD_ACTOR_KEY", "x"),
        ])
        .unwrap_err();
        assert!(both.to_string().contains("not both"), "{both}");
        let missing = variables(&[("SWITCHYARD_ACTOR_KEY_FILE", "/nonexistent/k")]).unwrap_err();
        assert!(
            missing.to_string().contains("SWITCHYARD_ACTOR_KEY_FILE"),
            "{missing}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_recording_source_lists_what_was_asked() {
        let inner = source(&[("PREFETCH", "5")]);
        let recording = Recording::new(&inner);
        BusConfig::from_source(&recording).unwrap();
        let asked = recording.asked();
        assert!(asked.contains(&"PREFETCH".to_owned()), "{asked:?}");
        assert!(asked.contains(&"AMQP_URL".to_owned()), "{asked:?}");
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let config = BusConfig::from_source(&source(&[])).unwrap();
        assert_eq!(config.prefix, "switchyard");
        assert_eq!(config.prefetch, 64);
    }

    #[test]
    fn environment_overrides_defaults() {
        let config =
            BusConfig::from_source(&source(&[("PREFIX", "t-1"), ("PREFETCH", "5")])).unwrap();
        assert_eq!(config.prefix, "t-1");
        assert_eq!(config.prefetch, 5);
    }

    #[test]
    fn bad_values_name_the_variable() {
        let error = BusConfig::from_source(&source(&[("PREFETCH", "many")])).unwrap_err();
        assert!(error.to_string().contains("SWITCHYARD_PREFETCH"), "{error}");
        let error = BusConfig::from_source(&source(&[("PREFIX", "a.b")])).unwrap_err();
        assert!(error.to_string().contains("SWITCHYARD_PREFIX"), "{error}");
        let error = BusConfig::from_source(&source(&[("AMQP_URL", "http://x")])).unwrap_err();
        assert!(
            !error.to_string().contains("http://x"),
            "URLs may hold secrets: {error}"
        );
    }
}
