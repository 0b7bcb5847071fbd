//! `GET /v1/dead-letters`: what the pipeline refused — the newest records of the dead-letter
//! topic with their reason, detail and source, and their counts by reason and hour.

use axum::Json;
use axum::extract::{Query, State};
use serde::Serialize;
use std::collections::BTreeMap;
use utoipa::ToSchema;

use super::query::{query_number, single};
use super::response::ErrorBody;
use super::state::AppState;
use crate::{Error, Result};

/// Dead letters read per partition for the counts.
pub const SCAN_PER_PARTITION: usize = 2000;
/// Bytes of a dead letter's value shown.
const PREVIEW_BYTES: usize = 2048;

/// One dead letter.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterView {
    pub partition: i32,
    pub offset: i64,
    /// When it was sent to the dead-letter topic.
    pub at: Option<chrono::DateTime<chrono::Utc>>,
    /// The reason code (`invalid_json`, `missing_text`, ...).
    pub reason: String,
    pub detail: String,
    /// Where the record was read: `topic[partition]@offset`.
    pub source: String,
    /// The record's value as text (invalid UTF-8 replaced), at most 2 KB.
    pub value: String,
    pub value_bytes: usize,
}

/// Dead letters counted in one hour, by reason.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadHour {
    pub hour: chrono::DateTime<chrono::Utc>,
    pub by_reason: BTreeMap<String, u64>,
}

/// The newest dead letters and their counts.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLettersPage {
    pub topic: String,
    /// Dead letters read (the newest `scanned_per_partition` of each partition).
    pub scanned: usize,
    pub scanned_per_partition: usize,
    pub by_reason: BTreeMap<String, u64>,
    /// Oldest hour first.
    pub by_hour: Vec<DeadHour>,
    /// The newest `limit`, newest first.
    pub latest: Vec<DeadLetterView>,
}

/// The newest dead letters (default 20, up to 200) with reason, detail, source and value, and
/// the counts by reason and by hour over the newest 2,000 of each partition.
#[utoipa::path(get, path = "/v1/dead-letters", tag = "data",
    params(("limit" = Option<u32>, Query, description = "dead letters listed, 1 to 200 (default 20)", minimum = 1, maximum = 200)),
    security(("oauth2" = ["viewer"])),
    responses((status = 200, body = DeadLettersPage), (status = 400, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn dead_letters(
    State(state): State<AppState>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Json<DeadLettersPage>> {
    let limit = query_number("limit", single(&pairs, "limit")?.as_deref(), 1..=200, 20)?;
    let Some((kafka, topic)) = state.dead_letters.clone() else {
        return Err(Error::Unready("this server reads no Kafka broker".into()));
    };
    let t = topic.clone();
    let records = tokio::task::spawn_blocking(move || {
        ingest::consume::tail(&kafka, &t, SCAN_PER_PARTITION, std::time::Duration::from_secs(10))
    })
    .await
    .map_err(|e| Error::Internal(format!("dead-letter reader failed: {e}")))?
    .map_err(|e| Error::Unready(format!("reading {topic}: {e}")))?;
    use schemas::records::dead_letter_header as hdr;
    let header = |r: &ingest::consume::TailRecord, k: &str| r.headers.get(k).cloned().unwrap_or_default();
    let mut by_reason = BTreeMap::new();
    let mut by_hour: BTreeMap<i64, BTreeMap<String, u64>> = BTreeMap::new();
    for r in &records {
        let reason = header(r, hdr::REASON);
        *by_reason.entry(reason.clone()).or_insert(0) += 1;
        if let Some(ms) = r.timestamp_ms {
            *by_hour.entry(ms.div_euclid(3_600_000)).or_default().entry(reason).or_insert(0) += 1;
        }
    }
    let mut newest: Vec<&ingest::consume::TailRecord> = records.iter().collect();
    newest.sort_by_key(|r| std::cmp::Reverse((r.timestamp_ms, r.offset)));
    let latest = newest
        .into_iter()
        .take(limit)
        .map(|r| {
            let cut = &r.value[..r.value.len().min(PREVIEW_BYTES)];
            DeadLetterView {
                partition: r.partition,
                offset: r.offset,
                at: r.timestamp_ms.and_then(chrono::DateTime::from_timestamp_millis),
                reason: header(r, hdr::REASON),
                detail: header(r, hdr::DETAIL),
                source: format!(
                    "{}[{}]@{}",
                    header(r, hdr::SOURCE_TOPIC),
                    header(r, hdr::SOURCE_PARTITION),
                    header(r, hdr::SOURCE_OFFSET)
                ),
                value: String::from_utf8_lossy(cut).into_owned(),
                value_bytes: r.value.len(),
            }
        })
        .collect();
    let by_hour = by_hour
        .into_iter()
        .filter_map(|(h, by_reason)| {
            Some(DeadHour { hour: chrono::DateTime::from_timestamp(h * 3600, 0)?, by_reason })
        })
        .collect();
    Ok(Json(DeadLettersPage {
        topic,
        scanned: records.len(),
        scanned_per_partition: SCAN_PER_PARTITION,
        by_reason,
        by_hour,
        latest,
    }))
}
