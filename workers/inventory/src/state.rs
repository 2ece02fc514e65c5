//! The inventory state: per hotel its free rooms, the rooms held per booking, and which
//! commands were applied (to drop replays), each a small entry of the partition's changelog.
//!
//! | key                                  | value                     | forgotten            |
//! |--------------------------------------|---------------------------|----------------------|
//! | `h` NUL hotel                        | rooms free                | never                |
//! | `b` NUL hotel NUL booking            | rooms held for the booking| when released        |
//! | `s` NUL hotel NUL kind NUL id        | when the command applied  | `retention` later    |
//!
//! A command changes one to three small entries, so a busy hotel costs the same per command
//! as a quiet one. (Until this version a hotel was one JSON entry holding all its holds and
//! every command id it had seen, rewritten whole on every command and never shrinking.)
//!
//! Upgrading from that format: a restore reads an old whole-hotel entry (a key without a
//! prefix) into the entries above, and the hotel's next command rewrites them in the new form
//! and deletes the old entry, so a changelog converts itself hotel by hotel. Commands an old
//! entry marked as applied are remembered for `retention` from the restore.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use streamfleet_runtime::store::{Change, KeyValueStore, RestoreError, StateStore, StoredValue};
use streamfleet_schemas::InventoryEventType;

/// The default retention of an applied command's marker: `inventory-events`' 7 days.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 86_400);

/// One entry of the inventory state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Entry {
    /// A hotel's free rooms.
    Hotel {
        /// Rooms free.
        available: i64,
    },
    /// Rooms held for a booking.
    Hold {
        /// Rooms.
        quantity: i32,
    },
    /// A command applied at `at` (record time), forgotten from `until`.
    Seen {
        /// Record time of the command.
        at: i64,
        /// Stream time from which it is forgotten.
        until: i64,
    },
}

impl StoredValue for Entry {
    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an entry serialises")
    }

    fn decode(bytes: &[u8]) -> Result<Self, RestoreError> {
        serde_json::from_slice(bytes).map_err(|e| RestoreError(format!("inventory entry: {e}")))
    }

    fn expires_at(&self) -> Option<i64> {
        match self {
            Entry::Seen { until, .. } => Some(*until),
            _ => None,
        }
    }
}

/// Stock and holds of one hotel, in the format of the changelog before this version (and the
/// shape the tests' model keeps).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HotelStock {
    /// Rooms free.
    pub available: i64,
    /// Rooms held per booking.
    pub held: HashMap<String, i32>,
    /// Bookings whose RESERVE was applied (held or rejected): a second one is a replay.
    pub reserves: HashSet<String>,
    /// Bookings whose RELEASE was applied (released or rejected): a second one is a replay.
    pub releases: HashSet<String>,
    /// Restock event ids applied.
    pub restocks: HashSet<String>,
}

fn kind_name(kind: InventoryEventType) -> &'static str {
    match kind {
        InventoryEventType::Restock => "restock",
        InventoryEventType::Reserve => "reserve",
        InventoryEventType::Release => "release",
    }
}

fn hotel_key(hotel: &str) -> Vec<u8> {
    [b"h\0", hotel.as_bytes()].concat()
}

fn hold_key(hotel: &str, booking: &str) -> Vec<u8> {
    [b"b\0", hotel.as_bytes(), b"\0", booking.as_bytes()].concat()
}

fn seen_key(hotel: &str, kind: InventoryEventType, id: &str) -> Vec<u8> {
    [
        b"s\0",
        hotel.as_bytes(),
        b"\0",
        kind_name(kind).as_bytes(),
        b"\0",
        id.as_bytes(),
    ]
    .concat()
}

/// The hotel an entry key belongs to.
fn hotel_of(key: &[u8]) -> Option<&[u8]> {
    let rest = key.get(2..).filter(|_| key.get(1) == Some(&0))?;
    Some(match rest.iter().position(|b| *b == 0) {
        Some(end) => &rest[..end],
        None => rest,
    })
}

/// What a command asks of the state: everything [`crate::InventoryProcessor::effect`] reads.
pub trait StockView {
    /// Rooms free.
    fn available(&self) -> i64;
    /// Rooms held for a booking.
    fn held(&self, booking: &str) -> Option<i32>;
    /// Whether a command of `kind` for `id` (booking or restock event) was applied.
    fn seen(&self, kind: InventoryEventType, id: &str) -> bool;
}

impl StockView for HotelStock {
    fn available(&self) -> i64 {
        self.available
    }
    fn held(&self, booking: &str) -> Option<i32> {
        self.held.get(booking).copied()
    }
    fn seen(&self, kind: InventoryEventType, id: &str) -> bool {
        match kind {
            InventoryEventType::Restock => self.restocks.contains(id),
            InventoryEventType::Reserve => self.reserves.contains(id),
            InventoryEventType::Release => self.releases.contains(id),
        }
    }
}

/// Stock of every hotel of a partition.
pub struct InventoryState {
    store: KeyValueStore<Entry>,
    retention_ms: i64,
    /// Hotels still in the old whole-hotel format in the changelog.
    legacy: HashSet<String>,
}

impl Default for InventoryState {
    fn default() -> Self {
        Self::with_retention(DEFAULT_RETENTION)
    }
}

