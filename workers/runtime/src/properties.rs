//! The user's librdkafka properties (`-X key=value`, `STREAMFLEET_KAFKA_<KEY>`): parsing,
//! the client each is for, which hold secrets, which streamfleet manages itself, and whether
//! librdkafka accepts them. Settled before any client is built, so both the configuration
//! (which refuses a bad one) and the client builders (which apply them) depend on this module
//! and not on each other.

use std::fmt;

use rdkafka::ClientConfig;

/// A librdkafka property that is malformed, unknown, invalid, or managed by streamfleet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid Kafka property {property}: {message}")]
pub struct PropertyError {
    /// Property name as given.
    pub property: String,
    /// librdkafka's or streamfleet's message, secrets redacted.
    pub message: String,
}

/// Which librdkafka client a property is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientScope {
    /// Both the consumer and the producer.
    Both,
    /// The consumer only (`consumer.` prefix).
    Consumer,
    /// The producer only (`producer.` prefix).
    Producer,
}

/// One librdkafka property given by the user.
#[derive(Clone, PartialEq, Eq)]
pub struct KafkaProperty {
    /// Which client it applies to.
    pub scope: ClientScope,
    /// librdkafka property name.
    pub key: String,
    /// Value.
    pub value: String,
}

impl KafkaProperty {
    /// Parses `key=value`, `consumer.key=value` or `producer.key=value`.
    pub fn parse(s: &str) -> Result<Self, PropertyError> {
        let (key, value) = s.split_once('=').ok_or_else(|| PropertyError {
            property: s.to_owned(),
            message: "expected key=value".into(),
        })?;
        let key = key.trim();
        let (scope, key) = if let Some(k) = key.strip_prefix("consumer.") {
            (ClientScope::Consumer, k)
        } else if let Some(k) = key.strip_prefix("producer.") {
            (ClientScope::Producer, k)
        } else {
            (ClientScope::Both, key)
        };
        if key.is_empty() {
            return Err(PropertyError {
                property: s.to_owned(),
                message: "empty property name".into(),
            });
        }
        Ok(Self {
            scope,
            key: key.to_owned(),
            value: value.to_owned(),
        })
    }

    /// The value as it may be shown: secrets are replaced.
    pub fn display_value(&self) -> &str {
        redact(&self.key, &self.value)
    }
}

impl fmt::Debug for KafkaProperty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}:{}={}", self.scope, self.key, self.display_value())
    }
}

/// Shown instead of a secret.
pub const REDACTED: &str = "[redacted]";

/// Whether a librdkafka property holds a secret.
pub fn is_secret(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.ends_with("password")
        || k.contains("secret")
        || k.ends_with(".pem") && k.contains("key")
        || matches!(
            k.as_str(),
            "sasl.jaas.config" | "sasl.oauthbearer.config" | "ssl.key.pem" | "ssl_key"
        )
}

/// `value`, or [`REDACTED`] when `key` holds a secret.
pub fn redact<'a>(key: &str, value: &'a str) -> &'a str {
    if is_secret(key) { REDACTED } else { value }
}

/// Variables with the `STREAMFLEET_KAFKA_` prefix that are not librdkafka properties:
/// `STREAMFLEET_KAFKA_DIST` names the Kafka distribution the test command starts.
pub const NOT_KAFKA_PROPERTIES: &[&str] = &["STREAMFLEET_KAFKA_DIST"];

/// Reads `STREAMFLEET_KAFKA_<KEY>` variables from an environment: `_` becomes `.`, `__` an
/// underscore, the name is lower-cased; a `CONSUMER_`/`PRODUCER_` prefix scopes it.
pub fn kafka_properties_from_env(
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<KafkaProperty>, PropertyError> {
    const PREFIX: &str = "STREAMFLEET_KAFKA_";
    let mut props: Vec<KafkaProperty> = vars
        .into_iter()
        .filter(|(k, _)| !NOT_KAFKA_PROPERTIES.contains(&k.as_str()))
        .filter_map(|(k, v)| {
            let name = k.strip_prefix(PREFIX)?;
            let key = name
                .to_ascii_lowercase()
                .replace("__", "\u{0}")
                .replace('_', ".")
                .replace('\u{0}', "_");
            Some(KafkaProperty::parse(&format!("{key}={v}")))
        })
        .collect::<Result<_, _>>()?;
    props.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(props)
}

/// Properties streamfleet sets itself, with the reason a user may not.
pub const MANAGED_PROPERTIES: &[(&str, &str)] = &[
    ("bootstrap.servers", "set it with --brokers"),
    ("group.id", "set it with --group-id"),
    ("group.instance.id", "set it with --instance-id"),
    (
        "enable.auto.commit",
        "offsets are committed by streamfleet only after a record's outputs are acknowledged",
    ),
    (
        "enable.auto.offset.store",
        "offsets are committed by streamfleet only after a record's outputs are acknowledged",
    ),
    ("transactional.id", "derived from the group and instance id"),
    ("isolation.level", "follows the processing guarantee"),
];

/// Refuses managed, unknown or invalid properties; the error names the property.
pub fn validate(props: &[KafkaProperty]) -> Result<(), PropertyError> {
    for p in props {
        if let Some((_, why)) = MANAGED_PROPERTIES.iter().find(|(k, _)| *k == p.key) {
            return Err(PropertyError {
                property: p.key.clone(),
                message: format!("managed by streamfleet: {why}"),
            });
        }
        let mut probe = ClientConfig::new();
        probe.set(&p.key, &p.value);
        if let Err(e) = probe.create_native_config() {
            return Err(PropertyError {
                property: p.key.clone(),
                message: e.to_string().replace(&p.value, redact(&p.key, &p.value)),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_parse_with_scopes() {
        let p = KafkaProperty::parse("producer.linger.ms=20").unwrap();
        assert_eq!(
            (p.scope, p.key.as_str(), p.value.as_str()),
            (ClientScope::Producer, "linger.ms", "20")
        );
        let p = KafkaProperty::parse("security.protocol=SASL_SSL").unwrap();
        assert_eq!(p.scope, ClientScope::Both);
        assert!(KafkaProperty::parse("nonsense").is_err());
    }

    #[test]
    fn secrets_are_redacted_in_debug_output() {
        for key in [
            "sasl.password",
            "ssl.key.password",
            "ssl.keystore.password",
            "sasl.oauthbearer.client.secret",
        ] {
            let p = KafkaProperty::parse(&format!("{key}=hunter2")).unwrap();
            let shown = format!("{p:?}");
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains(REDACTED));
        }
        let p = KafkaProperty::parse("sasl.username=alice").unwrap();
        assert!(format!("{p:?}").contains("alice"));
    }

    #[test]
    fn environment_properties_map_underscores_to_dots() {
        let props = kafka_properties_from_env([
            (
                "STREAMFLEET_KAFKA_SASL_PASSWORD".to_owned(),
                "s3cret".to_owned(),
            ),
            (
                "STREAMFLEET_KAFKA_PRODUCER_LINGER_MS".to_owned(),
                "10".to_owned(),
            ),
            ("PATH".to_owned(), "/bin".to_owned()),
            (
                "STREAMFLEET_KAFKA_DIST".to_owned(),
                "../shared/kafka".to_owned(),
            ),
        ])
        .unwrap();
        assert_eq!(props.len(), 2);
        assert_eq!(props[0].key, "linger.ms");
        assert_eq!(props[0].scope, ClientScope::Producer);
        assert_eq!(
            (props[1].key.as_str(), props[1].value.as_str()),
            ("sasl.password", "s3cret")
        );
    }
}
