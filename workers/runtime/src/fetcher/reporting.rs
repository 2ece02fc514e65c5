//! Reporting: the lag, retry-backlog, buffer and state gauges, published once a second from
//! the fetch loop.

use super::*;

/// One source topic's state, summed over its assigned partitions (see `publish_state`).
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct StateTotals {
    pub(super) entries: i64,
    pub(super) keys: i64,
    pub(super) records: i64,
    /// Since when (epoch ms) the longest-waiting key has waited.
    pub(super) oldest_since: Option<i64>,
}

impl<P: Processor> FetchContext<P> {
    /// Publishes the lag gauges (called once a second from the fetch loop).
    pub(super) fn publish_progress(&self) {
        let published = self.progress.publish(crate::lane::now_ms(), |tp| {
            self.lanes
                .get(tp)
                .map(|l| l.shared.committable.load(Ordering::Acquire))
                .filter(|c| *c >= 0)
        });
        for topic in self.lane_ctx.router.subscription() {
            let max = published.max_lag.get(topic.as_str()).copied().unwrap_or(0);
            self.metrics
                .set_lag_max(&self.worker, &self.group, &topic, max);
            if self.lane_ctx.router.is_rung(&topic) {
                let backlog = published
                    .topic_lag
                    .get(topic.as_str())
                    .copied()
                    .unwrap_or(0);
                self.metrics
                    .set_retry_backlog(&self.worker, &topic, backlog);
            }
        }
        self.publish_state();
        self.stats.lag.store(published.total_lag, Ordering::Relaxed);
        self.metrics.set_buffered_bytes(
            &self.worker,
            self.stats.buffered_bytes.load(Ordering::Relaxed),
        );
    }

    /// Publishes the state gauges per source topic: entries held, keys waiting in order,
    /// records parked behind them, and how long the longest-waiting key has waited. A state
    /// locked right now by its lane is read at the next publish.
    pub(super) fn publish_state(&self) {
        let now = crate::lane::now_ms();
        let mut totals: HashMap<Arc<str>, StateTotals, FastHash> = HashMap::default();
        for entry in self.states.iter() {
            let Ok(state) = entry.value().state.try_lock() else {
                continue;
            };
            let t = totals.entry(entry.key().topic.clone()).or_default();
            t.entries += state.store.entries() as i64;
            t.keys += state.order.waiting_keys() as i64;
            t.records += state.order.parked_records() as i64;
            t.oldest_since = match (t.oldest_since, state.order.oldest_since()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        let m = &self.metrics.state;
        for (source, _) in self.lane_ctx.router.sources() {
            let t = totals.get(source.as_str()).copied().unwrap_or_default();
            let labels = [self.worker.as_str(), source.as_str()];
            m.entries.with_label_values(&labels).set(t.entries);
            m.keys_waiting.with_label_values(&labels).set(t.keys);
            m.records_waiting.with_label_values(&labels).set(t.records);
            m.oldest_wait.with_label_values(&labels).set(
                t.oldest_since
                    .map_or(0.0, |since| (now - since).max(0) as f64 / 1000.0),
            );
        }
    }

    /// Bytes held by the stashes and the lanes (queued, in processing, awaiting acks).
    pub(super) fn buffered_bytes(&self) -> usize {
        let stashed: usize = self
            .stash
            .lock()
            .expect("stash lock")
            .values()
            .map(|s| s.bytes)
            .sum();
        let held: usize = self
            .lanes
            .iter()
            .map(|l| l.shared.held_bytes.load(Ordering::Relaxed))
            .sum();
        stashed + held
    }
}
