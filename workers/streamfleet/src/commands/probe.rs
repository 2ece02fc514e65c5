//! `streamfleet probe`: the health check of the container image, which has no curl or wget.
//! One GET; the exit code says whether the answer was 2xx, and the body (the worker's health
//! report) is printed so `docker inspect` shows why a check failed.

use std::time::Duration;

use crate::cli::ProbeArgs;

/// Runs the probe; exit 0 on 2xx, 1 on any other status or no answer.
pub async fn run(args: ProbeArgs) -> anyhow::Result<i32> {
    tokio::task::spawn_blocking(move || Ok(probe(&args.url, args.timeout))).await?
}

fn probe(url: &str, timeout: Duration) -> i32 {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .build()
        .into();
    match agent.get(url).call() {
        Ok(mut resp) => {
            let status = resp.status();
            let body = resp.body_mut().read_to_string().unwrap_or_default();
            println!("{} {}", status.as_u16(), body.trim());
            if status.is_success() { 0 } else { 1 }
        }
        Err(e) => {
            eprintln!("probe {url}: {e}");
            1
        }
    }
}
