//! The configuration files the operator mounts into sensor pods (`sensor.toml` of a fleet,
//! `relay.toml` of a relay), rendered from the sensor's own schema ([`sensor_core::config::Config`])
//! rather than from a mirror of it: a key renamed or retyped in the sensor breaks this crate's
//! build, not a pod at run time.
//!
//! A renderer builds a whole [`Config`] from the spec, starting from [`Config::default`], and
//! declares a [`KeyPlan`]: which keys it always writes, which ones the spec decides (written only
//! when they differ from the sensor's default, so the sensor image's defaults fill the rest), and
//! which ones it deliberately never writes, and why. Every key of [`sensor_core::config::keys`]
//! must be in exactly one of the three; the tests of each renderer check that, and that the file
//! loads back into the very `Config` it was rendered from.

use sensor_core::config::Config;

/// How a renderer treats each key of `sensor.toml`. Patterns are dotted keys
/// (`listen.max_inbound_peers`) or a whole section (`relay.*`).
#[derive(Debug, Clone, Copy)]
pub struct KeyPlan {
    /// Written in every rendered file, whatever their value.
    pub always: &'static [&'static str],
    /// Decided by the spec: written when the value differs from the sensor's default.
    pub from_spec: &'static [&'static str],
    /// Never written, each with the reason (a per-pod environment variable, another resource's
    /// file, no spec field: the sensor's default holds).
    pub never: &'static [(&'static str, &'static str)],
}

impl KeyPlan {
    /// Whether `key` is written when its value is `value` and the default's is `default`.
    fn writes(&self, key: &str, value: &toml::Value, default: Option<&toml::Value>) -> bool {
        self.always.iter().any(|p| matches(p, key))
            || (self.from_spec.iter().any(|p| matches(p, key)) && default != Some(value))
    }

    /// Keys of `sensor.toml` that no pattern of this plan names (must be none), and patterns
    /// that name no key or are listed twice (must be none either).
    pub fn gaps(&self) -> (Vec<&'static str>, Vec<&'static str>) {
        let patterns: Vec<&'static str> =
            self.always.iter().chain(self.from_spec).copied().chain(self.never.iter().map(|(p, _)| *p)).collect();
        let keys: Vec<&'static str> = sensor_core::config::keys().collect();
        let unclassified = keys.iter().copied().filter(|k| patterns.iter().filter(|p| matches(p, k)).count() != 1);
        let stale = patterns.iter().copied().filter(|p| !keys.iter().any(|k| matches(p, k)));
        (unclassified.collect(), stale.collect())
    }
}

/// `pattern` is `key`, or `section.*` and `key` lies in that section.
fn matches(pattern: &str, key: &str) -> bool {
    match pattern.strip_suffix(".*") {
        Some(section) => key.strip_prefix(section).is_some_and(|rest| rest.starts_with('.')),
        None => pattern == key,
    }
}

/// `config` as TOML with the keys `plan` writes (see [`KeyPlan`]), after a one-line `header`
/// comment. Sections without a written key are left out. Keys come in the schema's order.
pub fn render(config: &Config, plan: &KeyPlan, header: &str) -> String {
    let (Ok(full), Ok(default)) = (toml::Table::try_from(config), toml::Table::try_from(Config::default())) else {
        // Config serializes with its own serializers only (strings, integers, booleans, lists);
        // should that ever fail, a file with the header alone makes the sensor refuse nothing.
        return format!("# {header}\n");
    };
    let mut out = toml::Table::new();
    for (name, value) in full {
        match value {
            toml::Value::Table(section) => {
                let defaults = default.get(&name).and_then(toml::Value::as_table);
                let kept: toml::Table = section
                    .into_iter()
                    .filter(|(key, v)| plan.writes(&format!("{name}.{key}"), v, defaults.and_then(|d| d.get(key))))
                    .collect();
                if !kept.is_empty() {
                    out.insert(name, toml::Value::Table(kept));
                }
            }
            value => {
                if plan.writes(&name, &value, default.get(&name)) {
                    out.insert(name, value);
                }
            }
        }
    }
    format!("# {header}\n{}", toml::to_string(&out).unwrap_or_default())
}

/// The `[name]` section of `config` as a renderer with `plan` writes it; `None` when the plan
/// writes no key of it. For tests of the renderers' sections.
#[cfg(test)]
pub fn rendered_section(config: &Config, plan: &KeyPlan, name: &str) -> Option<toml::Table> {
    let table: toml::Table = render(config, plan, "").parse().ok()?;
    table.get(name)?.as_table().cloned()
}

/// `value` (a spec's signed integer) as the sensor's unsigned type, or `current` when the spec
/// leaves it unset or it does not fit (the validate step and the CRD schema refuse such values
/// before a file is rendered).
pub fn unsigned<T: TryFrom<i64>>(value: Option<impl Into<i64>>, current: T) -> T {
    value.and_then(|v| T::try_from(v.into()).ok()).unwrap_or(current)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_keys_and_sections() {
        assert!(matches("listen.address", "listen.address"));
        assert!(!matches("listen.address", "listen.address_x"));
        assert!(matches("relay.*", "relay.max_circuits"));
        assert!(!matches("relay.*", "relay_node"));
        assert!(!matches("relay.*", "punch.relay"));
    }

    #[test]
    fn only_always_and_changed_keys_are_written_and_the_file_loads_back() {
        const PLAN: KeyPlan = KeyPlan {
            always: &["network", "metrics.listen"],
            from_spec: &["listen.max_inbound_peers", "listen.max_peers_per_ip"],
            never: &[],
        };
        let mut config = Config::default();
        config.listen.max_inbound_peers = 7;
        let text = render(&config, &PLAN, "test");
        assert!(text.starts_with("# test\n"), "{text}");
        let table: toml::Table = text.parse().unwrap();
        assert_eq!(table["network"].as_str(), Some("mainnet"));
        assert_eq!(table["listen"]["max_inbound_peers"].as_integer(), Some(7));
        assert!(table["listen"].get("max_peers_per_ip").is_none(), "default values are left to the sensor");
        assert!(table.get("classify").is_none() && table.get("relay").is_none());
        assert_eq!(Config::from_toml_str(&text).unwrap(), config);
    }

    #[test]
    fn gaps_name_unclassified_keys_and_stale_patterns() {
        const PLAN: KeyPlan = KeyPlan { always: &["network", "nonsense.key"], from_spec: &["network"], never: &[] };
        let (unclassified, stale) = PLAN.gaps();
        assert!(unclassified.contains(&"network"), "listed twice");
        assert!(unclassified.contains(&"listen.address"), "listed nowhere");
        assert_eq!(stale, ["nonsense.key"]);
    }

    #[test]
    fn unsigned_takes_values_that_fit() {
        assert_eq!(unsigned(Some(5i64), 1usize), 5);
        assert_eq!(unsigned(Some(-5i64), 1usize), 1);
        assert_eq!(unsigned(None::<i64>, 9u32), 9);
        assert_eq!(unsigned(Some(3i32), 0u64), 3);
    }
}
