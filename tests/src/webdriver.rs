//! A small W3C WebDriver client over `reqwest` (already this harness's HTTP client) that
//! drives Debian's headless `chromium` through `chromedriver`: open a page, find elements,
//! read text and attributes, click, run a script, take a screenshot. The WebDriver client
//! crates pull in a second TLS provider (aws-lc) that would change the daemon's own rustls
//! build through feature unification; the protocol needs nothing but JSON over HTTP.
//!
//! A machine without `chromium` or `chromedriver` fails the test that asks for a browser
//! with a message saying what to install (`.ci/run` installs both), never a silent pass.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};

use crate::process::KillOnDrop;
use crate::{free_port, PATIENCE};

/// The key W3C WebDriver names an element reference by.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Where Debian puts the browser and its driver.
const CHROMIUM: &str = "/usr/bin/chromium";
/// Debian's `chromium-driver`.
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A headless Chromium session; the browser and the driver end when dropped.
pub struct Browser {
    /// The driver's base URL.
    base: String,
    /// The session's id.
    session: String,
    /// HTTP client of the driver.
    http: reqwest::Client,
    /// The driver process (it ends the browser with the session).
    _driver: KillOnDrop,
}

/// An element of the current page.
#[derive(Debug, Clone)]
pub struct Element(String);

impl Browser {
    /// Starts `chromedriver` and a headless Chromium session with a 1280×900 window.
    ///
    /// # Panics
    /// When `chromium` or `chromedriver` is not installed (with what to install), or the
    /// session cannot be opened.
    pub async fn start() -> Browser {
        for (path, package) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
            assert!(
                Path::new(path).exists(),
                "{path} is missing: the console tests drive a real browser; install it with \
                 `apt-get install -y chromium chromium-driver` (.ci/run does) — package {package}"
            );
        }
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let driver = KillOnDrop(driver);
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client");
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let ready = http.get(format!("{base}/status")).send().await;
            if let Ok(response) = ready {
                let status: Value = response.json().await.unwrap_or(Value::Null);
                if status["value"]["ready"] == true {
                    break;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "chromedriver not ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1280,900", "--lang=en-US", "--no-first-run",
                    "--disable-extensions", "--disable-background-networking"
                ],
                "prefs": { "intl.accept_languages": "en-US,en" }
            }
        }}});
        let answer: Value = http
            .post(format!("{base}/session"))
            .json(&capabilities)
            .send()
            .await
            .expect("new session")
            .json()
            .await
            .expect("session JSON");
        let session = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {answer}"))
            .to_owned();
        Browser {
            base,
            session,
            http,
            _driver: driver,
        }
    }

    /// A command of this session: `method` on `path` (after `/session/<id>`), with `body`.
    async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut request = self.http.request(method, &url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"))
            .json()
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        if answer["value"]["error"].is_string() {
            panic!("WebDriver {path}: {}", answer["value"]);
        }
        answer["value"].clone()
    }

    /// Opens `url` and waits for it to load.
    pub async fn goto(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    /// The elements matching a CSS selector, now.
    pub async fn find_all(&self, css: &str) -> Vec<Element> {
        let found = self
            .command(
                reqwest::Method::POST,
                "/elements",
                Some(json!({ "using": "css selector", "value": css })),
            )
            .await;
        found
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e[ELEMENT_KEY].as_str().map(|id| Element(id.to_owned())))
            .collect()
    }

    /// The first element matching a CSS selector, waiting up to [`PATIENCE`] for it.
    pub async fn find(&self, css: &str) -> Element {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Some(element) = self.find_all(css).await.into_iter().next() {
                return element;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no element {css:?} on the page"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// An element's visible text.
    pub async fn text(&self, element: &Element) -> String {
        self.command(
            reqwest::Method::GET,
            &format!("/element/{}/text", element.0),
            None,
        )
        .await
        .as_str()
        .unwrap_or("")
        .to_owned()
    }

    /// An element's attribute (`None` when absent).
    pub async fn attribute(&self, element: &Element, name: &str) -> Option<String> {
        self.command(
            reqwest::Method::GET,
            &format!("/element/{}/attribute/{name}", element.0),
            None,
        )
        .await
        .as_str()
        .map(str::to_owned)
    }

    /// Clicks an element.
    pub async fn click(&self, element: &Element) {
        self.command(
            reqwest::Method::POST,
            &format!("/element/{}/click", element.0),
            Some(json!({})),
        )
        .await;
    }

    /// Types `text` into an element.
    pub async fn type_into(&self, element: &Element, text: &str) {
        self.command(
            reqwest::Method::POST,
            &format!("/element/{}/value", element.0),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// Runs `script` (a function body; `arguments` are `args`; a returned promise is
    /// awaited) and returns its value.
    pub async fn execute(&self, script: &str, args: Value) -> Value {
        self.command(
            reqwest::Method::POST,
            "/execute/async",
            Some(json!({
                "script": format!(
                    "const done = arguments[arguments.length - 1];\
                     Promise.resolve((async function () {{ {script} }}).apply(null, Array.prototype.slice.call(arguments, 0, -1)))\
                     .then(done, e => done({{ error: String(e) }}));"
                ),
                "args": args,
            })),
        )
        .await
    }

    /// The handle of the current window (tab).
    pub async fn window(&self) -> String {
        self.command(reqwest::Method::GET, "/window", None)
            .await
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    /// Opens a new tab and switches to it (the previous tab goes to the background, hidden);
    /// returns its handle.
    pub async fn new_tab(&self) -> String {
        let opened = self
            .command(
                reqwest::Method::POST,
                "/window/new",
                Some(json!({ "type": "tab" })),
            )
            .await;
        let handle = opened["handle"].as_str().unwrap_or("").to_owned();
        self.switch_to(&handle).await;
        handle
    }

    /// Switches to the window (tab) `handle`.
    pub async fn switch_to(&self, handle: &str) {
        self.command(
            reqwest::Method::POST,
            "/window",
            Some(json!({ "handle": handle })),
        )
        .await;
    }

    /// Closes the current window (tab).
    pub async fn close_window(&self) {
        self.command(reqwest::Method::DELETE, "/window", None).await;
    }

    /// The current URL.
    pub async fn url(&self) -> String {
        self.command(reqwest::Method::GET, "/url", None)
            .await
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    /// Writes a PNG of the window to `dir/<name>.png` and returns its path.
    pub async fn screenshot(&self, dir: &Path, name: &str) -> PathBuf {
        let data = self
            .command(reqwest::Method::GET, "/screenshot", None)
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().unwrap_or(""))
            .expect("a base64 PNG");
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }

    /// Ends the session (and the browser).
    pub async fn close(self) {
        let _ = self
            .http
            .delete(format!("{}/session/{}", self.base, self.session))
            .send()
            .await;
    }
}
