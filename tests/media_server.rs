//! End-to-end: pictures served by qunbridge itself, over real sockets. A picture posted to
//! one `api` group is fetched from a scripted file server into the daemon's cache; what is
//! asserted is what users see: the receiving `api` consumer's segment names the picture by
//! its sha256, size and type (told from the bytes, not from the source's `Content-Type`),
//! `GET /api/v1/media/<sha256>` gives the same bytes behind the bearer token, and the
//! built-in media server answers signed links with the bytes, a tampered signature with 403,
//! an expired link with 410 and a picture it does not have with 404. A text said after a
//! picture still arrives after it, and a media server that cannot listen stops start-up.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use qunbridge::config::{Config, ProcessEnv};
use qunbridge::{run, RunError, RunOptions};
use qunbridge_connectors::media::links::LinkSigner;
use qunbridge_connectors::Secret;
use qunbridge_tests::file_server::{sha256_hex, FileServer, Route};
use qunbridge_tests::{free_port, post_message, Broker, Daemon, SseClient};
use serde_json::{json, Value};

/// The `api` account's bearer token.
const TOKEN: &str = "media-test-token";
/// The key the media server signs its links with.
const LINK_SECRET: &str = "0123456789abcdef0123456789abcdef";

/// A PNG (by its magic bytes) of `len` bytes whose content differs from run to run, so a
/// cache hit from another test can never stand in for this one's fetch.
fn png_bytes(len: usize) -> Vec<u8> {
    let mut bytes = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01".to_vec();
    while bytes.len() < len {
        bytes.push(rand::random::<u8>());
    }
    bytes
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// One `api` account with groups `a` and `b` linked, pictures fetched from loopback, and the
/// media server on `media`.
fn config(broker: &Broker, api: SocketAddr, media: SocketAddr) -> String {
    format!(
        r#"{broker}
[media]
allow_hosts = ["127.0.0.1"]
serve_listen = "{media}"
public_base_url = "http://{media}"
link_secret = "{LINK_SECRET}"

[accounts.hub]
platform = "api"
listen = "{api}"
token = "{TOKEN}"

[[links]]
name = "pics"
groups = ["hub:a", "hub:b"]
format = "{{name}}: "
"#,
        broker = broker.toml()
    )
}

/// A daemon that relayed one picture from `a` to `b`: the picture's bytes, the segment the
/// consumer of `b` got, and the addresses.
struct Relayed {
    daemon: Daemon,
    api: SocketAddr,
    media: SocketAddr,
    bytes: Vec<u8>,
    segment: Value,
    _files: FileServer,
}

/// Starts the daemon and relays a picture that its source calls a JPEG but is a PNG.
async fn relay_a_picture() -> Relayed {
    let broker = Broker::embedded();
    let files = FileServer::start().await;
    let bytes = png_bytes(200 * 1024);
    // A slow source, so that the text posted after the picture is ready long before it.
    files.serve(
        "/cat.jpg",
        Route::ok(bytes.clone())
            .content_type("image/jpeg")
            .delay(Duration::from_millis(300)),
    );
    let api = loopback(free_port());
    let media = loopback(free_port());
    let daemon = Daemon::start_alone(&config(&broker, api, media)).await;
    let mut b = SseClient::open(
        &format!("http://{api}/api/v1/groups/b/events"),
        None,
        Some(TOKEN),
    )
    .await;

    let (status, body) = post_message(
        api,
        "a",
        json!({
            "sender": {"id": "u1", "name": "Ann"},
            "segments": [
                {"type": "text", "text": "look"},
                {"type": "image", "url": files.url("/cat.jpg")}
            ]
        }),
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let (status, body) = post_message(
        api,
        "a",
        json!({"sender": {"id": "u1", "name": "Ann"}, "text": "said after the picture"}),
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let message = b.next().await.json();
    let after = b.next().await.json();
    assert_eq!(
        after["text"], "Ann: said after the picture",
        "the text said after the picture arrives after it: first {message}, then {after}"
    );
    let segment = message["segments"]
        .as_array()
        .expect("segments")
        .iter()
        .find(|segment| segment["type"] == "image")
        .cloned()
        .unwrap_or_else(|| panic!("an image segment in {message}"));
    Relayed {
        daemon,
        api,
        media,
        bytes,
        segment,
        _files: files,
    }
}

/// GETs `url` with an optional bearer token: status, `Content-Type`, body.
async fn get(url: &str, token: Option<&str>) -> (u16, Option<String>, Vec<u8>) {
    let mut request = reqwest::Client::new().get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("answered");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let body = response.bytes().await.expect("body").to_vec();
    (status, content_type, body)
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| since.as_secs())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_consumer_gets_the_picture_by_its_sha256_behind_the_token() {
    let relayed = relay_a_picture().await;
    let sha256 = sha256_hex(&relayed.bytes);
    let segment = &relayed.segment;
    assert_eq!(segment["sha256"], sha256.as_str(), "{segment}");
    assert_eq!(segment["size"], relayed.bytes.len(), "{segment}");
    assert_eq!(
        segment["mime"], "image/png",
        "the type comes from the bytes, not the source's Content-Type: {segment}"
    );

    let url = format!("http://{}/api/v1/media/{sha256}", relayed.api);
    let (status, content_type, body) = get(&url, Some(TOKEN)).await;
    assert_eq!(status, 200);
    assert_eq!(content_type.as_deref(), Some("image/png"));
    assert!(body == relayed.bytes, "the same bytes as the source served");

    let (status, _, body) = get(&url, None).await;
    assert_eq!(status, 401, "without the token");
    assert!(body.len() < 1024, "no picture bytes without the token");
    let (status, _, _) = get(&url, Some("not-the-token")).await;
    assert_eq!(status, 401, "with a wrong token");

    let unknown = format!(
        "http://{}/api/v1/media/{}",
        relayed.api,
        sha256_hex(b"never posted")
    );
    assert_eq!(get(&unknown, Some(TOKEN)).await.0, 404);
    let malformed = format!("http://{}/api/v1/media/..%2F..%2Fetc%2Fpasswd", relayed.api);
    assert_eq!(get(&malformed, Some(TOKEN)).await.0, 400);

    relayed.daemon.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_media_server_answers_signed_links_only() {
    let relayed = relay_a_picture().await;
    let daemon = &relayed.daemon;
    let sha256 = relayed.segment["sha256"]
        .as_str()
        .unwrap_or_else(|| panic!("a cached picture: {}", relayed.segment))
        .to_owned();
    assert_eq!(sha256, sha256_hex(&relayed.bytes));
    let base = format!("http://{}", relayed.media);
    let served = |outcome: &str| {
        format!("qunbridge_media_served_total{{server=\"links\",outcome=\"{outcome}\"}}")
    };
    let before = |outcome: &'static str| {
        let series = served(outcome);
        async move { daemon.counter(&series).await }
    };
    let (ok0, forbidden0, gone0, missing0) = (
        before("ok").await,
        before("bad_signature").await,
        before("expired").await,
        before("not_found").await,
    );

    // A link as qunbridge makes it: the bytes, typed by their content.
    let signer = LinkSigner::new(&base, Secret::new(LINK_SECRET), Duration::from_secs(3600));
    let link = signer.link(&sha256, "png", now_secs());
    assert!(
        link.starts_with(&format!("{base}/m/{sha256}.png?e=")),
        "{link}"
    );
    let (status, content_type, body) = get(&link, None).await;
    assert_eq!(status, 200, "{link}");
    assert_eq!(content_type.as_deref(), Some("image/png"));
    assert!(body == relayed.bytes, "the same bytes as the source served");

    // The same link with one character of the signature changed.
    let last = link.chars().last().unwrap_or('A');
    let tampered = format!(
        "{}{}",
        &link[..link.len() - last.len_utf8()],
        if last == 'A' { 'B' } else { 'A' }
    );
    let (status, _, body) = get(&tampered, None).await;
    assert_eq!(status, 403, "{tampered}");
    assert!(body != relayed.bytes);
    // A link signed with another key.
    let stranger = LinkSigner::new(
        &base,
        Secret::new("another-secret-of-enough-bytes"),
        Duration::from_secs(3600),
    );
    assert_eq!(
        get(&stranger.link(&sha256, "png", now_secs()), None)
            .await
            .0,
        403
    );

    // A correctly signed link made long ago: expired.
    let short = LinkSigner::new(&base, Secret::new(LINK_SECRET), Duration::from_secs(60));
    let expired = short.link(&sha256, "png", 1_000);
    assert!(expired.contains("?e=1060&"), "{expired}");
    let (status, _, body) = get(&expired, None).await;
    assert_eq!(status, 410, "{expired}");
    assert!(body != relayed.bytes);

    // A correctly signed link to a picture the cache does not have.
    let unknown = signer.link(&sha256_hex(b"never cached"), "png", now_secs());
    assert_eq!(get(&unknown, None).await.0, 404, "{unknown}");

    // Malformed paths and queries.
    for malformed in [
        format!("{base}/m/{sha256}.png"),
        format!("{base}/m/{sha256}.png?e=soon&s=x"),
        format!("{base}/m/nothex.png?e=1&s=x"),
    ] {
        assert_eq!(get(&malformed, None).await.0, 400, "{malformed}");
    }

    assert_eq!(daemon.counter(&served("ok")).await - ok0, 1.0);
    assert_eq!(
        daemon.counter(&served("bad_signature")).await - forbidden0,
        2.0
    );
    assert_eq!(daemon.counter(&served("expired")).await - gone0, 1.0);
    assert_eq!(daemon.counter(&served("not_found")).await - missing0, 1.0);

    relayed.daemon.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_media_server_that_cannot_listen_stops_start_up() {
    let broker = Broker::embedded();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port to take");
    let media = taken.local_addr().expect("its address");
    let dir = tempfile::tempdir().expect("tempdir");
    let admin = loopback(free_port());
    let path = dir.path().join("qunbridge.toml");
    let text = format!(
        "state_dir = {:?}\n{}\n[admin]\nlisten = \"{admin}\"\n",
        dir.path().join("state"),
        config(&broker, loopback(free_port()), media)
    );
    std::fs::write(&path, text).expect("write config");
    let config = Config::from_file(&path, &ProcessEnv).unwrap_or_else(|e| panic!("{e}"));
    let outcome = tokio::time::timeout(
        Duration::from_secs(60),
        run(config, std::future::pending(), RunOptions::default()),
    )
    .await
    .expect("start-up fails rather than running");
    match outcome {
        Err(RunError::Bind { what, addr, .. }) => {
            assert_eq!(what, "media server");
            assert_eq!(addr, media.to_string());
        }
        other => panic!("expected a bind error of the media server, got {other:?}"),
    }
    drop(taken);
}
