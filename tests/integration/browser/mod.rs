//! Real-browser tests: the real tessera binary, driven by headless Chromium
//! over WebDriver (`chromedriver`), as a person would use it.
//!
//! The harness here starts tessera on a free loopback port, a chromedriver
//! beside it, and one Chromium per browser profile (each with its own
//! fresh user-data directory, so two people's cookies never mix), with
//! JavaScript on or off. Every wait is bounded; every process started is
//! stopped on drop. Each page a test looks at is saved as a screenshot under
//! the build directory (`browser-screenshots/<test>/`) for a person to
//! review; screenshots are never committed.
//!
//! Chromium and chromedriver are required, never optional: a machine
//! without them fails these tests with a message saying what to install
//! (`.ci/run` installs Debian's `chromium` and `chromium-driver`).

mod cross_site;
mod passkeys;
mod prompts;
mod story;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::response::IntoResponse;
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use crate::helpers;

/// The longest any single step (a page load, a process starting) may take.
pub const STEP: Duration = Duration::from_secs(30);
/// The longest a whole browser test may take.
pub const WHOLE_TEST: Duration = Duration::from_secs(300);

/// Browser tests take turns: each runs several Chromium processes, and
/// the machines they run on are small. Other integration tests still run
/// beside them.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Run a browser test's body with the whole test bounded in time.
pub async fn bounded<F: std::future::Future<Output = ()>>(body: F) {
    let _turn = TURN.lock().await;
    let started = Instant::now();
    tokio::time::timeout(WHOLE_TEST, body)
        .await
        .unwrap_or_else(|_| panic!("the browser test took longer than {WHOLE_TEST:?}"));
    eprintln!("browser test finished in {:.1?}", started.elapsed());
}

