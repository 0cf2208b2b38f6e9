//! End-to-end: the media service over the real cache on disk, the real fetcher and a
//! scripted file server on a real socket. The account's [`MediaSource`] here stands in for a
//! platform answering `get_image` or `get_file` (the connectors' sources are tested with
//! their peers). Asserted: the bytes kept (their sha256), how many requests the source file
//! got (fetched once, however many ask), the refresh of an expired QQ URL, bytes a platform
//! hands over directly, and that a stalled source gives up within `wait`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use qunbridge_connectors::media::cache::{CacheLimits, Fetched, MediaCache};
use qunbridge_connectors::media::fetch::{FetchLimits, Fetcher};
use qunbridge_connectors::media::guard::AddressGuard;
use qunbridge_connectors::media::service::{MediaFailure, MediaService, MediaSource, Resolved};
use qunbridge_connectors::media::{Locator, MediaKind, MediaRef};
use qunbridge_connectors::Platform;
use qunbridge_tests::file_server::{sha256_hex, FileServer, Route, GIF};

/// What QQ answers for an expired picture URL.
const EXPIRED: &str = r#"{"retcode":-5503007,"retmsg":"download url has expired"}"#;

/// A platform that answers every locator with `answer`, counting the questions.
struct Platform1 {
    /// What it gives.
    answer: Resolved,
    /// Questions asked.
    asked: AtomicUsize,
}

impl MediaSource for Platform1 {
    fn resolve<'a>(&'a self, _locator: &'a Locator) -> BoxFuture<'a, Result<Resolved, String>> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        let answer = self.answer.clone();
        Box::pin(async move { Ok(answer) })
    }
}

/// A service over a fresh cache in `dir`, fetching from the loopback file server.
async fn service(dir: &std::path::Path, wait: Duration, fetch_timeout: Duration) -> MediaService {
    let cache = MediaCache::open(dir.join("media"), CacheLimits::default())
        .await
        .expect("cache opens");
    let fetcher = Fetcher::new(
        FetchLimits {
            fetch_timeout,
            ..FetchLimits::default()
        },
        AddressGuard::new(vec!["127.0.0.1".into()]),
    )
    .expect("fetcher");
    MediaService::new(cache, fetcher, wait)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_picture_is_fetched_once_however_many_ask_and_then_comes_from_the_cache() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = FileServer::start().await;
    server.serve(
        "/cat.gif",
        Route::ok(GIF.to_vec()).delay(Duration::from_millis(200)),
    );
    let media =
        Arc::new(service(dir.path(), Duration::from_secs(10), Duration::from_secs(5)).await);
    let reference = MediaRef::url(&server.url("/cat.gif"), MediaKind::Image);
    let asks = (0..3).map(|_| {
        let media = media.clone();
        let reference = reference.clone();
        tokio::spawn(async move { media.blob("wechat", "qq-main", &reference).await })
    });
    let mut how = Vec::new();
    for ask in asks {
        let (blob, fetched) = ask.await.expect("task").expect("the picture");
        assert_eq!(blob.sha256, sha256_hex(GIF));
        assert_eq!(std::fs::read(&blob.path).expect("blob on disk"), GIF);
        how.push(fetched);
    }
    assert_eq!(
        server.requests("/cat.gif"),
        1,
        "three asked at once: one fetch"
    );
    assert_eq!(
        how.iter().filter(|f| **f == Fetched::Fetched).count(),
        1,
        "{how:?}"
    );
    let (_, again) = media
        .blob("dingtalk", "qq-main", &reference)
        .await
        .expect("again");
    assert_eq!(again, Fetched::CacheHit);
    assert_eq!(server.requests("/cat.gif"), 1, "the cache answered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_qq_url_is_refreshed_once_through_the_account_that_saw_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = FileServer::start().await;
    server.serve(
        "/old",
        Route::status(400, EXPIRED).content_type("application/json"),
    );
    server.serve("/fresh", Route::ok(GIF.to_vec()));
    let media = service(dir.path(), Duration::from_secs(10), Duration::from_secs(5)).await;
    let qq = Arc::new(Platform1 {
        answer: Resolved::Url(server.url("/fresh")),
        asked: AtomicUsize::new(0),
    });
    media.register("qq-main", qq.clone());
    let reference = MediaRef::new(
        Platform::Qq,
        "qq-main",
        "ABCD.gif",
        MediaKind::Sticker,
        Locator::Onebot11Image {
            file: "ABCD.gif".into(),
            url: Some(server.url("/old")),
        },
    );
    let (blob, _) = media
        .blob("wechat", "qq-main", &reference)
        .await
        .expect("refreshed");
    assert_eq!(blob.sha256, sha256_hex(GIF));
    assert_eq!(qq.asked.load(Ordering::SeqCst), 1);
    assert_eq!(server.requests("/old"), 1);
    assert_eq!(server.requests("/fresh"), 1);

    // Another account, where nobody can refresh it: a failure, never a panic or a hang.
    let stranger = MediaRef {
        key: "qq:elsewhere:X.jpg".into(),
        ..reference
    };
    let failure = media
        .blob("wechat", "elsewhere", &stranger)
        .await
        .expect_err("nobody to ask");
    assert!(matches!(failure, MediaFailure::NoSource), "{failure:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_a_platform_hands_over_are_kept_when_they_are_a_picture() {
    let dir = tempfile::tempdir().expect("tempdir");
    let media = service(dir.path(), Duration::from_secs(10), Duration::from_secs(5)).await;
    let wechat = Arc::new(Platform1 {
        answer: Resolved::Bytes(GIF.to_vec()),
        asked: AtomicUsize::new(0),
    });
    media.register("wx", wechat);
    let file = |id: &str| {
        MediaRef::new(
            Platform::Wechat,
            "wx",
            id,
            MediaKind::Image,
            Locator::Onebot12File { file_id: id.into() },
        )
    };
    let (blob, _) = media
        .blob("qq", "wx", &file("f1"))
        .await
        .expect("bytes kept");
    assert_eq!(blob.sha256, sha256_hex(GIF));

    media.register(
        "wx",
        Arc::new(Platform1 {
            answer: Resolved::Bytes(b"<html>not a picture</html>".to_vec()),
            asked: AtomicUsize::new(0),
        }),
    );
    let failure = media
        .blob("qq", "wx", &file("f2"))
        .await
        .expect_err("not a picture");
    assert!(matches!(failure, MediaFailure::BadType), "{failure:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_source_gives_up_within_the_wait() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = FileServer::start().await;
    server.serve(
        "/slow",
        Route::ok(GIF.to_vec()).delay(Duration::from_secs(30)),
    );
    let media = service(dir.path(), Duration::from_secs(1), Duration::from_secs(20)).await;
    let started = Instant::now();
    let failure = media
        .blob(
            "qq",
            "api",
            &MediaRef::url(&server.url("/slow"), MediaKind::Image),
        )
        .await
        .expect_err("stalled");
    assert!(matches!(failure, MediaFailure::Waited(_)), "{failure:?}");
    assert_eq!(failure.outcome(), "timeout");
    // Behaviour, not speed: it gave up long before the source would have answered.
    assert!(started.elapsed() < Duration::from_secs(20));
}
