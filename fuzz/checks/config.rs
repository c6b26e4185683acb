//! The property checks of fuzz target `config`, called by the libFuzzer target
//! (`fuzz/fuzz_targets/config.rs`) and by the corpus replay under `cargo test`
//! (`sensor/tests/fuzz_corpus.rs`).
//!
//! Input: a `sensor.toml` and `SENSOR_*` environment variables through the sensor's
//! configuration loading and validation ([`Config::from_toml_str`], [`Config::load`]). UTF-8
//! (anything else is skipped); the text before the first NUL byte is the TOML file; after it,
//! one `NAME=VALUE` environment variable per line.
//!
//! Properties: never panics (every refusal is a [`ConfigError`], which the signatures now
//! guarantee); a refusal names a key or a file; an accepted file's configuration, written back as
//! TOML, loads again to the same configuration.

use sensor_core::config::{CliOverrides, Config, ConfigError};

fn refusal_names_its_source(result: Result<(), ConfigError>) {
    match result {
        Ok(()) | Err(ConfigError::File { .. }) => {}
        Err(ConfigError::Key { key, reason }) => {
            assert!(!key.is_empty() && !reason.is_empty(), "a refusal without a key or a reason: {key:?} {reason:?}")
        }
    }
}

/// Panics when `data` breaks a property.
pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (file, env) = text.split_once('\0').unwrap_or((text, ""));
    match Config::from_toml_str(file) {
        Ok(config) => {
            let written = toml::Table::try_from(&config).expect("an accepted configuration serializes").to_string();
            let again = Config::from_toml_str(&written)
                .unwrap_or_else(|e| panic!("written back as\n{written}\nit no longer loads: {e}"));
            assert_eq!(again, config, "written back as\n{written}");
        }
        Err(e) => refusal_names_its_source(Err(e)),
    }
    if !env.is_empty() {
        let vars = env.lines().filter_map(|line| line.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned()));
        refusal_names_its_source(Config::load(None, vars, &CliOverrides::default()).map(|_| ()));
    }
}
