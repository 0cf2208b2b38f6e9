//! Pictures between QQ (OneBot v11, NapCat) and WeChat (OneBot v12, ComWeChatClient) in the
//! default `native` mode, end to end over real sockets: the picture is fetched once into the
//! cache and re-uploaded as bytes (QQ `base64://`, WeChat `upload_file` type `data` then
//! `image{file_id}` or `wx.emoji`); an expired QQ URL is refreshed through `get_image`; a
//! picture that cannot be had costs nothing but itself (the text arrives with `[图片]` on the
//! first attempt). The source pictures are served by a scripted HTTP file server on
//! 127.0.0.1, which `[media] allow_hosts` lets the address guard fetch.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};

use qunbridge_tests::file_server::{png, sha256_hex, FileServer, Route, GIF};
use qunbridge_tests::onebot11_peer::{group_message as qq_message, OneBot11Peer};
use qunbridge_tests::onebot12_peer::{group_message as wx_message, Behaviour, OneBot12Peer};
use qunbridge_tests::{free_port, post_message, Broker, Daemon, SseClient};

/// The QQ bot.
const QQ_BOT: i64 = 2854196310;
/// The WeChat bot.
const WX_BOT: &str = "wxid_bot";
/// The linked WeChat group.
const WX_GROUP: &str = "12345678@chatroom";

/// The bytes of a `base64://` picture or of an `upload_file` type `data`.
fn decoded(encoded: &str) -> Vec<u8> {
    let data = encoded.strip_prefix("base64://").unwrap_or(encoded);
    base64::engine::general_purpose::STANDARD
        .decode(data)
        .expect("valid base64")
}

/// QQ groups 735021844 and 111, the WeChat group and the `api` group `a`, linked; the
/// media settings of `media` (a `[media]` table body).
fn config(broker: &Broker, qq: &str, wx: &str, api: SocketAddr, media: &str) -> String {
    format!(
        r#"{broker}
[accounts.qq]
platform = "qq"
url = "{qq}"

[accounts.wx]
platform = "wechat"
url = "{wx}"

[accounts.hub]
platform = "api"
listen = "{api}"

[[links]]
name = "fans"
groups = ["qq:735021844", "qq:111", "wx:{WX_GROUP}", "hub:a"]

[media]
{media}
"#,
        broker = broker.toml()
    )
}

/// The peers, the file server and a daemon linking them.
struct Setup {
    /// NapCat.
    qq: Arc<OneBot11Peer>,
    /// ComWeChatClient.
    wx: Arc<OneBot12Peer>,
    /// Where the pictures come from.
    files: FileServer,
    /// The `api` account's address.
    api: SocketAddr,
    /// The daemon.
    daemon: Daemon,
}

/// Starts everything on the embedded broker with `media` as the `[media]` table.
async fn start(media: &str) -> Setup {
    let broker = Broker::embedded();
    let (qq, qq_url) = OneBot11Peer::serve(QQ_BOT, None, 0).await;
    let (wx, wx_url) = OneBot12Peer::serve(WX_BOT, Behaviour::comwechat(None)).await;
    let files = FileServer::start().await;
    let api = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let daemon = Daemon::start(&config(&broker, &qq_url, &wx_url, api, media)).await;
    qq.wait_connections(1).await;
    wx.wait_connections(1).await;
    Setup {
        qq,
        wx,
        files,
        api,
        daemon,
    }
}

/// The media settings every test starts from: the local file server is allowed.
const LOCAL: &str = "allow_hosts = [\"127.0.0.1\"]";

/// A QQ picture segment named `file` at `url`.
fn qq_picture(file: &str, url: &str) -> Value {
    json!({"type": "image", "data": {"file": file, "url": url, "file_size": "100"}})
}