/// Poll `ready` every 50 ms until it answers `Some`, for at most `limit`.
pub async fn poll<T, F, Fut>(what: &str, limit: Duration, mut ready: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = ready().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One WebDriver command, bounded: a browser that stops answering fails
/// the test at the step that hung, saying which.
pub async fn step<T, E: std::fmt::Display>(
    what: impl std::fmt::Display,
    command: impl std::future::Future<Output = Result<T, E>>,
) -> T {
    match tokio::time::timeout(STEP, command).await {
        Ok(Ok(value)) => value,
        Ok(Err(e)) => panic!("{what}: {e}"),
        Err(_) => panic!("{what}: no answer within {STEP:?}"),
    }
}

/// The same, for commands whose failure is an answer (absent elements,
/// stale pages).
pub async fn try_step<T, E>(
    what: impl std::fmt::Display,
    command: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, E> {
    tokio::time::timeout(STEP, command)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {STEP:?}"))
}

/// The first of `names` found on `PATH`.
pub(crate) fn program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// A loopback port nobody listens on right now.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The real tessera binary on a free loopback port, over a fresh data
/// directory, logging each request's method, path and status to a file so
/// a test can tell which requests reached it and how they were answered.
pub struct Tessera {
    server: helpers::Server,
    pub base: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// One request as tessera's log recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    pub method: String,
    pub path: String,
    pub status: u16,
}

impl Tessera {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// The same, with more `serve` flags.
    pub fn start_with(args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let log = dir.path().join("tessera.log");
        let file = std::fs::File::create(&log).expect("the log file");
        let mut cmd = helpers::command(&dir.path().join("data"));
        // tower_http's response events carry the status; the span, the
        // method and path (never headers or bodies).
        cmd.env("RUST_LOG", "tessera=info,tower_http=debug")
            .args(args)
            .stderr(Stdio::from(file));
        let server = helpers::spawn(cmd);
        let base = format!("http://{}", server.addr);
        Self {
            server,
            base,
            log,
            _dir: dir,
        }
    }

    /// The same, as people reach it at `http://localhost:<port>`, with
    /// `--public-url` saying so: the origin passkeys are bound to (browsers
    /// allow WebAuthn over plain HTTP only on localhost).
    pub fn start_at_localhost() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let log = dir.path().join("tessera.log");
        let file = std::fs::File::create(&log).expect("the log file");
        let port = free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera"));
        cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data"])
            .arg(dir.path().join("data"))
            .args(["--public-url", &format!("http://localhost:{port}")])
            .env_remove("TESSERA_LISTEN")
            .env_remove("TESSERA_DATA")
            .env_remove("TESSERA_PUBLIC_URL")
            .env("RUST_LOG", "tessera=info,tower_http=debug")
            .stderr(Stdio::from(file));
        let server = helpers::spawn(cmd);
        let base = format!("http://localhost:{}", server.addr.port());
        Self {
            server,
            base,
            log,
            _dir: dir,
        }
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.server.addr
    }

    /// The JSON API, with a bearer token (no cookie, so no CSRF involved).
    pub fn api(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        helpers::http(self.server.addr, method, path, token, body.as_ref())
    }

    /// The same, asserting the status.
    pub fn api_ok(&self, method: &str, path: &str, token: &str, body: Option<Value>) -> Value {
        let (status, body) = self.api(method, path, Some(token), body);
        assert_eq!(status, 200, "{method} {path}: {body}");
        body
    }

    /// How much has been logged so far (to read only what follows).
    pub fn log_mark(&self) -> usize {
        std::fs::read_to_string(&self.log).map_or(0, |s| s.len())
    }

    /// The requests answered since `mark`.
    pub fn requests_since(&self, mark: usize) -> Vec<Logged> {
        let text = std::fs::read_to_string(&self.log).expect("the tessera log");
        text.get(mark..)
            .unwrap_or("")
            .lines()
            .filter(|line| line.contains("finished processing request"))
            .filter_map(|line| {
                let field = |name: &str| {
                    let start = line.find(&format!("{name}="))? + name.len() + 1;
                    let rest = &line[start..];
                    let end = rest.find([' ', '}']).unwrap_or(rest.len());
                    Some(rest[..end].to_owned())
                };
                Some(Logged {
                    method: field("method")?,
                    path: field("path")?,
                    status: field("status")?.parse().ok()?,
                })
            })
            .collect()
    }
}

/// `chromedriver` on a free loopback port, in its own process group so
/// that it and the browsers it started are stopped together on drop.
pub struct Driver {
    child: Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Driver {
    pub fn start() -> Self {
        let exe = program(&["chromedriver"]).unwrap_or_else(|| {
            panic!(
                "chromedriver is not installed: the browser tests need Chromium and its \
                 WebDriver (Debian: apt-get install chromium chromium-driver; .ci/run does this)"
            )
        });
        let dir = tempfile::tempdir().expect("a temporary directory");
        let log = dir.path().join("chromedriver.log");
        // Another process may take the free port before chromedriver binds
        // it: try a few.
        for _ in 0..3 {
            let port = free_port();
            let mut child = Command::new(&exe)
                .arg(format!("--port={port}"))
                .arg(format!("--log-path={}", log.display()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .expect("chromedriver starts");
            let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
            let deadline = Instant::now() + STEP;
            loop {
                if driver_ready(addr) {
                    return Self {
                        child,
                        url: format!("http://{addr}"),
                        _dir: dir,
                    };
                }
                if child.try_wait().ok().flatten().is_some() || Instant::now() > deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            stop_group(&mut child);
        }
        panic!(
            "chromedriver did not become ready; its log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
}

/// Whether chromedriver at `addr` says it is ready for sessions. (It keeps
/// connections open, so the answer is read by its length.)
fn driver_ready(addr: std::net::SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if write!(stream, "GET /status HTTP/1.1\r\nHost: {addr}\r\n\r\n").is_err() {
        return false;
    }
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&raw);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse::<usize>().ok());
            if length.is_some_and(|l| body.len() >= l) {
                return serde_json::from_str::<Value>(body)
                    .is_ok_and(|v| v["value"]["ready"] == json!(true));
            }
        }
    }
    false
}

fn stop_group(child: &mut Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: kill(2) with a negative pid signals the process group this
        // test created for the child (process_group(0) made the child its
        // leader); it touches no memory.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
    let _ = child.wait();
}

impl Drop for Driver {
    fn drop(&mut self) {
        stop_group(&mut self.child);
    }
}

/// How a browser profile is set up.
#[derive(Clone, Copy)]
pub struct Profile {
    pub javascript: bool,
    /// A phone's viewport (390 x 844) instead of a laptop's window.
    pub phone: bool,
}

impl Profile {
    pub const DESKTOP: Profile = Profile {
        javascript: true,
        phone: false,
    };
    pub const PHONE: Profile = Profile {
        javascript: true,
        phone: true,
    };

    pub fn without_javascript(self) -> Self {
        Self {
            javascript: false,
            ..self
        }
    }
}

/// Where a test's screenshots go, numbered in the order they were taken.
struct Shots {
    dir: PathBuf,
    taken: AtomicUsize,
}

/// Everything a browser test needs: tessera, chromedriver, and a place for
/// screenshots. Browsers are opened from it.
pub struct Rig {
    // Dropped in this order: the driver (and its browsers), then tessera.
    driver: Driver,
    pub tessera: Tessera,
    shots: Arc<Shots>,
}

/// The build directory's `browser-screenshots/`: beside cargo's
/// `CARGO_TARGET_TMPDIR`, so wherever `CARGO_TARGET_DIR` points.
pub fn screenshot_root() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).join("browser-screenshots")
}

impl Rig {
    pub fn new(test: &str) -> Self {
        Self::with(test, Tessera::start())
    }

    /// With tessera at `http://localhost:<port>` (passkeys).
    pub fn at_localhost(test: &str) -> Self {
        Self::with(test, Tessera::start_at_localhost())
    }

    fn with(test: &str, tessera: Tessera) -> Self {
        let dir = screenshot_root().join(test);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("the screenshot directory");
        let driver = Driver::start();
        Self {
            driver,
            tessera,
            shots: Arc::new(Shots {
                dir,
                taken: AtomicUsize::new(0),
            }),
        }
    }

    /// A fresh browser profile named `name` (used in screenshot names).
    pub async fn browser(&self, name: &str, profile: Profile) -> Browser {
        let dir = tempfile::Builder::new()
            .prefix(&format!("tessera-browser-{name}-"))
            .tempdir()
            .expect("a profile directory");
        let size = if profile.phone { "390,844" } else { "1280,900" };
        let args = vec![
            "--headless=new".to_owned(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-extensions".into(),
            "--no-first-run".into(),
            "--no-default-browser-check".into(),
            "--password-store=basic".into(),
            format!("--window-size={size}"),
            format!("--user-data-dir={}", dir.path().display()),
        ];
        let mut options = json!({ "args": args });
        if profile.phone {
            // Headless windows are at least 500 pixels wide, so a phone's
            // viewport is emulated; without touch events, as chromedriver's
            // emulated taps wait on a page timer, which never fires with
            // scripts off.
            options["mobileEmulation"] = json!({
                "deviceMetrics": { "width": 390, "height": 844, "pixelRatio": 1.0, "touch": false }
            });
        }
        if !profile.javascript {
            options["prefs"] = json!({ "profile.managed_default_content_settings.javascript": 2 });
        }
        if let Some(binary) = program(&["chromium", "chromium-browser", "google-chrome"]) {
            options["binary"] = json!(binary.display().to_string());
        }
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": options,
            // Bounds every page load and script the driver waits for.
            "timeouts": { "pageLoad": STEP.as_millis() as u64, "script": 10_000, "implicit": 0 },
            "unhandledPromptBehavior": "ignore",
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = tokio::time::timeout(
            STEP,
            ClientBuilder::new(connector)
                .capabilities(capabilities)
                .connect(&self.driver.url),
        )
        .await
        .unwrap_or_else(|_| panic!("Chromium for {name} did not start in time"))
        .unwrap_or_else(|e| panic!("Chromium for {name} did not start: {e}"));
        Browser {
            client,
            name: name.to_owned(),
            base: self.tessera.base.clone(),
            shots: self.shots.clone(),
            _profile: dir,
        }
    }
}

/// One browser profile: a person at their own browser.
pub struct Browser {
    pub client: Client,
    name: String,
    base: String,
    shots: Arc<Shots>,
    _profile: tempfile::TempDir,
}

/// A form found by its `action` (the way a person tells forms apart is by
/// what they do).
pub fn form(action: &str) -> String {
    format!("form[action='{action}']")
}

impl Browser {
    /// Go to `to`: a path on tessera, or a full URL elsewhere (loopback).
    pub async fn goto(&self, to: &str) {
        let url = if to.starts_with("http://") {
            to.to_owned()
        } else {
            format!("{}{to}", self.base)
        };
        step(
            format_args!("{}: loading {url}", self.name),
            self.client.goto(&url),
        )
        .await;
    }

    /// The current URL's path with its query, as the address bar shows it.
    pub async fn path(&self) -> String {
        let url = step(
            format_args!("{}: the current URL", self.name),
            self.client.current_url(),
        )
        .await;
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        }
    }

    pub async fn assert_path(&self, expected: &str) {
        let path = self.path().await;
        assert_eq!(
            path,
            expected,
            "{}: on the wrong page:\n{}",
            self.name,
            self.text().await
        );
    }

    async fn find(&self, css: &str) -> Element {
        step(
            format_args!("{}: finding {css}", self.name),
            self.client.find(Locator::Css(css)),
        )
        .await
    }

    /// The visible text of the page.
    pub async fn text(&self) -> String {
        let what = format!("{}: reading the page", self.name);
        match try_step(&what, self.client.find(Locator::Css("body"))).await {
            Ok(body) => try_step(&what, body.text()).await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// The visible text of the first element matching `css`.
    pub async fn text_of(&self, css: &str) -> String {
        let element = self.find(css).await;
        step(format_args!("{}: reading {css}", self.name), element.text()).await
    }

    pub async fn assert_text(&self, needle: &str) {
        let text = self.text().await;
        assert!(
            text.contains(needle),
            "{}: {needle:?} is not on {}:\n{text}",
            self.name,
            self.path().await
        );
    }

    pub async fn assert_no_text(&self, needle: &str) {
        let text = self.text().await;
        assert!(
            !text.contains(needle),
            "{}: {needle:?} is on {}:\n{text}",
            self.name,
            self.path().await
        );
    }

    pub async fn present(&self, css: &str) -> bool {
        try_step(
            format_args!("{}: looking for {css}", self.name),
            self.client.find_all(Locator::Css(css)),
        )
        .await
        .is_ok_and(|found| !found.is_empty())
    }

    pub async fn assert_present(&self, css: &str) {
        assert!(
            self.present(css).await,
            "{}: no {css} on {}:\n{}",
            self.name,
            self.path().await,
            self.text().await
        );
    }

    pub async fn assert_absent(&self, css: &str) {
        assert!(
            !self.present(css).await,
            "{}: {css} should not be on {}",
            self.name,
            self.path().await
        );
    }

    /// Type `value` into the field `name` of the form `form` (a CSS
    /// selector), as a person would: real key presses, no script.
    pub async fn fill(&self, form: &str, name: &str, value: &str) {
        let field = self.find(&format!("{form} [name='{name}']")).await;
        step(
            format_args!("{}: clearing {name}", self.name),
            field.clear(),
        )
        .await;
        step(
            format_args!("{}: typing into {name}", self.name),
            field.send_keys(value),
        )
        .await;
    }

    /// Tick the checkbox `name` of the form `form`.
    pub async fn tick(&self, form: &str, name: &str) {
        let field = self.find(&format!("{form} [name='{name}']")).await;
        let what = format!("{}: ticking {name}", self.name);
        if !step(&what, field.is_selected()).await {
            step(&what, field.click()).await;
        }
    }

    /// Choose the option `value` of the select `name` in the form `form`,
    /// by clicking it as a person would.
    pub async fn choose(&self, form: &str, name: &str, value: &str) {
        let option = self
            .find(&format!(
                "{form} select[name='{name}'] option[value='{value}']"
            ))
            .await;
        step(
            format_args!("{}: choosing {value} for {name}", self.name),
            option.click(),
        )
        .await;
    }

    /// The values a select offers, in order.
    pub async fn options(&self, form: &str, name: &str) -> Vec<String> {
        let css = format!("{form} select[name='{name}'] option");
        let found = step(
            format_args!("{}: the options of {name}", self.name),
            self.client.find_all(Locator::Css(&css)),
        )
        .await;
        let mut values = Vec::new();
        for option in found {
            let value = step(
                format_args!("{}: an option of {name}", self.name),
                option.attr("value"),
            )
            .await;
            values.push(value.unwrap_or_default());
        }
        values
    }

    /// Submit a form that asks first (`data-confirm`): with scripts on the
    /// question is asked and agreed to; with them off the form just posts.
    pub async fn submit_agreeing(&self, form: &str, javascript: bool) {
        if javascript {
            self.submit_confirmed(form, true).await;
        } else {
            self.submit(form).await;
        }
    }

    /// Press the submit button of the form `form` and wait (bounded) for
    /// the page the server answers with.
    pub async fn submit(&self, form: &str) {
        let old = self.find(form).await;
        let button = self
            .find(&format!(
                "{form} button[type=submit], {form} input[type=submit]"
            ))
            .await;
        step(
            format_args!("{}: pressing submit in {form}", self.name),
            button.click(),
        )
        .await;
        // The old page is gone once its form is stale.
        let what = format!("{}: the answer to {form}", self.name);
        poll(&what, STEP, || {
            let old = old.clone();
            let what = what.clone();
            async move { try_step(what, old.tag_name()).await.err().map(|_| ()) }
        })
        .await;
        self.loaded().await;
    }

    /// Press the submit button of a form that asks first (`data-confirm`,
    /// with scripts on), answer the question, and when accepted wait for
    /// the server's answer. Returns the question asked.
    pub async fn submit_confirmed(&self, form: &str, accept: bool) -> String {
        let old = self.find(form).await;
        let button = self
            .find(&format!(
                "{form} button[type=submit], {form} input[type=submit]"
            ))
            .await;
        step(
            format_args!("{}: pressing submit in {form}", self.name),
            button.click(),
        )
        .await;
        let what = format!("{}: the question {form} asks", self.name);
        let question = step(&what, self.client.get_alert_text()).await;
        if accept {
            step(&what, self.client.accept_alert()).await;
            let what = format!("{}: the answer to {form}", self.name);
            poll(&what, STEP, || {
                let old = old.clone();
                let what = what.clone();
                async move { try_step(what, old.tag_name()).await.err().map(|_| ()) }
            })
            .await;
            self.loaded().await;
        } else {
            step(&what, self.client.dismiss_alert()).await;
        }
        question
    }

    /// Wait (bounded) until the current document has loaded. (The driver's
    /// own scripts run even where the page's may not.)
    pub async fn loaded(&self) {
        let what = format!("{}: the page to load", self.name);
        poll(&what, STEP, || async {
            let state = try_step(
                &what,
                self.client.execute("return document.readyState", vec![]),
            )
            .await;
            matches!(state, Ok(s) if s == json!("complete")).then_some(())
        })
        .await;
    }

    /// Save a screenshot of the page as `<nn>-<profile>-<what>.png`.
    pub async fn shot(&self, what: &str) {
        let n = self.shots.taken.fetch_add(1, Ordering::Relaxed) + 1;
        let png = step(
            format_args!("{}: screenshot {what}", self.name),
            self.client.screenshot(),
        )
        .await;
        let path = self
            .shots
            .dir
            .join(format!("{n:02}-{}-{what}.png", self.name));
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }

    /// A cookie's value (the driver sees HttpOnly cookies too).
    pub async fn cookie(&self, name: &str) -> Option<String> {
        try_step(
            format_args!("{}: the cookie {name}", self.name),
            self.client.get_named_cookie(name),
        )
        .await
        .ok()
        .map(|c| c.value().to_owned())
        .filter(|v| !v.is_empty() && v != "\"\"")
    }

    /// The session token this browser holds, for checking with the API.
    pub async fn session(&self) -> String {
        self.cookie("taos_session")
            .await
            .unwrap_or_else(|| panic!("{} is not signed in", self.name))
    }

    /// The page's title.
    pub async fn title(&self) -> String {
        step(
            format_args!("{}: the title", self.name),
            self.client.title(),
        )
        .await
    }

    /// Whether the page fits the window's width (no sideways scrolling).
    pub async fn assert_fits_width(&self) {
        let fits = step(
            format_args!("{}: measuring the page", self.name),
            self.client.execute(
                "return document.documentElement.scrollWidth <= window.innerWidth",
                vec![],
            ),
        )
        .await;
        assert_eq!(
            fits,
            json!(true),
            "{}: {} is wider than the window",
            self.name,
            self.path().await
        );
    }

    /// Sign in through the sign-in page and land on `lands`.
    pub async fn sign_in(&self, username: &str, password: &str, lands: &str) {
        self.goto("/auth/login").await;
        let f = form("/auth/login");
        self.fill(&f, "username", username).await;
        self.fill(&f, "password", password).await;
        self.submit(&f).await;
        self.assert_path(lands).await;
    }

    /// End the WebDriver session (the browser exits).
    pub async fn close(self) {
        let _ = tokio::time::timeout(STEP, self.client.close()).await;
    }
}

/// A web server on another loopback port, answering fixed pages: what
/// another app on the same machine could serve. It is the same *site* as
/// tessera (cookies do not care about ports) but another *origin*.
pub struct OtherOrigin {
    pub base: String,
    pages: Arc<std::sync::Mutex<std::collections::HashMap<String, String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl OtherOrigin {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let base = format!("http://{}", listener.local_addr().expect("its address"));
        let pages: Arc<std::sync::Mutex<std::collections::HashMap<String, String>>> =
            Arc::default();
        let served = pages.clone();
        let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
            let served = served.clone();
            async move {
                let page = served.lock().ok().and_then(|p| p.get(uri.path()).cloned());
                match page {
                    Some(html) => axum::response::Html(html).into_response(),
                    None => axum::http::StatusCode::NOT_FOUND.into_response(),
                }
            }
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { base, pages, task }
    }

    /// Serve `html` at `path`; returns its full URL.
    pub fn serve(&self, path: &str, html: String) -> String {
        if let Ok(mut pages) = self.pages.lock() {
            pages.insert(path.to_owned(), html);
        }
        format!("{}{path}", self.base)
    }
}

impl Drop for OtherOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A page whose text says whether scripts run in the browser showing it.
pub const SCRIPT_PROBE: &str = "<!doctype html><title>probe</title>\
    <p id=probe>scripts off</p>\
    <script>document.getElementById('probe').textContent = 'scripts on'</script>";
