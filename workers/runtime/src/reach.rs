//! Whether a cluster's bootstrap servers answer at all, checked before a command talks to
//! Kafka.
//!
//! librdkafka retries an unreachable broker until a request's own timeout (30 s and more for
//! metadata and admin calls) and then reports a bare `BrokerTransportFailure`, the same for
//! a refused connection and a name that does not resolve. A command that needs a cluster
//! first resolves each bootstrap address and opens a TCP connection to it, and when none
//! answers within `--connect-timeout` says which address failed how and what to check.
//! A connection is enough: TLS, SASL and Kafka itself are librdkafka's to report.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// No bootstrap server answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "no Kafka broker answered within {}s at {brokers}:\n{}\nCheck that the cluster is running and \
     that --brokers (STREAMFLEET_BROKERS) names a listener this machine can reach; raise \
     --connect-timeout (STREAMFLEET_CONNECT_TIMEOUT) on a slow network.",
    timeout.as_secs_f64(),
    attempts.iter().map(|a| format!("  {a}")).collect::<Vec<_>>().join("\n")
)]
pub struct Unreachable {
    /// The bootstrap servers as given.
    pub brokers: String,
    /// The time allowed.
    pub timeout: Duration,
    /// What happened with each address.
    pub attempts: Vec<String>,
}

/// Returns once one of `brokers` (comma-separated `host:port`) accepts a TCP connection;
/// an error naming every address and its failure when none does within `timeout`.
pub fn check(brokers: &str, timeout: Duration) -> Result<(), Unreachable> {
    let deadline = Instant::now() + timeout;
    let servers: Vec<String> = brokers
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    // Each server is tried on a thread of its own: a name lookup cannot be given a timeout,
    // and one slow server must not hide another that answers.
    let (tx, rx) = mpsc::channel();
    for server in servers.clone() {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let outcome = try_server(&server, deadline);
            let _ = tx.send((server, outcome));
        });
    }
    drop(tx);
    let mut attempts: Vec<(String, String)> = Vec::new();
    while let Ok((server, outcome)) =
        rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
    {
        match outcome {
            Ok(()) => return Ok(()),
            Err(why) => attempts.push((server, why)),
        }
    }
    for server in &servers {
        if !attempts.iter().any(|(s, _)| s == server) {
            attempts.push((
                server.clone(),
                "no answer (still resolving or connecting)".into(),
            ));
        }
    }
    Err(Unreachable {
        brokers: brokers.to_owned(),
        timeout,
        attempts: attempts
            .into_iter()
            .map(|(s, why)| format!("{s}: {why}"))
            .collect(),
    })
}

fn try_server(server: &str, deadline: Instant) -> Result<(), String> {
    let addrs: Vec<SocketAddr> = match server.to_socket_addrs() {
        Ok(a) => a.collect(),
        Err(e) if !server.contains(':') => return Err(format!("not host:port ({e})")),
        Err(e) => return Err(format!("does not resolve ({e})")),
    };
    let mut failures = Vec::new();
    for addr in &addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            failures.push(format!("{addr}: timed out"));
            break;
        }
        match TcpStream::connect_timeout(addr, left) {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => failures.push(format!(
                "{addr}: connection refused (nothing listens there)"
            )),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                failures.push(format!("{addr}: timed out (a firewall, or no such host)"))
            }
            Err(e) => failures.push(format!("{addr}: {e}")),
        }
    }
    if failures.is_empty() {
        return Err("resolves to no address".into());
    }
    Err(format!("resolves, but {}", failures.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listening_server_is_reachable() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        check(
            &format!("127.0.0.1:1,127.0.0.1:{port}"),
            Duration::from_secs(5),
        )
        .expect("one server answers");
    }

    #[test]
    fn every_failure_is_named_with_its_cause() {
        let started = Instant::now();
        let err = check(
            "127.0.0.1:1,nosuchhost.invalid:9092,justahost",
            Duration::from_secs(5),
        )
        .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(6));
        let text = err.to_string();
        assert!(
            text.contains("127.0.0.1:1: resolves, but 127.0.0.1:1: connection refused"),
            "{text}"
        );
        assert!(
            text.contains("nosuchhost.invalid:9092: does not resolve"),
            "{text}"
        );
        assert!(text.contains("justahost: not host:port"), "{text}");
        assert!(text.contains("--connect-timeout"), "{text}");
    }
}
