//! The operator console (issue 19) end to end: the daemon as its own process with two QQ
//! accounts (scripted NapCat peers over real WebSockets) in one link, its admin endpoint on a
//! non-loopback address with `admin.token`, and Debian's headless Chromium driven over
//! WebDriver. The browser signs in, sees both accounts' states and one turn to down without a
//! reload when its peer stops, reads the links, the group-health charts (one point per day
//! for 28 days) and the CSV, and releases and drops held messages; a page in a background tab
//! asks nothing (the held page's polls and the overview's event stream stop while hidden).
//! Without the token every
//! page and `/api/v1/*` route answers 401, a cross-origin POST is refused, and the overview
//! weighs under 200 KB. (The idle daemon's CPU is measured by `qunbridge-bench --only idle`,
//! not asserted as a time here.)
//!
//! Screenshots of every page go to `$TMPDIR/qunbridge-console-screenshots/` (the path is
//! printed).

use std::path::PathBuf;
use std::time::Duration;

use qunbridge::stats::report::CSV_HEADER;
use qunbridge_tests::onebot11_peer::{group_message, OneBot11Peer};
use qunbridge_tests::process::DaemonProcess;
use qunbridge_tests::webdriver::Browser;
use qunbridge_tests::{qunbridge_binary, Broker, PATIENCE};
use serde_json::{json, Value};

/// The first bot's QQ number (account `qq-a`).
const BOT_A: i64 = 2854196310;
/// The second bot's QQ number (account `qq-b`).
const BOT_B: i64 = 2854196320;
/// `qq-a`'s group.
const GROUP_A: i64 = 735021844;
/// `qq-b`'s group.
const GROUP_B: i64 = 735021900;
/// A member who speaks in `qq-a`'s group.
const MEMBER: i64 = 1437420188;
/// The admin token.
const TOKEN: &str = "console-test-token-0123456789";
/// Largest overview transfer the issue allows.
const MOST_BYTES: usize = 200 * 1024;

/// Two QQ accounts linked, unpaced; the `ads` word list holds messages bound for `qq-b`.
fn config(broker: &Broker, a: &str, b: &str) -> String {
    format!(
        r#"{broker}
[accounts.qq-a]
platform = "qq"
url = "{a}"
self_id = "{BOT_A}"

[accounts.qq-b]
platform = "qq"
url = "{b}"
self_id = "{BOT_B}"

[[links]]
name = "fans"
groups = ["qq-a:{GROUP_A}", "qq-b:{GROUP_B}"]

[limits.qq-a]
per_group = "off"
per_account = "off"

[limits.qq-b]
per_group = "off"
per_account = "off"

[moderation.lists.ads]
words = ["兼职刷单"]

[filters.qq-b]
rules = [{{ match = "words", list = "ads", action = "hold" }}]

[stats.aliases]
"qq-a:{GROUP_A}" = "fans-a"
"qq-b:{GROUP_B}" = "fans-b"
"#,
        broker = broker.toml()
    )
}

/// A text message of [`MEMBER`] in `qq-a`'s group, said now.
fn said(message_id: i64, text: &str) -> Value {
    let mut event = group_message(
        GROUP_A,
        MEMBER,
        message_id,
        "Alice",
        "alice",
        json!([{"type": "text", "data": {"text": text}}]),
    );
    event["self_id"] = json!(BOT_A);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    event["time"] = json!(now);
    event
}

