//! End-to-end: the bounded media fetcher against a scripted file server over real sockets.
//! Asserted: the bytes that arrive and the type their first bytes show (never the name or
//! `Content-Type`), how much of a too-large or wrong body the source got to send before the
//! fetcher gave up, the outcome of every failure (`timeout`, `http_error`, `expired`,
//! `bad_type`, `too_large`, `blocked`), that redirects are bounded and re-checked, that the
//! address guard stops a request before anything reaches the target, and that the global
//! and per-host limits hold fetches back within their deadline.
//!
//! The fetchers here allow the loopback host `127.0.0.1` explicitly (the file server's),
//! except where the guard itself is under test.

use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;

use qunbridge_connectors::media::fetch::{ChunkSink, FetchError, FetchLimits, Fetched, Fetcher};
use qunbridge_connectors::media::guard::{AddressGuard, Blocked};
use qunbridge_connectors::media::sniff::FileType;
use qunbridge_tests::file_server::{png, FileServer, Route, GIF};

/// Slack over `max_bytes` a source may get to write before an over-long body is abandoned.
const SLACK: u64 = 64 * 1024;

/// The byte cap of the tests that overrun it (small, so the paced bodies stay quick).
const CAP: u64 = 256 * 1024;

/// A fetcher that allows the file server's host, with `limits`.
fn fetcher(limits: FetchLimits) -> Fetcher {
    Fetcher::new(limits, AddressGuard::new(vec!["127.0.0.1".into()])).expect("a fetcher")
}

/// Default limits.
fn default_fetcher() -> Fetcher {
    fetcher(FetchLimits::default())
}

