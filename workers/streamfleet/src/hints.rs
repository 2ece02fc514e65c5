//! Plain words for the librdkafka errors a user of the command line meets, with what to do.
//! The error itself is printed as it is; the hint follows it.

use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

/// What a Kafka error code means for someone running a command, and what to check.
pub fn for_code(code: RDKafkaErrorCode) -> Option<&'static str> {
    use RDKafkaErrorCode::*;
    Some(match code {
        BrokerTransportFailure | AllBrokersDown => {
            "the broker closed or refused the connection: is it running, and is --brokers its \
             listener (with -X security.protocol=... when it needs TLS or SASL)?"
        }
        Resolve => "a broker's host name does not resolve: check --brokers and DNS",
        UnknownTopicOrPartition | UnknownTopic => {
            "the topic does not exist: create it with `streamfleet topics apply`, or check its name"
        }
        UnknownPartition => "the topic has fewer partitions than asked for",
        TopicAuthorizationFailed => {
            "the cluster does not allow this user to use the topic: an ACL is missing"
        }
        GroupAuthorizationFailed => {
            "the cluster does not allow this user to use the consumer group: an ACL is missing"
        }
        ClusterAuthorizationFailed | TransactionalIdAuthorizationFailed => {
            "the cluster does not allow this user the operation: an ACL is missing"
        }
        SaslAuthenticationFailed | Authentication => {
            "the broker rejected the credentials: check -X sasl.username / sasl.password and the \
             SASL mechanism"
        }
        SSL => "the TLS handshake failed: check -X ssl.ca.location and the broker's certificate",
        MessageSizeTooLarge => {
            "a record is larger than the topic's max.message.bytes (or the producer's \
             message.max.bytes)"
        }
        NotEnoughReplicas | NotEnoughReplicasAfterAppend => {
            "fewer in-sync replicas than the topic's min.insync.replicas: a broker is down"
        }
        PolicyViolation => "the cluster's topic policy refused the change",
        InvalidReplicationFactor => {
            "more replicas than brokers: lower replication_factor or pass --cap-replication"
        }
        OperationTimedOut | RequestTimedOut => {
            "the cluster did not answer in time: is it overloaded, or a listener of another cluster?"
        }
        _ => return None,
    })
}

/// The hint for the first Kafka error in `error`'s chain, if it has one.
pub fn for_error(error: &anyhow::Error) -> Option<&'static str> {
    error
        .chain()
        .filter_map(|e| e.downcast_ref::<KafkaError>())
        .find_map(|e| {
            let code = match e {
                KafkaError::AdminOp(code) => Some(*code),
                e => e.rdkafka_error_code(),
            };
            code.and_then(for_code)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_topic_says_how_to_create_it() {
        let e = anyhow::Error::new(KafkaError::MetadataFetch(
            RDKafkaErrorCode::UnknownTopicOrPartition,
        ))
        .context("reading the topic");
        assert!(for_error(&e).unwrap().contains("streamfleet topics apply"));
        let other = anyhow::anyhow!("not a Kafka error");
        assert_eq!(for_error(&other), None);
    }
}