/// The texts of the WeChat `send_message` calls among `calls`.
fn texts_of(calls: &[Value]) -> Vec<String> {
    calls
        .iter()
        .filter(|call| call["params"]["message"][0]["type"] == "text")
        .map(|call| {
            call["params"]["message"][0]["data"]["text"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qq_picture_reaches_wechat_as_uploaded_bytes_fetched_once() {
    let setup = start(LOCAL).await;
    let picture = png(4000);
    setup
        .files
        .serve("/qq/ABCD.png", Route::ok(picture.clone()));
    let url = setup.files.url("/qq/ABCD.png");

    setup.qq.push_event(qq_message(
        735021844,
        1437420188,
        501,
        "Alice",
        "Alice",
        json!([{"type": "text", "data": {"text": "look"}}, qq_picture("ABCD.png", &url)]),
    ));
    let upload = setup.wx.next_action("upload_file").await;
    assert_eq!(upload["params"]["type"], "data");
    let bytes = decoded(upload["params"]["data"].as_str().expect("data"));
    assert_eq!(
        sha256_hex(&bytes),
        sha256_hex(&picture),
        "the bytes that were served"
    );
    let name = upload["params"]["name"].as_str().expect("name");
    assert!(name.ends_with(".png"), "{name}");
    let text = setup.wx.next_action("send_message").await;
    assert_eq!(
        text["params"]["message"],
        json!([{"type": "text", "data": {"text": "[QQ] Alice: look"}}])
    );
    let image = setup.wx.next_action("send_message").await;
    assert_eq!(
        image["params"]["message"],
        json!([{"type": "image", "data": {"file_id": "up-1"}}])
    );
    // The other QQ group gets the same bytes in the same message as the text.
    let copy = setup.qq.next_action("send_group_msg").await;
    assert_eq!(copy["params"]["group_id"], 111);
    let message = &copy["params"]["message"];
    assert_eq!(message[0]["data"]["text"], "[QQ] Alice: look");
    assert_eq!(message[1]["type"], "image");
    let file = message[1]["data"]["file"].as_str().expect("file");
    assert!(file.starts_with("base64://"), "never a URL: {file}");
    assert_eq!(decoded(file), picture);

    // The same picture again (another sighting, another message): neither fetched nor
    // uploaded again.
    setup.qq.push_event(qq_message(
        735021844,
        1437420188,
        502,
        "Alice",
        "Alice",
        json!([qq_picture("ABCD.png", &url)]),
    ));
    let text = setup.wx.next_action("send_message").await;
    assert_eq!(text["params"]["message"][0]["data"]["text"], "[QQ] Alice: ");
    let image = setup.wx.next_action("send_message").await;
    assert_eq!(image["params"]["message"][0]["data"]["file_id"], "up-1");
    setup.qq.next_action("send_group_msg").await;
    assert_eq!(setup.files.requests("/qq/ABCD.png"), 1, "fetched once");
    assert_eq!(setup.wx.calls("upload_file").len(), 1, "uploaded once");
    for text in texts_of(&setup.wx.calls("send_message")) {
        for defanged in ["http", "hxxp", "[.]"] {
            assert!(!text.contains(defanged), "{text}");
        }
    }
    setup.daemon.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_qq_url_is_refreshed_through_get_image_else_the_text_goes_with_the_placeholder()
{
    let setup = start(LOCAL).await;
    let picture = png(5000);
    setup.files.serve(
        "/expired",
        Route::status(
            400,
            r#"{"retcode":-5503007,"retmsg":"download url has expired"}"#,
        )
        .content_type("application/json"),
    );
    setup.files.serve("/fresh.png", Route::ok(picture.clone()));
    setup
        .qq
        .set_image("EXP.png", &setup.files.url("/fresh.png"));
    let expired = setup.files.url("/expired");

    setup.qq.push_event(qq_message(
        735021844,
        7,
        601,
        "Bob",
        "Bob",
        json!([qq_picture("EXP.png", &expired)]),
    ));
    let upload = setup.wx.next_action("upload_file").await;
    assert_eq!(
        decoded(upload["params"]["data"].as_str().expect("data")),
        picture
    );
    let get_image = setup.qq.next_action("get_image").await;
    assert_eq!(get_image["params"], json!({"file": "EXP.png"}));
    assert_eq!(setup.files.requests("/fresh.png"), 1);
    let refreshed = setup
        .daemon
        .counter(
            "qunbridge_media_fetch_total{platform=\"qq\",kind=\"image\",outcome=\"refreshed\"}",
        )
        .await;
    assert_eq!(refreshed, 1.0, "one fetch, after one refresh");

    // NapCat no longer knows the file: the text goes at once, with the placeholder.
    setup.qq.push_event(qq_message(
        735021844,
        7,
        602,
        "Bob",
        "Bob",
        json!([{"type": "text", "data": {"text": "gone "}}, qq_picture("GONE.png", &expired)]),
    ));
    let copy = setup.qq.next_action("send_group_msg").await;
    assert_eq!(copy["params"]["group_id"], 111);
    // The first message's copy comes first; then this one, sent once, as text.
    let copy = if copy["params"]["message"][0]["data"]["text"] == "[QQ] Bob: " {
        setup.qq.next_action("send_group_msg").await
    } else {
        copy
    };
    assert_eq!(
        copy["params"]["message"],
        json!([{"type": "text", "data": {"text": "[QQ] Bob: gone [图片]"}}])
    );
    let sends = setup
        .qq
        .take_actions_within("send_group_msg", Duration::from_millis(500))
        .await;
    assert!(sends.is_empty(), "sent once: {sends:?}");
    let fallback = setup
        .daemon
        .counter("qunbridge_media_fallback_total{platform=\"qq\",kind=\"image\",reason=\"source_error\"}")
        .await;
    assert!(fallback >= 1.0, "the fallback is counted");
    setup.daemon.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wechat_picture_reaches_qq_as_matching_bytes_and_never_as_a_loopback_url() {
    let setup = start(LOCAL).await;
    let picture = png(3000);
    setup.wx.set_file("c0a8e1f2", &picture);
    setup.wx.push_event(wx_message(
        WX_BOT,
        WX_GROUP,
        "wxid_ann",
        "9001",
        json!([{"type": "text", "data": {"text": "看"}}, {"type": "image", "data": {"file_id": "c0a8e1f2"}}]),
    ));
    let copy = setup.qq.next_action("send_group_msg").await;
    let mut sent_to_qq = vec![copy.clone()];
    let message = &copy["params"]["message"];
    assert_eq!(message[0]["data"]["text"], "[微信] wxid_ann: 看");
    let file = message[1]["data"]["file"].as_str().expect("a picture");
    assert!(file.starts_with("base64://"), "{file}");
    assert_eq!(decoded(file), picture);
    let copy = setup.qq.next_action("send_group_msg").await;
    assert_eq!(
        decoded(
            copy["params"]["message"][1]["data"]["file"]
                .as_str()
                .expect("picture")
        ),
        picture
    );
    sent_to_qq.push(copy);
    let asked = setup.wx.calls("get_file");
    assert!(
        asked
            .iter()
            .any(|call| call["params"] == json!({"file_id": "c0a8e1f2", "type": "data"})),
        "{asked:?}"
    );

    // An implementation without `type: "data"`: QQ gets the text with the placeholder, on
    // the first attempt, and no send failed.
    setup.wx.refuse_file_data();
    setup.wx.set_file("d1", &png(3100));
    setup.wx.push_event(wx_message(
        WX_BOT,
        WX_GROUP,
        "wxid_ann",
        "9002",
        json!([{"type": "text", "data": {"text": "再看"}}, {"type": "image", "data": {"file_id": "d1"}}]),
    ));
    for _ in 0..2 {
        let copy = setup.qq.next_action("send_group_msg").await;
        assert_eq!(
            copy["params"]["message"],
            json!([{"type": "text", "data": {"text": "[微信] wxid_ann: 再看[图片]"}}])
        );
        sent_to_qq.push(copy);
    }
    let more = setup
        .qq
        .take_actions_within("send_group_msg", Duration::from_millis(500))
        .await;
    assert!(more.is_empty(), "one send per group: {more:?}");
    let failed = setup
        .daemon
        .counter(
            "qunbridge_media_fallback_total{platform=\"qq\",kind=\"image\",reason=\"send_failed\"}",
        )
        .await;
    assert_eq!(failed, 0.0);
    // ComWeChatClient's `get_file` type `url` answer (a loopback URL) never reaches NapCat.
    let everything = serde_json::to_string(&sent_to_qq).expect("json");
    assert!(!everything.contains("127.0.0.1"), "{everything}");
    assert!(!everything.contains("get_file"), "{everything}");
    setup.daemon.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stickers_stay_stickers_and_a_gif_goes_to_wechat_as_an_emoji() {
    let setup = start(LOCAL).await;
    // A GIF that its source calls `x.webp`: recognised by its bytes.
    setup
        .files
        .serve("/x.webp", Route::ok(GIF).content_type("image/webp"));
    let url = setup.files.url("/x.webp");
    for (n, flag) in [("sub_type", 701), ("subType", 702)] {
        setup.qq.push_event(qq_message(
            735021844,
            9,
            flag,
            "Cat",
            "Cat",
            json!([
                {"type": "text", "data": {"text": n}},
                {"type": "image", "data": {"file": "x.webp", "url": url, n: 1, "summary": "[动画表情]"}}
            ]),
        ));
        let copy = setup.qq.next_action("send_group_msg").await;
        assert_eq!(copy["params"]["group_id"], 111);
        let sticker = &copy["params"]["message"][1];
        assert_eq!(sticker["type"], "image");
        assert_eq!(sticker["data"]["sub_type"], 1, "{n}");
        assert_eq!(sticker["data"]["summary"], "[动画表情]");
        assert_eq!(
            decoded(sticker["data"]["file"].as_str().expect("file")),
            GIF
        );
        if flag == 701 {
            // Uploaded once; the second sticker reuses the file id.
            let upload = setup.wx.next_action("upload_file").await;
            let name = upload["params"]["name"].as_str().expect("name");
            assert!(name.ends_with(".gif"), "named by its bytes: {name}");
        }
        setup.wx.next_action("send_message").await;
        let emoji = setup.wx.next_action("send_message").await;
        assert_eq!(
            emoji["params"]["message"],
            json!([{"type": "wx.emoji", "data": {"file_id": "up-1"}}])
        );
    }
    setup.daemon.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn napcat_failing_a_message_with_a_picture_gets_one_resend_with_the_placeholder() {
    let setup = start(LOCAL).await;
    setup.files.serve("/p.png", Route::ok(png(2000)));
    setup.qq.fail_next_sends(1, 1200);
    let (status, _) = post_message(
        setup.api,
        "a",
        json!({"sender": {"id": "u1", "name": "Ann"}, "segments": [
            {"type": "text", "text": "hello "},
            {"type": "image", "url": setup.files.url("/p.png")}
        ]}),
        None,
    )
    .await;
    assert_eq!(status, 202);
    let mut sends = Vec::new();
    while sends.len() < 3 {
        sends.push(setup.qq.next_action("send_group_msg").await);
    }
    let more = setup
        .qq
        .take_actions_within("send_group_msg", Duration::from_millis(500))
        .await;
    assert!(more.is_empty(), "{more:?}");
    // One group's first attempt failed: its resend is text with the placeholder.
    let resend = sends
        .iter()
        .filter(|send| send["params"]["message"].as_array().map(Vec::len) == Some(1))
        .collect::<Vec<_>>();
    assert_eq!(resend.len(), 1, "{sends:?}");
    assert_eq!(
        resend[0]["params"]["message"][0]["data"]["text"],
        "[API] Ann: hello [图片]"
    );
    setup.daemon.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_picture_at_an_internal_address_is_never_fetched_and_its_text_arrives() {
    // No `allow_hosts`: the file server on 127.0.0.1 stands for an internal service.
    let setup = start("").await;
    setup.files.serve("/metrics", Route::ok("qunbridge_up 1"));
    let (status, _) = post_message(
        setup.api,
        "a",
        json!({"sender": {"id": "u1", "name": "Ann"}, "segments": [
            {"type": "text", "text": "internal "},
            {"type": "image", "url": setup.files.url("/metrics")}
        ]}),
        None,
    )
    .await;
    assert_eq!(status, 202);
    for _ in 0..2 {
        let copy = setup.qq.next_action("send_group_msg").await;
        assert_eq!(
            copy["params"]["message"],
            json!([{"type": "text", "data": {"text": "[API] Ann: internal [图片]"}}])
        );
    }
    let text = setup.wx.next_action("send_message").await;
    assert_eq!(
        text["params"]["message"][0]["data"]["text"],
        "[API] Ann: internal [图片]"
    );
    assert_eq!(
        setup.files.total_requests(),
        0,
        "nothing asked the internal host"
    );
    let blocked = setup
        .daemon
        .counter("qunbridge_media_fetch_total{platform=\"api\",kind=\"image\",outcome=\"blocked\"}")
        .await;
    assert!(blocked >= 1.0);
    setup.daemon.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_stalled_pictures_fall_back_within_the_fetch_timeout() {
    // Unpaced destinations: what is timed is the fetch, not the platforms' limits.
    let setup = start(&format!(
        "{LOCAL}\nmax_image_bytes = \"64 KiB\"\nfetch_timeout = \"4s\"\n\n\
         [limits.wx]\nper_group = \"off\"\nper_account = \"off\"\n\n\
         [limits.qq]\nper_group = \"off\"\nper_account = \"off\"\n"
    ))
    .await;
    let mut events = SseClient::open(
        &format!("http://{}/api/v1/groups/a/events", setup.api),
        None,
        None,
    )
    .await;
    // Announces 30 MiB; and one without a length that never ends.
    setup
        .files
        .serve("/big.png", Route::ok(png(1024)).announce_length(30 << 20));
    setup.files.serve(
        "/endless.png",
        Route::ok(png(1024)).padded_to(30 << 20).chunked(),
    );
    setup
        .files
        .serve("/stalled.png", Route::ok(png(4096)).stall_after(100));
    for (n, path) in [
        (801, "/big.png"),
        (802, "/endless.png"),
        (803, "/stalled.png"),
    ] {
        let started = tokio::time::Instant::now();
        setup.qq.push_event(qq_message(
            735021844,
            5,
            n,
            "Dan",
            "Dan",
            json!([{"type": "text", "data": {"text": format!("{n} ")}}, qq_picture(&format!("{n}.png"), &setup.files.url(path))]),
        ));
        if n == 803 {
            // While that picture stalls, a message for a group it does not go to is sent at
            // once: it is not held behind the fetch.
            let (status, _) = post_message(
                setup.api,
                "a",
                json!({"sender": {"id": "u1", "name": "Ann"}, "text": "meanwhile"}),
                None,
            )
            .await;
            assert_eq!(status, 202);
            // It also goes to QQ group 111, which 803 goes to as well: whichever of the two
            // reached 111's queue first goes first there. Group 735021844 must get it.
            loop {
                let send = setup.qq.next_action("send_group_msg").await;
                assert_eq!(
                    send["params"]["message"][0]["data"]["text"], "[API] Ann: meanwhile",
                    "nothing else is sent before it"
                );
                if send["params"]["group_id"] == 735021844 {
                    break;
                }
            }
            assert!(
                !texts_of(&setup.wx.calls("send_message"))
                    .iter()
                    .any(|text| text.contains("803")),
                "the stalled picture's message is still waiting"
            );
        }
        let seen = events.next().await.json();
        assert_eq!(seen["text"], format!("[QQ] Dan: {n} [图片]"));
        let mut text = setup.wx.next_action("send_message").await;
        if text["params"]["message"][0]["data"]["text"] == "[API] Ann: meanwhile" {
            text = setup.wx.next_action("send_message").await;
        }
        assert_eq!(
            text["params"]["message"],
            json!([{"type": "text", "data": {"text": format!("[QQ] Dan: {n} [图片]")}}]),
            "{path}"
        );
        // Within fetch_timeout (4 s) and a second.
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{path}: {:?}",
            started.elapsed()
        );
        setup.qq.next_action("send_group_msg").await;
    }
    assert!(
        setup.files.body_bytes_written("/endless.png") <= (64 << 10) + (64 << 10) + (512 << 10),
        "the endless body was abandoned near the cap"
    );
    assert!(setup.wx.calls("upload_file").is_empty());
    setup.daemon.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pictures_queued_for_a_throttled_wechat_group_follow_one_merged_text_in_order() {
    let setup = start(&format!(
        "{LOCAL}\n\n[limits.wx]\nper_group = \"1/300ms\"\nburst = 1\n"
    ))
    .await;
    let pictures: Vec<Vec<u8>> = (0..4).map(|n| png(1001 + n)).collect();
    for (n, picture) in pictures.iter().enumerate() {
        setup
            .files
            .serve(&format!("/q{n}.png"), Route::ok(picture.clone()));
    }
    setup.qq.push_event(qq_message(
        735021844,
        3,
        900,
        "Eve",
        "Eve",
        json!([{"type": "text", "data": {"text": "first"}}]),
    ));
    let first = setup.wx.next_action("send_message").await;
    assert_eq!(
        first["params"]["message"][0]["data"]["text"],
        "[QQ] Eve: first"
    );
    // Four messages with a picture each, while the group waits for its limit.
    for n in 0..4 {
        setup.qq.push_event(qq_message(
            735021844,
            3,
            901 + n as i64,
            "Eve",
            "Eve",
            json!([
                {"type": "text", "data": {"text": format!("pic {n}")}},
                qq_picture(&format!("Q{n}.png"), &setup.files.url(&format!("/q{n}.png")))
            ]),
        ));
    }
    let mut sends = Vec::new();
    while sends.len() < 5 {
        sends.push(setup.wx.next_action("send_message").await);
    }
    assert_eq!(
        sends[0]["params"]["message"][0]["data"]["text"],
        "[QQ] Eve: pic 0\n[QQ] Eve: pic 1\n[QQ] Eve: pic 2\n[QQ] Eve: pic 3",
        "one merged text"
    );
    let uploads = setup.wx.calls("upload_file");
    assert_eq!(uploads.len(), 4);
    for (n, send) in sends[1..].iter().enumerate() {
        let file_id = send["params"]["message"][0]["data"]["file_id"]
            .as_str()
            .expect("a picture send");
        // The upload that gave this file id carried picture `n`.
        let index: usize = file_id
            .trim_start_matches("up-")
            .parse::<usize>()
            .expect("file id")
            - 1;
        assert_eq!(
            decoded(uploads[index]["params"]["data"].as_str().expect("data")),
            pictures[n],
            "picture {n} in order"
        );
    }
    for text in texts_of(&setup.wx.calls("send_message")) {
        assert!(!text.contains("http"), "{text}");
    }
    setup.daemon.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_picture_is_uploaded_to_wechat_while_its_message_waits_for_the_pacing_token() {
    // One send per 6 s, and the picture message takes two tokens (its text and its picture):
    // it goes 12 s after the first text, later than the patience of `next_action`, so an
    // upload made only after the tokens would not be seen in time.
    let setup = start(&format!(
        "{LOCAL}\n\n[limits.wx]\nper_group = \"1/6s\"\nburst = 1\n"
    ))
    .await;
    let picture = png(3003);
    setup.files.serve("/ahead.png", Route::ok(picture.clone()));
    // A text takes the group's token.
    setup.qq.push_event(qq_message(
        735021844,
        3,
        950,
        "Eve",
        "Eve",
        json!([{"type": "text", "data": {"text": "first"}}]),
    ));
    let first = setup.wx.next_action("send_message").await;
    assert_eq!(
        first["params"]["message"][0]["data"]["text"],
        "[QQ] Eve: first"
    );
    setup.qq.push_event(qq_message(
        735021844,
        3,
        951,
        "Eve",
        "Eve",
        json!([
            {"type": "text", "data": {"text": "look"}},
            qq_picture("AHEAD.png", &setup.files.url("/ahead.png"))
        ]),
    ));
    // The picture is uploaded at once, while its message still waits for the token: the
    // upload sent nothing into the group.
    let upload = setup.wx.next_action("upload_file").await;
    assert_eq!(
        decoded(upload["params"]["data"].as_str().expect("data")),
        picture
    );
    assert_eq!(
        setup.wx.calls("send_message").len(),
        1,
        "only the first text went out before the token"
    );
    // With the token, the text and the picture go out, with the file id of that upload; the
    // picture is not uploaded again.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(setup.wx.calls("send_message").len(), 1, "still waiting");
    let text = setup.wx.next_action("send_message").await;
    assert_eq!(
        text["params"]["message"],
        json!([{"type": "text", "data": {"text": "[QQ] Eve: look"}}])
    );
    let image = setup.wx.next_action("send_message").await;
    assert_eq!(
        image["params"]["message"],
        json!([{"type": "image", "data": {"file_id": "up-1"}}])
    );
    assert_eq!(setup.wx.calls("upload_file").len(), 1, "uploaded once");
    assert_eq!(setup.wx.calls("send_message").len(), 3, "each sent once");
    setup.daemon.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wechat_picture_larger_than_a_mebibyte_arrives_and_the_connection_stays() {
    let setup = start(LOCAL).await;
    // 1.5 MB raw is 2 MB of base64 in ComWeChatClient's `get_file` answer: over the 1 MiB
    // frame cap of accounts that do not fetch pictures.
    let picture = png(1_500_000);
    setup.wx.set_file("big1", &picture);
    setup.wx.push_event(wx_message(
        WX_BOT,
        WX_GROUP,
        "wxid_ann",
        "9101",
        json!([{"type": "image", "data": {"file_id": "big1"}}]),
    ));
    let copy = setup.qq.next_action("send_group_msg").await;
    let file = copy["params"]["message"][1]["data"]["file"]
        .as_str()
        .expect("a picture");
    assert_eq!(sha256_hex(&decoded(file)), sha256_hex(&picture));
    assert_eq!(
        setup
            .wx
            .connections
            .load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the answer did not cost the connection"
    );
    setup.daemon.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pictures_without_a_source_or_of_an_unknown_kind_are_counted_and_relayed_as_text() {
    let setup = start(LOCAL).await;
    // A QQ picture segment with neither URL nor file.
    setup.qq.push_event(qq_message(
        735021844,
        4,
        1001,
        "Fay",
        "Fay",
        json!([{"type": "text", "data": {"text": "odd "}}, {"type": "image", "data": {}}]),
    ));
    let text = setup.wx.next_action("send_message").await;
    assert_eq!(
        text["params"]["message"],
        json!([{"type": "text", "data": {"text": "[QQ] Fay: odd [图片]"}}])
    );
    // An `api` client's picture of a kind and locator this version does not know.
    let (status, _) = post_message(
        setup.api,
        "a",
        json!({"sender": {"id": "u1", "name": "Ann"}, "segments": [
            {"type": "text", "text": "future "},
            {"type": "image", "media": {"key": "api:hub:z", "kind": "hologram",
                                        "locator": {"via": "carrier_pigeon", "leg": 1}}}
        ]}),
        None,
    )
    .await;
    assert_eq!(status, 202);
    let text = setup.wx.next_action("send_message").await;
    assert_eq!(
        text["params"]["message"],
        json!([{"type": "text", "data": {"text": "[API] Ann: future [图片]"}}])
    );
    let unknown = setup
        .daemon
        .counter(
            "qunbridge_media_fallback_total{platform=\"wechat\",kind=\"image\",reason=\"unknown\"}",
        )
        .await;
    assert!(unknown >= 1.0, "counted");
    assert!(setup.wx.calls("upload_file").is_empty());
    assert_eq!(
        setup
            .qq
            .connections
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    setup.daemon.stop().await.expect("clean stop");
}