/// A body paced so the server cannot run far ahead of the client: 4 KiB every 2 ms.
fn paced(route: Route) -> Route {
    route.paced(4 * 1024, Duration::from_millis(2))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_png_arrives_byte_identical_with_its_type() {
    let server = FileServer::start().await;
    let picture = png(300 * 1024);
    server.serve(
        "/a.png",
        Route::ok(picture.clone()).content_type("image/png"),
    );
    let mut sink = Vec::new();
    let fetched = default_fetcher()
        .fetch(&server.url("/a.png?rkey=secret"), &mut sink)
        .await
        .expect("fetched");
    assert_eq!(
        fetched,
        Fetched {
            size: picture.len() as u64,
            file_type: FileType::Png,
            final_url: server.url("/a.png?rkey=secret"),
        }
    );
    assert!(sink == picture, "the bytes that arrived differ");
    assert_eq!(server.requests("/a.png"), 1);

    // The same, chunked without a length, and a picture shorter than the sniffing window.
    server.serve("/chunked.png", Route::ok(picture.clone()).chunked());
    let mut sink = Vec::new();
    let fetched = default_fetcher()
        .fetch(&server.url("/chunked.png"), &mut sink)
        .await
        .expect("fetched chunked");
    assert_eq!(fetched.file_type, FileType::Png);
    assert!(sink == picture, "the chunked bytes that arrived differ");
    server.serve("/tiny.gif", Route::ok(&GIF[..10]));
    let mut sink = Vec::new();
    let fetched = default_fetcher()
        .fetch(&server.url("/tiny.gif"), &mut sink)
        .await
        .expect("fetched a tiny body");
    assert_eq!(
        (fetched.file_type, sink.as_slice()),
        (FileType::Gif, &GIF[..10])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gif_named_webp_is_a_gif() {
    let server = FileServer::start().await;
    server.serve("/x.webp", Route::ok(GIF).content_type("image/webp"));
    let mut sink = Vec::new();
    let fetched = default_fetcher()
        .fetch(&server.url("/x.webp"), &mut sink)
        .await
        .expect("fetched");
    assert_eq!(fetched.file_type, FileType::Gif);
    assert_eq!(fetched.file_type.mime(), "image/gif");
    assert_eq!(sink, GIF);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_announced_30_mib_body_is_refused_before_it_is_read() {
    let server = FileServer::start().await;
    server.serve(
        "/huge.png",
        paced(
            Route::ok(png(64))
                .padded_to(2 * 1024 * 1024)
                .announce_length(30 * 1024 * 1024),
        ),
    );
    let mut sink = Vec::new();
    let error = fetcher(FetchLimits {
        max_bytes: CAP,
        ..FetchLimits::default()
    })
    .fetch(&server.url("/huge.png"), &mut sink)
    .await
    .expect_err("refused");
    assert_eq!(error.outcome(), "too_large", "{error}");
    assert_eq!(
        error,
        FetchError::TooLarge {
            limit: CAP,
            announced: Some(30 * 1024 * 1024)
        }
    );
    assert!(sink.is_empty(), "nothing of the body was stored");
    let written = server.body_bytes_written("/huge.png");
    assert!(written <= CAP + SLACK, "the source wrote {written} bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_body_past_the_cap_is_abandoned() {
    let server = FileServer::start().await;
    server.serve(
        "/endless.png",
        paced(Route::ok(png(64)).padded_to(4 * CAP).chunked()),
    );
    let mut sink = Vec::new();
    let error = fetcher(FetchLimits {
        max_bytes: CAP,
        ..FetchLimits::default()
    })
    .fetch(&server.url("/endless.png"), &mut sink)
    .await
    .expect_err("abandoned");
    assert_eq!(error.outcome(), "too_large", "{error}");
    assert!(
        sink.len() as u64 <= CAP,
        "the sink took {} bytes",
        sink.len()
    );
    let written = server.body_bytes_written("/endless.png");
    assert!(written <= CAP + SLACK, "the source wrote {written} bytes");

    // A body exactly at the cap is fine.
    server.serve("/full.png", Route::ok(png(CAP as usize)).chunked());
    let mut sink = Vec::new();
    let fetched = fetcher(FetchLimits {
        max_bytes: CAP,
        ..FetchLimits::default()
    })
    .fetch(&server.url("/full.png"), &mut sink)
    .await
    .expect("a body at the cap");
    assert_eq!(fetched.size, CAP);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_or_slow_source_times_out() {
    let server = FileServer::start().await;
    server.serve("/stalled.png", Route::ok(png(64 * 1024)).stall_after(1024));
    server.serve(
        "/slow.png",
        Route::ok(png(1024)).delay(Duration::from_secs(30)),
    );
    let limits = FetchLimits {
        fetch_timeout: Duration::from_secs(1),
        ..FetchLimits::default()
    };
    let fetcher = fetcher(limits.clone());
    for path in ["/stalled.png", "/slow.png"] {
        let started = tokio::time::Instant::now();
        let mut sink = Vec::new();
        let error = fetcher
            .fetch(&server.url(path), &mut sink)
            .await
            .expect_err("timed out");
        assert_eq!(error.outcome(), "timeout", "{path}: {error}");
        assert!(
            started.elapsed() < limits.fetch_timeout + Duration::from_secs(1),
            "{path}: gave up only after {:?}",
            started.elapsed()
        );
        assert_eq!(server.requests(path), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_and_expired_links_are_told_apart() {
    let server = FileServer::start().await;
    server.serve(
        "/expired",
        Route::status(
            400,
            br#"{"retcode":-5503007,"retmsg":"download url has expired"}"#.to_vec(),
        )
        .content_type("application/json"),
    );
    server.serve(
        "/expired-403",
        Route::status(403, br#"{"error":"Signature Expired"}"#.to_vec())
            .content_type("application/json"),
    );
    server.serve(
        "/other-400",
        Route::status(400, br#"{"retcode":-1,"retmsg":"bad request"}"#.to_vec())
            .content_type("application/json"),
    );
    server.serve(
        "/big-error",
        Route::status(403, b"{\"msg\":\"expired\"".to_vec()).padded_to(1024 * 1024),
    );
    server.serve("/broken", Route::status(500, b"oops".to_vec()));
    let fetcher = default_fetcher();
    for (path, outcome) in [
        ("/missing.png", "http_error"),
        ("/expired", "expired"),
        ("/expired-403", "expired"),
        ("/other-400", "http_error"),
        ("/big-error", "http_error"),
        ("/broken", "http_error"),
    ] {
        let mut sink = Vec::new();
        let error = fetcher
            .fetch(&server.url(path), &mut sink)
            .await
            .expect_err(path);
        assert_eq!(error.outcome(), outcome, "{path}: {error}");
        assert!(sink.is_empty(), "{path}: an error body reached the sink");
    }
    assert_eq!(server.requests("/missing.png"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_or_empty_body_is_not_a_picture_and_is_not_read_through() {
    let server = FileServer::start().await;
    let page = b"<!DOCTYPE html><html><head><title>Login</title></head><body>".to_vec();
    server.serve(
        "/picture.png",
        paced(
            Route::ok(page)
                .content_type("image/png")
                .padded_to(2 * 1024 * 1024),
        ),
    );
    server.serve(
        "/empty.png",
        Route::ok(Vec::new()).content_type("image/png"),
    );
    server.serve(
        "/json.jpg",
        Route::ok(br#"{"retcode":0,"data":null}"#.to_vec()).content_type("image/jpeg"),
    );
    let fetcher = default_fetcher();
    for path in ["/picture.png", "/empty.png", "/json.jpg"] {
        let mut sink = Vec::new();
        let error = fetcher
            .fetch(&server.url(path), &mut sink)
            .await
            .expect_err(path);
        assert_eq!(error.outcome(), "bad_type", "{path}: {error}");
        assert!(sink.is_empty(), "{path}: a page reached the sink");
    }
    let written = server.body_bytes_written("/picture.png");
    assert!(written <= SLACK, "the page's source wrote {written} bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_redirects_are_followed_and_a_fourth_is_not() {
    let server = FileServer::start().await;
    let picture = png(4096);
    server.serve("/png", Route::ok(picture.clone()));
    server.serve("/r1", Route::redirect("/png"));
    server.serve("/r2", Route::redirect(server.url("/r1")));
    server.serve("/r3", Route::redirect("/r2"));
    server.serve("/r4", Route::redirect("/r3"));
    let fetcher = default_fetcher();

    let mut sink = Vec::new();
    let fetched = fetcher
        .fetch(&server.url("/r3"), &mut sink)
        .await
        .expect("three redirects followed");
    assert_eq!(fetched.final_url, server.url("/png"));
    assert!(sink == picture);
    assert_eq!(server.requests("/png"), 1);

    let mut sink = Vec::new();
    let error = fetcher
        .fetch(&server.url("/r4"), &mut sink)
        .await
        .expect_err("four redirects");
    assert_eq!(error, FetchError::TooManyRedirects(3));
    assert_eq!(error.outcome(), "http_error");
    assert_eq!(server.requests("/r1"), 2, "the chain was followed to r1");
    assert_eq!(server.requests("/png"), 1, "the fourth redirect was not");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loopback_url_is_blocked_without_a_request_unless_allowed() {
    let server = FileServer::start().await;
    server.serve("/png", Route::ok(png(1024)));
    let guarded =
        Fetcher::new(FetchLimits::default(), AddressGuard::new(Vec::new())).expect("a fetcher");
    let mut sink = Vec::new();
    let error = guarded
        .fetch(&server.url("/png"), &mut sink)
        .await
        .expect_err("blocked");
    assert_eq!(error.outcome(), "blocked", "{error}");
    assert!(matches!(
        error,
        FetchError::Blocked(Blocked::Address {
            range: "loopback",
            ..
        })
    ));
    assert_eq!(server.total_requests(), 0, "the server saw a request");

    // A name that resolves to loopback is refused by the resolver, even when the address
    // itself is allowed: the allow list names hosts, and this host is `localhost`.
    let url = format!("http://localhost:{}/png", server.addr().port());
    let error = default_fetcher()
        .fetch(&url, &mut sink)
        .await
        .expect_err("blocked by name");
    assert_eq!(error.outcome(), "blocked", "{error}");
    assert_eq!(server.total_requests(), 0, "the server saw a request");

    // Schemes other than http(s) never go out.
    let error = default_fetcher()
        .fetch("ftp://127.0.0.1/png", &mut sink)
        .await
        .expect_err("blocked scheme");
    assert_eq!(error, FetchError::Blocked(Blocked::Scheme("ftp".into())));

    // Allowed: fetched.
    default_fetcher()
        .fetch(&server.url("/png"), &mut sink)
        .await
        .expect("allowed host fetched");
    assert_eq!(server.requests("/png"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_to_blocked_addresses_are_blocked_without_a_request() {
    let server = FileServer::start().await;
    let v6 = FileServer::start_on(IpAddr::V6(Ipv6Addr::LOCALHOST))
        .await
        .expect("IPv6 loopback is available");
    v6.serve("/png", Route::ok(png(1024)));
    server.serve("/png", Route::ok(png(1024)));
    server.serve("/to-v6", Route::redirect(v6.url("/png")));
    server.serve("/to-ten", Route::redirect("http://10.0.0.1/png"));
    server.serve(
        "/to-mapped",
        Route::redirect("http://[::ffff:127.0.0.2]/png"),
    );
    server.serve(
        "/to-localhost",
        Route::redirect(format!("http://localhost:{}/png", server.addr().port())),
    );
    server.serve("/to-file", Route::redirect("file:///etc/passwd"));
    let fetcher = default_fetcher();
    for path in [
        "/to-v6",
        "/to-ten",
        "/to-mapped",
        "/to-localhost",
        "/to-file",
    ] {
        let mut sink = Vec::new();
        let error = fetcher
            .fetch(&server.url(path), &mut sink)
            .await
            .expect_err(path);
        assert_eq!(error.outcome(), "blocked", "{path}: {error}");
        assert_eq!(server.requests(path), 1);
    }
    assert_eq!(v6.total_requests(), 0, "the [::1] target saw a request");
    assert_eq!(server.requests("/png"), 0, "localhost reached the target");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_resolved_refuses_names_of_loopback() {
    let server = FileServer::start().await;
    let url = reqwest::Url::parse(&format!("http://localhost:{}/png", server.addr().port()))
        .expect("a URL");
    for allowed in [vec![], vec!["127.0.0.1".to_owned(), "::1".to_owned()]] {
        let refusal = AddressGuard::new(allowed)
            .check_resolved(&url)
            .await
            .expect_err("localhost refused");
        assert!(
            matches!(
                refusal,
                Blocked::Address {
                    range: "loopback",
                    ..
                }
            ),
            "{refusal}"
        );
    }
    assert_eq!(
        AddressGuard::new(vec!["localhost".into()])
            .check_resolved(&url)
            .await,
        Ok(())
    );
    assert_eq!(server.total_requests(), 0);
}

/// Deadline of the tests of the concurrency limits: long enough that fetches still waiting
/// for a slot can be seen not to have reached the source.
const LIMIT_DEADLINE: Duration = Duration::from_secs(2);

/// Starts fetching `url` in a task; yields the result and how long it took.
fn spawn_fetch(
    fetcher: &Fetcher,
    url: String,
) -> tokio::task::JoinHandle<(Result<Fetched, FetchError>, Duration)> {
    let fetcher = fetcher.clone();
    tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        let result = fetcher.fetch(&url, &mut Vec::new()).await;
        (result, started.elapsed())
    })
}

/// Waits for `fetches`; each must have timed out within the deadline (the wait for a slot
/// included) plus a second.
async fn all_time_out(
    fetches: Vec<tokio::task::JoinHandle<(Result<Fetched, FetchError>, Duration)>>,
) {
    for fetch in fetches {
        let (result, took) = fetch.await.expect("no panic");
        let error = result.expect_err("timed out");
        assert_eq!(error.outcome(), "timeout", "{error}");
        assert!(
            took < LIMIT_DEADLINE + Duration::from_secs(1),
            "gave up only after {took:?}: the wait for a slot did not count"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_host_holds_fetches_back_and_the_wait_counts_toward_their_deadline() {
    let server = FileServer::start().await;
    server.serve("/held.png", Route::ok(png(4096)).stall_after(100));
    server.serve("/waiting.png", Route::ok(png(4096)).stall_after(100));
    server.serve("/png", Route::ok(png(1024)));
    let limits = FetchLimits {
        fetch_timeout: LIMIT_DEADLINE,
        ..FetchLimits::default()
    };
    assert_eq!(limits.max_per_host, 2);
    let fetcher = fetcher(limits);
    let mut fetches: Vec<_> = (0..2)
        .map(|_| spawn_fetch(&fetcher, server.url("/held.png")))
        .collect();
    server.wait_requests("/held.png", 2).await;
    fetches.extend((0..2).map(|_| spawn_fetch(&fetcher, server.url("/waiting.png"))));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        server.requests("/waiting.png"),
        0,
        "a third fetch reached a host that already serves two"
    );
    all_time_out(fetches).await;
    // The slots are free again.
    fetcher
        .fetch(&server.url("/png"), &mut Vec::new())
        .await
        .expect("fetched once the host is free");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_global_limit_holds_fetches_to_other_hosts_back() {
    let server = FileServer::start().await;
    server.serve("/held.png", Route::ok(png(4096)).stall_after(100));
    server.serve("/waiting.png", Route::ok(png(4096)).stall_after(100));
    server.serve("/png", Route::ok(png(1024)));
    let fetcher = Fetcher::new(
        FetchLimits {
            fetch_timeout: LIMIT_DEADLINE,
            max_concurrent: 1,
            ..FetchLimits::default()
        },
        AddressGuard::new(vec!["127.0.0.1".into(), "localhost".into()]),
    )
    .expect("a fetcher");
    let held = spawn_fetch(&fetcher, server.url("/held.png"));
    server.wait_requests("/held.png", 1).await;
    let port = server.addr().port();
    let waiting = spawn_fetch(&fetcher, format!("http://localhost:{port}/waiting.png"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        server.requests("/waiting.png"),
        0,
        "a fetch to another host got past the global limit"
    );
    all_time_out(vec![held, waiting]).await;
    fetcher
        .fetch(&format!("http://localhost:{port}/png"), &mut Vec::new())
        .await
        .expect("fetched once a slot is free");
    assert_eq!(server.requests("/png"), 1);
}

/// A sink whose disk is full.
struct FullDisk;

impl ChunkSink for FullDisk {
    async fn write(&mut self, _chunk: &[u8]) -> std::io::Result<()> {
        Err(std::io::Error::new(
            std::io::ErrorKind::StorageFull,
            "no space left on device",
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_that_fails_fails_the_fetch() {
    let server = FileServer::start().await;
    server.serve("/png", Route::ok(png(100 * 1024)));
    let error = default_fetcher()
        .fetch(&server.url("/png"), &mut FullDisk)
        .await
        .expect_err("the sink failed");
    assert_eq!(error.outcome(), "sink", "{error}");
    assert!(matches!(
        error,
        FetchError::Sink {
            kind: std::io::ErrorKind::StorageFull,
            ..
        }
    ));
}
