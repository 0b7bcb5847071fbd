//! Decoded versions kept in memory by the Flight SQL server.
//!
//! Reading a version means decompressing (zstd) and decoding its Parquet objects: most of the
//! server's CPU on a large DoGet. Versions are immutable and named by content hash, so a
//! decoded copy is never stale. The first query of a version reads Parquet and starts a
//! background load of the whole version; once it is in, queries of that version run over
//! memory. Least recently used versions are evicted to stay within the configured bytes
//! (`flight.cache_mb`; 0 turns the cache off); a version larger than that is never cached.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use arrow::array::RecordBatch;
use datafusion::prelude::SessionConfig;
use futures::TryStreamExt;

use stream::query::{plain_strings, session_context, version_table};
use stream::store::{Manifest, SnapshotStore};

/// Decoded versions by id, least recently used evicted first.
#[derive(Debug)]
pub struct VersionCache {
    capacity: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    entries: HashMap<String, Entry>,
    loading: HashSet<String>,
    used: usize,
    clock: u64,
}

#[derive(Debug)]
struct Entry {
    batches: Arc<Vec<RecordBatch>>,
    bytes: usize,
    last_used: u64,
}

impl VersionCache {
    /// A cache of at most `capacity` bytes of Arrow buffers.
    pub fn new(capacity: usize) -> VersionCache {
        VersionCache { capacity, state: Mutex::default() }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The batches of version `id`, if it is in.
    pub fn get(&self, id: &str) -> Option<Arc<Vec<RecordBatch>>> {
        let mut state = self.state();
        state.clock += 1;
        let now = state.clock;
        let entry = state.entries.get_mut(id)?;
        entry.last_used = now;
        Some(entry.batches.clone())
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.state().used
    }

    /// Starts loading `m` on the runtime unless it is in, being loaded, or the cache is off.
    pub fn load_in_background(self: &Arc<Self>, store: &SnapshotStore, m: &Manifest) {
        if self.capacity == 0 || m.rows == 0 {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        {
            let mut state = self.state();
            if state.entries.contains_key(&m.id) || !state.loading.insert(m.id.clone()) {
                return;
            }
        }
        let (cache, store, m) = (self.clone(), store.clone(), m.clone());
        runtime.spawn(async move {
            let started = std::time::Instant::now();
            match cache.read(&store, &m).await {
                Ok(Some((batches, bytes))) => {
                    cache.insert(&m.id, batches, bytes);
                    tracing::info!(
                        version = m.id,
                        bytes,
                        secs = started.elapsed().as_secs_f64(),
                        "version cached"
                    );
                }
                Ok(None) => {
                    tracing::info!(version = m.id, capacity = cache.capacity, "version larger than the cache")
                }
                Err(e) => tracing::warn!(version = m.id, error = %e, "cannot cache version"),
            }
            cache.state().loading.remove(&m.id);
        });
    }

    /// The whole version, or `None` once it outgrows the cache.
    async fn read(
        &self,
        store: &SnapshotStore,
        m: &Manifest,
    ) -> datafusion::error::Result<Option<(Vec<RecordBatch>, usize)>> {
        // One partition: the load takes one core, beside the queries.
        let ctx = session_context(store, plain_strings(SessionConfig::new().with_target_partitions(1)));
        let mut stream = ctx.read_table(version_table(store, m)?)?.execute_stream().await?;
        let (mut batches, mut bytes) = (Vec::new(), 0);
        while let Some(batch) = stream.try_next().await? {
            bytes += batch.get_array_memory_size();
            if bytes > self.capacity {
                return Ok(None);
            }
            batches.push(batch);
        }
        Ok(Some((batches, bytes)))
    }

    fn insert(&self, id: &str, batches: Vec<RecordBatch>, bytes: usize) {
        if bytes > self.capacity {
            return;
        }
        let mut state = self.state();
        while state.used + bytes > self.capacity {
            let Some(oldest) = state.entries.iter().min_by_key(|(_, e)| e.last_used).map(|(k, _)| k.clone())
            else {
                return;
            };
            if let Some(evicted) = state.entries.remove(&oldest) {
                state.used -= evicted.bytes;
                tracing::info!(version = oldest, bytes = evicted.bytes, "version evicted from the cache");
            }
        }
        state.clock += 1;
        let last_used = state.clock;
        state.used += bytes;
        state.entries.insert(id.to_string(), Entry { batches: Arc::new(batches), bytes, last_used });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Int64Array};

    use super::*;

    fn batch(rows: i64) -> (Vec<RecordBatch>, usize) {
        let b =
            RecordBatch::try_from_iter([("n", Arc::new(Int64Array::from_iter_values(0..rows)) as ArrayRef)])
                .unwrap();
        let bytes = b.get_array_memory_size();
        (vec![b], bytes)
    }

    #[test]
    fn least_recently_used_versions_leave_first_and_the_total_stays_within_capacity() {
        let (one, size) = batch(1000);
        let cache = VersionCache::new(size * 2 + size / 2);
        cache.insert("a", one.clone(), size);
        cache.insert("b", one.clone(), size);
        assert!(cache.get("a").is_some(), "a is used after b");
        cache.insert("c", one.clone(), size);
        assert!(cache.get("b").is_none(), "b was the least recently used");
        assert!(cache.get("a").is_some() && cache.get("c").is_some());
        assert_eq!(cache.used(), size * 2);

        let (big, big_size) = batch(10_000);
        cache.insert("big", big, big_size);
        assert!(cache.get("big").is_none(), "larger than the whole cache");
        assert!(cache.get("a").is_some() && cache.get("c").is_some(), "and evicts nothing");
    }
}
