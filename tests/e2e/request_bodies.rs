//! Request bodies over a real socket: a body sent a byte at a time, or not at all after the
//! headers, is answered 408 within the configured clock (before, it held the connection
//! forever); adapter uploads beyond the concurrent bound are answered 429 with
//! `Retry-After`, and a stalled upload leaves no staging folder behind.

use super::server::{base, default_embedder, state};
use actix_web::App;
use loramux::server::{configure, BodyTimeouts, Limits, RegistryCatalog, ServerState};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const TIMEOUTS: BodyTimeouts = BodyTimeouts {
    idle: Duration::from_millis(1500),
    grace: Duration::from_millis(300),
    min_bytes_per_second: 1000,
};

/// Serves `state` on a free loopback port until the test's runtime ends.
fn serve(state: ServerState) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let state = Arc::new(state);
    let server = actix_web::HttpServer::new(move || App::new().configure(configure(state.clone())))
        .workers(1)
        .listen(listener)
        .expect("listen")
        .run();
    actix_web::rt::spawn(server);
    addr
}

/// Sends `head` then `body`, `bytes_per_tick` every `tick`, and keeps the connection open
/// until the server answers: the answer (status line and headers, lowercased) and how long
/// it took.
fn send_slowly(
    addr: SocketAddr,
    head: String,
    body: Vec<u8>,
    bytes_per_tick: usize,
    tick: Duration,
) -> (String, Duration) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    let started = Instant::now();
    stream.write_all(head.as_bytes()).expect("head");
    let writer = {
        let mut stream = stream.try_clone().expect("clone");
        std::thread::spawn(move || {
            for (i, piece) in body.chunks(bytes_per_tick.max(1)).enumerate() {
                if i > 0 {
                    std::thread::sleep(tick);
                }
                // The server may answer (and close) before the body is done.
                if stream.write_all(piece).is_err() {
                    return;
                }
            }
        })
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
    let took = started.elapsed();
    drop(stream);
    let _ = writer.join();
    (String::from_utf8_lossy(&answer).to_lowercase(), took)
}

fn chat_head(content_length: usize) -> String {
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: localhost\r\n\
         content-type: application/json\r\ncontent-length: {content_length}\r\n\r\n"
    )
}

fn with_limits(uploads: usize) -> ServerState {
    let mut st = Arc::try_unwrap(state(64)).ok().expect("fresh state");
    st.limits = Limits {
        body: TIMEOUTS,
        max_concurrent_uploads: uploads,
        ..st.limits
    };
    st.upload_permits = tokio::sync::Semaphore::new(uploads);
    st
}

#[actix_web::test]
async fn a_body_sent_too_slowly_or_not_at_all_is_answered_408() {
    let addr = serve(with_limits(1));
    let body = br#"{"model":"base","max_tokens":2,"messages":[{"role":"user","content":"Hi"}]}"#;
    let full = body.to_vec();
    // A byte every 100 ms: 10 bytes/s, far under the minimum once the grace period ends.
    let (answer, took) = actix_web::rt::task::spawn_blocking(move || {
        send_slowly(
            addr,
            chat_head(full.len()),
            full,
            1,
            Duration::from_millis(100),
        )
    })
    .await
    .unwrap();
    assert!(answer.starts_with("http/1.1 408"), "{answer}");
    assert!(took < Duration::from_secs(5), "answered after {took:?}");
    // Headers, a few bytes, then silence: 408 once the idle time has passed.
    let part = body[..10].to_vec();
    let (answer, took) = actix_web::rt::task::spawn_blocking(move || {
        send_slowly(addr, chat_head(body.len()), part, 10, Duration::ZERO)
    })
    .await
    .unwrap();
    assert!(answer.starts_with("http/1.1 408"), "{answer}");
    assert!(
        took >= TIMEOUTS.idle && took < Duration::from_secs(6),
        "{took:?}"
    );
    // The same body sent at once is served.
    let (answer, _) = actix_web::rt::task::spawn_blocking(move || {
        send_slowly(
            addr,
            chat_head(body.len()),
            body.to_vec(),
            body.len(),
            Duration::ZERO,
        )
    })
    .await
    .unwrap();
    assert!(answer.starts_with("http/1.1 200"), "{answer}");
}

