//! Request bodies read under a clock: a client that stops sending, or sends so slowly that
//! it holds a connection (and, for uploads, a staging folder) for minutes, is answered 408
//! instead of being waited for. One guard serves JSON bodies and multipart uploads.

use super::errors::ApiError;
use actix_web::error::PayloadError;
use actix_web::web::{Bytes, Payload};
use futures_util::{Stream, StreamExt};
use serde::de::DeserializeOwned;
use std::time::{Duration, Instant};

/// How slowly a body may arrive.
#[derive(Debug, Clone, Copy)]
pub struct BodyTimeouts {
    /// Longest wait for the next chunk of the body.
    pub idle: Duration,
    /// Time a body gets before its average rate is checked (small bodies finish within it).
    pub grace: Duration,
    /// Slowest average rate accepted after `grace`.
    pub min_bytes_per_second: u64,
}

impl Default for BodyTimeouts {
    fn default() -> Self {
        Self {
            idle: Duration::from_secs(10),
            grace: Duration::from_secs(10),
            min_bytes_per_second: 8 << 10,
        }
    }
}

impl BodyTimeouts {
    /// Why a body that has delivered `received` bytes since `started` is too slow, if it is.
    fn too_slow(&self, started: Instant, received: usize) -> Option<String> {
        let elapsed = started.elapsed();
        if elapsed <= self.grace {
            return None;
        }
        let rate = received as f64 / elapsed.as_secs_f64();
        (rate < self.min_bytes_per_second as f64).then(|| {
            format!(
                "the request body arrived at {rate:.0} bytes/s; the server needs at least {} \
                 bytes/s after the first {} s",
                self.min_bytes_per_second,
                self.grace.as_secs()
            )
        })
    }
}

/// Marks a payload error as the guard's timeout, so callers can answer 408 for it.
const TIMED_OUT: std::io::ErrorKind = std::io::ErrorKind::TimedOut;

/// `payload` that fails with a timed-out I/O error when the next chunk does not come
/// within `idle`, or the average rate falls under the minimum after the grace period.
pub fn guarded(
    payload: Payload,
    timeouts: BodyTimeouts,
) -> impl Stream<Item = Result<Bytes, PayloadError>> + 'static {
    let start = (Some(payload), Instant::now(), 0usize);
    futures_util::stream::unfold(start, move |(payload, started, received)| async move {
        // `None` once the guard failed the body: the stream ends after its error.
        let mut payload = payload?;
        let timed_out = |why: String| {
            let err = PayloadError::Io(std::io::Error::new(TIMED_OUT, why));
            Some((Err(err), (None, started, received)))
        };
        let next = match tokio::time::timeout(timeouts.idle, payload.next()).await {
            Ok(next) => next?,
            Err(_) => {
                return timed_out(format!(
                    "no part of the request body arrived for {} s",
                    timeouts.idle.as_secs()
                ))
            }
        };
        let received = received + next.as_ref().map_or(0, Bytes::len);
        if let Some(why) = timeouts.too_slow(started, received) {
            return timed_out(why);
        }
        Some((next, (Some(payload), started, received)))
    })
    // Multipart polls its stream again after the end: a fused stream keeps answering `None`.
    .fuse()
}

/// The request error a payload error means: the guard's timeout is 408, the rest 400.
pub fn payload_error(e: &PayloadError) -> ApiError {
    match e {
        PayloadError::Io(io) if io.kind() == TIMED_OUT => ApiError::Timeout(io.to_string()),
        other => ApiError::InvalidRequest(format!("reading the request body: {other}")),
    }
}

/// Reads a whole JSON body of at most `limit` bytes under `timeouts` and parses it.
pub async fn read_json<T: DeserializeOwned>(
    payload: Payload,
    limit: usize,
    timeouts: BodyTimeouts,
) -> Result<T, ApiError> {
    let mut body = Vec::new();
    let mut chunks = std::pin::pin!(guarded(payload, timeouts));
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|e| payload_error(&e))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::TooLarge(format!(
                "the body exceeds {limit} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::InvalidRequest(format!("invalid JSON body: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_is_checked_only_after_the_grace_period() {
        let t = BodyTimeouts {
            idle: Duration::from_secs(5),
            grace: Duration::from_millis(50),
            min_bytes_per_second: 1000,
        };
        let now = Instant::now();
        assert!(t.too_slow(now, 0).is_none(), "within the grace period");
        let long_ago = now - Duration::from_secs(2);
        let why = t
            .too_slow(long_ago, 10)
            .expect("10 bytes in 2 s is too slow");
        assert!(why.contains("bytes/s"), "{why}");
        assert!(
            t.too_slow(long_ago, 10_000).is_none(),
            "5000 bytes/s is fine"
        );
    }
}