/// Where the screenshots go (kept after the test, for a reviewer).
fn screenshot_dir() -> PathBuf {
    let dir = std::env::temp_dir().join("qunbridge-console-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

/// Two peers, the daemon (admin on 0.0.0.0 with the token) and both accounts up.
async fn start(
    dir: &std::path::Path,
) -> (
    DaemonProcess,
    std::sync::Arc<OneBot11Peer>,
    std::sync::Arc<OneBot11Peer>,
) {
    let broker = Broker::embedded();
    let (a, a_url) = OneBot11Peer::serve(BOT_A, None, 0).await;
    let (b, b_url) = OneBot11Peer::serve(BOT_B, None, 0).await;
    let daemon = DaemonProcess::start_guarded(dir, &config(&broker, &a_url, &b_url), TOKEN).await;
    a.wait_connections(1).await;
    b.wait_connections(1).await;
    (daemon, a, b)
}

/// Texts `qq-b`'s peer was asked to send that contain `needle`.
fn sent_to_b(b: &OneBot11Peer, needle: &str) -> usize {
    b.sent_texts().iter().filter(|t| t.contains(needle)).count()
}

/// Waits until `done` holds, or fails naming `what`.
async fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `data-state` of an account's row on the overview, now (read in one script: the
/// rows are redrawn every 2 s).
async fn state_on_page(browser: &Browser, account: &str) -> Option<String> {
    browser
        .execute(
            "const row = document.querySelector(`#accounts tr[data-account=\"${arguments[0]}\"]`);\
             return row ? row.getAttribute('data-state') : null;",
            json!([account]),
        )
        .await
        .as_str()
        .map(str::to_owned)
}

/// The ids and texts of the rows of the held page, now (read in one script).
async fn held_rows(browser: &Browser) -> Vec<(String, String)> {
    let rows = browser
        .execute(
            "return Array.from(document.querySelectorAll('#held-rows tr[data-id]'))\
               .map(row => [row.getAttribute('data-id'), row.innerText]);",
            json!([]),
        )
        .await;
    rows.as_array()
        .into_iter()
        .flatten()
        .map(|row| {
            (
                row[0].as_str().unwrap_or("").to_owned(),
                row[1].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_accounts_links_health_and_held_messages_in_a_browser() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (daemon, a, b) = start(dir.path()).await;
    let shots = screenshot_dir();
    let base = format!("http://{}", daemon.admin);

    // Two messages the `ads` list holds for qq-b, and a clean one that goes through.
    a.push_event(said(101, "r1 兼职刷单日结"));
    a.push_event(said(102, "d1 兼职刷单日结"));
    a.push_event(said(103, "clean hello"));
    wait_until("the clean message reached qq-b", PATIENCE, || {
        sent_to_b(&b, "clean hello") == 1
    })
    .await;
    assert_eq!(sent_to_b(&b, "r1"), 0, "held, not sent");

    let browser = Browser::start().await;

    // Signing in: the page answers with the login form, the token sets the cookie.
    browser.goto(&format!("{base}/?lang=en")).await;
    let token_input = browser.find("input[name=token]").await;
    browser.type_into(&token_input, TOKEN).await;
    browser
        .click(&browser.find("form[action='/login'] button").await)
        .await;
    browser.find("#accounts").await;

    // Overview: both accounts, up, from the server-rendered page.
    for account in ["qq-a", "qq-b"] {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while state_on_page(&browser, account).await.as_deref() != Some("up") {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{account} never up on the page"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let broker_text = browser
        .text(&browser.find("[data-field=broker]").await)
        .await;
    assert_eq!(broker_text, "connected");
    let page_text = browser.text(&browser.find("main").await).await;
    assert!(
        !page_text.contains(&GROUP_A.to_string()),
        "no group id on the overview"
    );
    assert!(
        !page_text.contains(&GROUP_B.to_string()),
        "no group id on the overview"
    );
    // What the overview weighs: the page and everything it loaded (the script's first poll
    // comes 2 s later).
    let weights = browser
        .execute(
            "const nav = performance.getEntriesByType('navigation')[0];\
             const res = performance.getEntriesByType('resource');\
             return { nav: nav.transferSize, body: nav.encodedBodySize,\
                      resources: res.map(r => [r.name, r.transferSize, r.encodedBodySize]) };",
            json!([]),
        )
        .await;
    let resources = weights["resources"].as_array().cloned().unwrap_or_default();
    assert!(
        resources
            .iter()
            .any(|r| r[0].as_str().is_some_and(|n| n.ends_with("console.css")))
            && resources
                .iter()
                .any(|r| r[0].as_str().is_some_and(|n| n.ends_with("console.js"))),
        "the overview loads its stylesheet and script: {weights}"
    );
    // A resource the login page already loaded comes from the cache (transfer size 0): its
    // encoded size counts instead, as a first visit would transfer it.
    let total: u64 = weights["nav"].as_u64().unwrap_or(0)
        + resources
            .iter()
            .map(|r| r[1].as_u64().unwrap_or(0).max(r[2].as_u64().unwrap_or(0)))
            .sum::<u64>();
    assert!(weights["body"].as_u64().unwrap_or(0) > 0, "{weights}");
    assert!(
        (total as usize) < MOST_BYTES,
        "the overview transferred {total} bytes: {weights}"
    );
    println!("overview transfer size in the browser: {total} bytes");
    let path = browser.screenshot(&shots, "overview").await;
    println!("screenshot: {}", path.display());

    // Links: both groups by alias, the destination's rules as `check` prints them.
    browser.goto(&format!("{base}/links")).await;
    let links = browser.text(&browser.find("section.link").await).await;
    assert!(
        links.contains("fans-a") && links.contains("fans-b"),
        "{links}"
    );
    assert!(links.contains("pacing: per group unlimited"), "{links}");
    assert!(
        links.contains("word rules: ads (1 entry) -> hold"),
        "{links}"
    );
    assert!(
        !links.contains(&GROUP_B.to_string()),
        "no group id on the links page"
    );
    browser.screenshot(&shots, "links").await;

    // Group health: 28 days, one point a day in each chart; the CSV is the CLI's.
    browser.goto(&format!("{base}/health")).await;
    let card = browser.find("section.group[data-alias=fans-a]").await;
    let points = browser
        .find_all("section.group[data-alias=fans-a] svg.messages circle")
        .await;
    assert_eq!(points.len(), 28, "one point per day for 28 days");
    let mut days = Vec::new();
    for point in &points {
        days.push(
            browser
                .attribute(point, "data-day")
                .await
                .unwrap_or_default(),
        );
    }
    let mut unique = days.clone();
    unique.dedup();
    assert_eq!(unique.len(), 28, "28 different days: {days:?}");
    let joins_leaves = browser
        .find_all("section.group[data-alias=fans-a] svg.members circle")
        .await;
    assert_eq!(joins_leaves.len(), 56, "joins and leaves, 28 days each");
    let card_text = browser.text(&card).await;
    assert!(
        !card_text.contains(&GROUP_A.to_string()),
        "no group id on the list"
    );
    let csv = browser
        .execute(
            "const link = document.querySelector('a[download]');\
             const r = await fetch(link.href);\
             const bytes = new Uint8Array(await r.arrayBuffer());\
             return { first: Array.from(bytes.slice(0, 3)),\
                      text: new TextDecoder('utf-8', { ignoreBOM: true }).decode(bytes),\
                      disposition: r.headers.get('content-disposition'),\
                      type: r.headers.get('content-type') };",
            json!([]),
        )
        .await;
    assert_eq!(
        csv["first"],
        json!([0xEF, 0xBB, 0xBF]),
        "the CSV starts with the BOM: {csv}"
    );
    let text = csv["text"].as_str().unwrap_or("");
    assert_eq!(
        text.trim_start_matches('\u{feff}').lines().next(),
        Some(CSV_HEADER),
        "{csv}"
    );
    assert!(
        csv["disposition"]
            .as_str()
            .is_some_and(|d| d.starts_with("attachment")),
        "{csv}"
    );
    assert_eq!(csv["type"], "text/csv; charset=utf-8");
    browser.screenshot(&shots, "health").await;
    // The detail page is where the group's id shows.
    browser
        .click(&browser.find("section.group[data-alias=fans-a] h2 a").await)
        .await;
    let detail = browser.text(&browser.find("p.ids").await).await;
    assert!(detail.contains(&GROUP_A.to_string()), "{detail}");
    browser.screenshot(&shots, "health-detail").await;

    // Held for review: both held messages; Release delivers once, Drop never.
    browser.goto(&format!("{base}/held")).await;
    browser.find("#held-rows tr[data-id]").await;
    let rows = held_rows(&browser).await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    for (_, text) in &rows {
        assert!(
            text.contains("fans-b") && text.contains("ads") && text.contains("Alice"),
            "{text}"
        );
        assert!(!text.contains(&GROUP_B.to_string()), "{text}");
    }
    browser.screenshot(&shots, "held").await;

    // Nothing while the tab is hidden: the held page polls every 2 s when visible, and not
    // once while another tab is in front.
    browser
        .execute(
            "window.qbVisible = 0; window.qbHidden = 0; window.qbWentHidden = false;\
             const original = window.fetch;\
             window.fetch = function () {\
               if (document.hidden) { window.qbHidden++; } else { window.qbVisible++; }\
               return original.apply(this, arguments);\
             };\
             document.addEventListener('visibilitychange', () => {\
               if (document.hidden) { window.qbWentHidden = true; }\
             });\
             return true;",
            json!([]),
        )
        .await;
    let held_tab = browser.window().await;
    tokio::time::sleep(Duration::from_millis(4500)).await;
    browser.new_tab().await;
    tokio::time::sleep(Duration::from_millis(4500)).await;
    browser.close_window().await;
    browser.switch_to(&held_tab).await;
    let polls = browser
        .execute(
            "return [window.qbVisible, window.qbHidden, window.qbWentHidden];",
            json!([]),
        )
        .await;
    assert_eq!(polls[2], true, "the tab went to the background: {polls}");
    assert!(
        polls[0].as_u64().unwrap_or(0) >= 2,
        "polls while visible: {polls}"
    );
    assert_eq!(polls[1], 0, "no request while hidden: {polls}");
    println!(
        "held page requests: {} visible in 4.5 s, {} hidden in 4.5 s",
        polls[0], polls[1]
    );

    let release = rows
        .iter()
        .find(|(_, t)| t.contains("r1"))
        .expect("r1 held")
        .0
        .clone();
    let dropped = rows
        .iter()
        .find(|(_, t)| t.contains("d1"))
        .expect("d1 held")
        .0
        .clone();
    browser
        .click(
            &browser
                .find(&format!(
                    "button[data-action=release][data-id=\"{release}\"]"
                ))
                .await,
        )
        .await;
    wait_until("the released message reached qq-b", PATIENCE, || {
        sent_to_b(&b, "r1") >= 1
    })
    .await;
    let result = browser.find("#held-result[data-outcome]").await;
    assert_eq!(
        browser.attribute(&result, "data-outcome").await.as_deref(),
        Some("released")
    );
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while held_rows(&browser)
        .await
        .iter()
        .any(|(id, _)| *id == release)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the released row stays"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    browser
        .click(
            &browser
                .find(&format!("button[data-action=drop][data-id=\"{dropped}\"]"))
                .await,
        )
        .await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !held_rows(&browser).await.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the dropped row stays"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let outcome = browser
        .attribute(&browser.find("#held-result").await, "data-outcome")
        .await;
    assert_eq!(outcome.as_deref(), Some("dropped"));
    // A marker after both: by the time it arrives, a wrongly sent d1 would have too.
    a.push_event(said(104, "marker after"));
    wait_until("the marker reached qq-b", PATIENCE, || {
        sent_to_b(&b, "marker after") == 1
    })
    .await;
    assert_eq!(
        sent_to_b(&b, "r1"),
        1,
        "released exactly once: {:?}",
        b.sent_texts()
    );
    assert_eq!(
        sent_to_b(&b, "d1"),
        0,
        "dropped, never sent: {:?}",
        b.sent_texts()
    );

    // Stopping qq-b's peer turns it down on the open overview, without a reload.
    browser.goto(&format!("{base}/")).await;
    browser
        .find("#accounts tr[data-account=qq-b][data-state=up]")
        .await;
    browser
        .execute("window.qbMarker = 'same page'; return true;", json!([]))
        .await;
    // The event stream closes while the tab is hidden and opens again when it is back.
    browser
        .execute(
            "window.qbClosedHidden = null; window.qbOpened = 0;\
             const close = EventSource.prototype.close;\
             EventSource.prototype.close = function () {\
               window.qbClosedHidden = document.hidden; return close.apply(this, arguments);\
             };\
             const Original = window.EventSource;\
             window.EventSource = function (url) { window.qbOpened++; return new Original(url); };\
             return true;",
            json!([]),
        )
        .await;
    let overview_tab = browser.window().await;
    browser.new_tab().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    browser.close_window().await;
    browser.switch_to(&overview_tab).await;
    let stream = browser
        .execute(
            "return [window.qbClosedHidden, window.qbOpened];",
            json!([]),
        )
        .await;
    assert_eq!(
        stream,
        json!([true, 1]),
        "closed when hidden, opened again when shown"
    );
    let stopped = tokio::time::Instant::now();
    b.stop();
    loop {
        if state_on_page(&browser, "qq-b").await.as_deref() == Some("down") {
            break;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(5),
            "qq-b not down on the page within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "qq-b shown down {:?} after its peer stopped",
        stopped.elapsed()
    );
    let marker = browser
        .execute("return window.qbMarker || null;", json!([]))
        .await;
    assert_eq!(marker, "same page", "the page was not reloaded");
    assert_eq!(state_on_page(&browser, "qq-a").await.as_deref(), Some("up"));
    browser.screenshot(&shots, "overview-account-down").await;

    // In Chinese, by the switch.
    browser.goto(&format!("{base}/?lang=zh")).await;
    let heading = browser
        .text(&browser.find("nav a[aria-current=page]").await)
        .await;
    assert_eq!(heading, "概览");
    browser.goto(&format!("{base}/held")).await;
    let nav = browser.text(&browser.find("nav").await).await;
    assert!(nav.contains("待审核"), "the language is remembered: {nav}");
    browser.screenshot(&shots, "held-zh").await;
    browser.close().await;
    println!("screenshots of every page: {}", shots.display());
    drop(daemon);
}

/// Every console page and `/api/v1/*` route answers 401 without the token on a non-loopback
/// admin address; the token opens them (as a bearer or the login cookie); a cross-origin
/// POST is refused even with the token; and `qunbridge status -c` presents the config's
/// token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_token_nothing_opens_and_cross_origin_posts_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (daemon, _a, _b) = start(dir.path()).await;
    let base = format!("http://{}", daemon.admin);
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let pages = [
        "/",
        "/links",
        "/health",
        "/health/fans-a",
        "/health.csv",
        "/held",
    ];
    let api = [
        "/api/v1/status",
        "/api/v1/status/events",
        "/api/v1/stats",
        "/api/v1/held",
    ];
    let posts = ["/api/v1/held/nope/release", "/api/v1/held/nope/drop"];
    for path in pages.iter().chain(&api) {
        let none = http.get(format!("{base}{path}")).send().await.expect("GET");
        assert_eq!(none.status(), 401, "GET {path} without the token");
        let wrong = http
            .get(format!("{base}{path}"))
            .bearer_auth("console-test-token-0123456780")
            .send()
            .await
            .expect("GET");
        assert_eq!(wrong.status(), 401, "GET {path} with a wrong token");
        let right = http
            .get(format!("{base}{path}"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("GET");
        assert_eq!(right.status(), 200, "GET {path} with the token");
    }
    for path in posts {
        let none = http
            .post(format!("{base}{path}"))
            .send()
            .await
            .expect("POST");
        assert_eq!(none.status(), 401, "POST {path} without the token");
    }
    // The open endpoints stay open (Prometheus, probes).
    for path in ["/healthz", "/readyz", "/metrics"] {
        let open = http.get(format!("{base}{path}")).send().await.expect("GET");
        assert_eq!(open.status(), 200, "{path}");
    }
    let login_page = http.get(format!("{base}/")).send().await.expect("GET");
    assert!(login_page
        .text()
        .await
        .expect("body")
        .contains("name=\"token\""));

    // The login form: a wrong token gets the form again, the right one the cookie.
    let wrong = http
        .post(format!("{base}/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("token=nope&next=%2Fheld")
        .send()
        .await
        .expect("login");
    assert_eq!(wrong.status(), 401);
    assert!(wrong.headers().get("set-cookie").is_none());
    let login = http
        .post(format!("{base}/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={TOKEN}&next=%2Fheld"))
        .send()
        .await
        .expect("login");
    assert_eq!(login.status(), 303);
    assert_eq!(login.headers()["location"], "/held");
    let set_cookie = login.headers()["set-cookie"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"),
        "{set_cookie}"
    );
    assert!(!set_cookie.contains(TOKEN), "the cookie is not the token");
    let cookie = set_cookie.split(';').next().expect("pair").to_owned();
    for path in pages.iter().chain(&api) {
        let with_cookie = http
            .get(format!("{base}{path}"))
            .header("cookie", &cookie)
            .send()
            .await
            .expect("GET");
        assert_eq!(with_cookie.status(), 200, "GET {path} with the cookie");
    }

    // State-changing requests from another origin are refused, whatever they carry.
    let host = daemon.admin.to_string();
    let evil = [
        ("origin", "http://evil.example"),
        ("referer", "http://evil.example/x"),
    ];
    for (name, value) in evil {
        for path in posts {
            let with_cookie = http
                .post(format!("{base}{path}"))
                .header("cookie", &cookie)
                .header(name, value)
                .send()
                .await
                .expect("POST");
            assert_eq!(
                with_cookie.status(),
                403,
                "{name}: {value} with the cookie on {path}"
            );
            let with_token = http
                .post(format!("{base}{path}"))
                .bearer_auth(TOKEN)
                .header(name, value)
                .send()
                .await
                .expect("POST");
            assert_eq!(
                with_token.status(),
                403,
                "{name}: {value} with the token on {path}"
            );
        }
    }
    // A cookie without any origin is not trusted to change anything; from this origin it
    // reaches the handler (404: nothing is held under that id); the bearer alone too.
    let bare = http
        .post(format!("{base}/api/v1/held/nope/release"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("POST");
    assert_eq!(bare.status(), 403);
    let same = http
        .post(format!("{base}/api/v1/held/nope/release"))
        .header("cookie", &cookie)
        .header("origin", format!("http://{host}"))
        .send()
        .await
        .expect("POST");
    assert_eq!(same.status(), 404);
    let bearer = http
        .post(format!("{base}/api/v1/held/nope/drop"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("POST");
    assert_eq!(bearer.status(), 404);

    // What the overview weighs over HTTP: the page, its stylesheet and script.
    let overview = http
        .get(format!("{base}/"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("GET /");
    assert_eq!(
        overview.headers()["content-type"],
        "text/html; charset=utf-8"
    );
    assert_eq!(overview.headers()["cache-control"], "no-store");
    let page = overview.text().await.expect("page");
    let mut total = page.len();
    for asset in page
        .split('"')
        .filter(|part| part.starts_with("/assets/"))
        .map(str::to_owned)
        .collect::<Vec<_>>()
    {
        let response = http
            .get(format!("{base}{asset}"))
            .send()
            .await
            .expect("asset");
        assert_eq!(response.status(), 200, "{asset}");
        let cache = response.headers()["cache-control"]
            .to_str()
            .expect("ascii")
            .to_owned();
        assert!(cache.contains("immutable"), "{asset}: {cache}");
        let kind = response.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .to_owned();
        assert!(
            (asset.ends_with(".css") && kind.starts_with("text/css"))
                || (asset.ends_with(".js") && kind.starts_with("text/javascript")),
            "{asset}: {kind}"
        );
        total += response.bytes().await.expect("body").len();
    }
    assert!(
        total > 1000 && total < MOST_BYTES,
        "the overview is {total} bytes"
    );
    println!("overview with its assets: {total} bytes");

    // `qunbridge status -c` reads the admin address and token from the config.
    let status = std::process::Command::new(qunbridge_binary())
        .arg("status")
        .arg("-c")
        .arg(dir.path().join("qunbridge.toml"))
        .output()
        .expect("qunbridge status runs");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(String::from_utf8_lossy(&status.stdout).contains("qq-a"));
}

/// On loopback without a token the console is open, but only to requests that name a
/// loopback host (a DNS-rebinding page names its own), and a cross-origin POST is refused
/// there too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_loopback_the_console_is_open_to_loopback_names_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::embedded();
    let (a, a_url) = OneBot11Peer::serve(BOT_A, None, 0).await;
    let (b, b_url) = OneBot11Peer::serve(BOT_B, None, 0).await;
    let daemon = DaemonProcess::start(dir.path(), &config(&broker, &a_url, &b_url)).await;
    a.wait_connections(1).await;
    b.wait_connections(1).await;
    let base = format!("http://{}", daemon.admin);
    let http = reqwest::Client::new();
    for path in ["/", "/held", "/api/v1/status"] {
        let open = http.get(format!("{base}{path}")).send().await.expect("GET");
        assert_eq!(open.status(), 200, "{path}");
        let rebound = http
            .get(format!("{base}{path}"))
            .header("host", "evil.example:80")
            .send()
            .await
            .expect("GET");
        assert_eq!(rebound.status(), 403, "{path} for another host name");
    }
    let page = http
        .get(format!("{base}/"))
        .header("accept-language", "zh-CN,zh;q=0.9,en;q=0.5")
        .send()
        .await
        .expect("GET");
    assert!(
        page.text().await.expect("page").contains("概览"),
        "Chinese by Accept-Language"
    );
    let cross = http
        .post(format!("{base}/api/v1/held/nope/drop"))
        .header("origin", "http://evil.example")
        .send()
        .await
        .expect("POST");
    assert_eq!(cross.status(), 403);
    // `qunbridge moderation` (no origin, no token) still works on loopback.
    let cli = http
        .post(format!("{base}/api/v1/held/nope/drop"))
        .send()
        .await
        .expect("POST");
    assert_eq!(
        cli.status(),
        404,
        "reaches the handler: nothing held under that id"
    );
}