/// A multipart upload of `dir`'s two PEFT files as adapter `id`: the request head and body.
fn upload(dir: &Path, id: &str) -> (String, Vec<u8>) {
    let boundary = "loramuxBoundary9";
    let mut body = format!(
        "--{boundary}\r\ncontent-disposition: form-data; name=\"id\"\r\n\r\n{id}\r\n\
         --{boundary}\r\ncontent-disposition: form-data; name=\"description\"\r\n\r\nUploaded\r\n"
    )
    .into_bytes();
    for file in ["adapter_config.json", "adapter_model.safetensors"] {
        body.extend(
            format!(
                "--{boundary}\r\ncontent-disposition: form-data; name=\"{file}\"; \
                 filename=\"{file}\"\r\ncontent-type: application/octet-stream\r\n\r\n"
            )
            .into_bytes(),
        );
        body.extend(std::fs::read(dir.join(file)).expect("fixture"));
        body.extend(b"\r\n");
    }
    body.extend(format!("--{boundary}--\r\n").into_bytes());
    let head = format!(
        "POST /v1/adapters HTTP/1.1\r\nhost: localhost\r\n\
         content-type: multipart/form-data; boundary={boundary}\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    (head, body)
}

#[actix_web::test]
async fn uploads_beyond_the_bound_get_429_and_a_stalled_one_leaves_nothing() {
    use loramux_index::{Registry, RegistryConfig};
    use loramux_router::{PeftValidator, Router, RouterConfig};
    use std::sync::RwLock;

    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("runtime/tests/fixtures/adapters");
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = Registry::open(
        dir.path(),
        RegistryConfig::default(),
        Arc::new(default_embedder()),
    )
    .expect("registry");
    let router =
        Router::new(Arc::new(RwLock::new(registry)), RouterConfig::default()).expect("router");
    let mut st = with_limits(1);
    st.catalog = Arc::new(RegistryCatalog::new(
        router,
        PeftValidator::new(base().model.config().clone()),
    ));
    let uploads_dir = st.catalog.upload_dir().expect("writable registry");
    let addr = serve(st);
    let adapter = fixtures.join("r4_rank_pattern");

    // The first upload sends half its body and stalls, holding the one permit.
    let (head, body) = upload(&adapter, "stalled");
    let half = body[..body.len() / 2].to_vec();
    let stalled = actix_web::rt::task::spawn_blocking(move || {
        send_slowly(addr, head, half, usize::MAX, Duration::ZERO)
    });
    actix_web::rt::time::sleep(Duration::from_millis(400)).await;
    let staged = std::fs::read_dir(&uploads_dir)
        .map(|d| d.flatten().count())
        .unwrap_or(0);
    assert_eq!(staged, 1, "the stalled upload is being staged");
    let (head, body) = upload(&adapter, "second");
    let (answer, _) = actix_web::rt::task::spawn_blocking(move || {
        send_slowly(addr, head, body, usize::MAX, Duration::ZERO)
    })
    .await
    .unwrap();
    assert!(answer.starts_with("http/1.1 429"), "{answer}");
    assert!(answer.contains("retry-after:"), "{answer}");

    let (answer, _) = stalled.await.unwrap();
    assert!(answer.starts_with("http/1.1 408"), "{answer}");
    let left: Vec<_> = std::fs::read_dir(&uploads_dir)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "staging folders left behind: {left:?}");
    // With the permit back, an upload streams through and registers.
    let (head, body) = upload(&adapter, "third");
    let (answer, _) = actix_web::rt::task::spawn_blocking(move || {
        send_slowly(addr, head, body, usize::MAX, Duration::ZERO)
    })
    .await
    .unwrap();
    assert!(answer.starts_with("http/1.1 201"), "{answer}");
}