impl std::fmt::Debug for InventoryState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InventoryState")
            .field("entries", &self.store.len())
            .finish_non_exhaustive()
    }
}

/// One hotel of an [`InventoryState`], as a command sees it.
pub struct Hotel<'a> {
    state: &'a InventoryState,
    hotel: &'a str,
}

impl StockView for Hotel<'_> {
    fn available(&self) -> i64 {
        match self.state.store.get(&hotel_key(self.hotel)) {
            Some(Entry::Hotel { available }) => *available,
            _ => 0,
        }
    }
    fn held(&self, booking: &str) -> Option<i32> {
        match self.state.store.get(&hold_key(self.hotel, booking)) {
            Some(Entry::Hold { quantity }) => Some(*quantity),
            _ => None,
        }
    }
    fn seen(&self, kind: InventoryEventType, id: &str) -> bool {
        self.state.store.contains(&seen_key(self.hotel, kind, id))
    }
}

impl InventoryState {
    /// An empty state that remembers an applied command for `retention`.
    pub fn with_retention(retention: Duration) -> Self {
        Self {
            store: KeyValueStore::default(),
            retention_ms: retention.as_millis().min(i64::MAX as u128 / 2) as i64,
            legacy: HashSet::new(),
        }
    }

    /// One hotel, to read.
    pub fn hotel<'a>(&'a self, hotel: &'a str) -> Hotel<'a> {
        Hotel { state: self, hotel }
    }

    /// A hotel's rooms free (0 for a hotel never restocked).
    pub fn available(&self, hotel: &str) -> i64 {
        self.hotel(hotel).available()
    }

    /// Records a command of `kind` for `id` applied at `at` to `hotel`, leaving `available`
    /// rooms free and, for a reserve, `hold` rooms held (`None`: rejected, or no hold).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn apply(
        &mut self,
        hotel: &str,
        kind: InventoryEventType,
        id: &str,
        at: i64,
        available: i64,
        hold: Option<i32>,
    ) {
        self.rewrite_legacy(hotel);
        self.store
            .put(&hotel_key(hotel), Entry::Hotel { available });
        match (kind, hold) {
            (InventoryEventType::Reserve, Some(quantity)) => {
                self.store
                    .put(&hold_key(hotel, id), Entry::Hold { quantity });
            }
            (InventoryEventType::Release, _) => self.store.delete(&hold_key(hotel, id)),
            _ => {}
        }
        self.store.put(
            &seen_key(hotel, kind, id),
            Entry::Seen {
                at,
                until: at.saturating_add(self.retention_ms),
            },
        );
    }

    /// The first change of a hotel restored from the old format: its entries go to the
    /// changelog in the new form and the old entry is deleted.
    fn rewrite_legacy(&mut self, hotel: &str) {
        if !self.legacy.remove(hotel) {
            return;
        }
        let keys: Vec<Vec<u8>> = self
            .store
            .iter()
            .filter(|(k, _)| hotel_of(k) == Some(hotel.as_bytes()))
            .map(|(k, _)| k.to_vec())
            .collect();
        for key in keys {
            self.store.touch(&key);
        }
        self.store.delete(hotel.as_bytes());
    }

    /// Reads an old whole-hotel entry into the new entries (not written back until the hotel
    /// changes).
    fn restore_legacy(&mut self, hotel: &str, value: Option<&[u8]>) -> Result<(), RestoreError> {
        let Some(bytes) = value else {
            return Ok(());
        };
        let stock: HotelStock = serde_json::from_slice(bytes)
            .map_err(|e| RestoreError(format!("stock of {hotel} (old format): {e}")))?;
        let at = streamfleet_runtime::now_ms();
        let until = at.saturating_add(self.retention_ms);
        let mut put = |key: Vec<u8>, entry: Entry| self.store.restore(&key, Some(&entry.encode()));
        put(
            hotel_key(hotel),
            Entry::Hotel {
                available: stock.available,
            },
        )?;
        for (booking, quantity) in &stock.held {
            put(
                hold_key(hotel, booking),
                Entry::Hold {
                    quantity: *quantity,
                },
            )?;
        }
        for (kind, ids) in [
            (InventoryEventType::Restock, &stock.restocks),
            (InventoryEventType::Reserve, &stock.reserves),
            (InventoryEventType::Release, &stock.releases),
        ] {
            for id in ids {
                put(seen_key(hotel, kind, id), Entry::Seen { at, until })?;
            }
        }
        self.legacy.insert(hotel.to_owned());
        Ok(())
    }
}

impl StateStore for InventoryState {
    fn restore(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), RestoreError> {
        if hotel_of(key).is_some() {
            return self.store.restore(key, value);
        }
        let hotel = std::str::from_utf8(key)
            .map_err(|e| RestoreError(format!("hotel id is not UTF-8: {e}")))?;
        self.restore_legacy(hotel, value)
    }

    fn drain_changes(&mut self, out: &mut Vec<Change>) {
        self.store.drain_changes(out);
    }

    fn expire(&mut self, now_ms: i64) {
        self.store.expire(now_ms);
    }

    fn entries(&self) -> usize {
        self.store.len()
    }
}
