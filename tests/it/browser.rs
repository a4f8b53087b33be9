//! The web UI in a real browser: headless Chromium driven over WebDriver (Debian's `chromium`
//! and `chromium-driver`, which `scripts/test` installs) against a real server on loopback, and
//! headless Firefox (Debian's `firefox-esr`, driven by geckodriver from crates.io) for the flows
//! that must work in both. One driver of each serves the whole test binary; each test opens its
//! own browser session (geckodriver takes one session at a time, so one test uses Firefox).

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::error::{CmdError, ErrorStatus};
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use futures_util::StreamExt as _;
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

use crate::{Harness, free_port};

/// How long a page may take to show what a test waits for. Generous: the machine has two cores
/// and the rest of the suite runs beside these tests.
const WAIT: Duration = Duration::from_secs(15);
/// How long a driver may take to say it is ready.
const DRIVER_START: Duration = Duration::from_secs(20);

/// The drivers' process groups (chromedriver, geckodriver), for the exit hook; 0 until each runs.
static DRIVER_GROUPS: [AtomicI32; 2] = [AtomicI32::new(0), AtomicI32::new(0)];
/// chromedriver's URL, started once for the whole test binary.
static DRIVER: OnceLock<String> = OnceLock::new();
/// geckodriver's URL, likewise.
static GECKO: OnceLock<String> = OnceLock::new();

/// A WebDriver server the tests start: its program and the one environment variable that points
/// elsewhere, where its process group is kept, and what installs it.
struct DriverProgram {
    var: &'static str,
    name: &'static str,
    slot: usize,
    port_flag: &'static str,
}

static CHROMEDRIVER: DriverProgram = DriverProgram {
    var: "KAIROS_CHROMEDRIVER",
    name: "chromedriver",
    slot: 0,
    port_flag: "--port=",
};

static GECKODRIVER: DriverProgram = DriverProgram {
    var: "KAIROS_GECKODRIVER",
    name: "geckodriver",
    slot: 1,
    port_flag: "--port=",
};

/// A program from `$var` or else from PATH: the tests need it, so its absence fails loudly.
fn program(var: &str, name: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(var).filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            panic!("{name} is not installed (or set {var}): scripts/test installs Chromium, Firefox and their drivers")
        })
}

/// `target/` beside Cargo.toml, where screenshots and the drivers' logs go.
fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target")
}

/// Kills the drivers and every browser they started, at the test binary's exit: the browsers
/// share their driver's process group, and outlive the driver if only it is killed.
extern "C" fn kill_driver_groups() {
    for slot in &DRIVER_GROUPS {
        let group = slot.load(Ordering::SeqCst);
        if group > 0 {
            // SAFETY: kill(2) with a negative pid signals one process group; it touches no memory.
            unsafe { libc::kill(-group, libc::SIGKILL) };
        }
    }
}

/// chromedriver's URL, starting it on first use.
fn driver() -> &'static str {
    DRIVER.get_or_init(|| start_driver(&CHROMEDRIVER))
}

/// geckodriver's URL, starting it on first use.
fn gecko() -> &'static str {
    GECKO.get_or_init(|| start_driver(&GECKODRIVER))
}

fn start_driver(which: &'static DriverProgram) -> String {
    static EXIT_HOOK: std::sync::Once = std::sync::Once::new();
    let path = program(which.var, which.name);
    let port = free_port();
    std::fs::create_dir_all(target_dir()).expect("target dir");
    let log_path = target_dir().join(format!("{}.log", which.name));
    let log = std::fs::File::create(&log_path).expect("driver log");
    // Spawned from a thread that lives as long as the test binary: PR_SET_PDEATHSIG fires when
    // the spawning *thread* ends, and each test's thread ends with the test.
    let (pid_tx, pid_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name(which.name.to_owned())
        .spawn(move || {
            let mut command = Command::new(&path);
            command
                .arg(format!("{}{port}", which.port_flag))
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log handle"))
                .stderr(log)
                // Its own group, so that the exit hook reaches the browsers it starts too.
                .process_group(0);
            // SAFETY: prctl is async-signal-safe, as a pre_exec closure must be.
            unsafe {
                command.pre_exec(|| {
                    // If the test binary dies without running its exit hook, the driver goes too.
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            let mut child = match command.spawn() {
                Ok(child) => child,
                Err(e) => {
                    let _ = pid_tx.send(Err(format!("{}: {e}", path.display())));
                    return;
                }
            };
            let _ = pid_tx.send(Ok(child.id()));
            // Waiting keeps this thread, the death signal's anchor, alive; it also reaps.
            let _ = child.wait();
        })
        .expect("driver thread");
    let pid = pid_rx
        .recv()
        .expect("driver thread answers")
        .unwrap_or_else(|e| panic!("{} does not start: {e}", which.name));
    let pid = i32::try_from(pid).expect("pid fits");
    DRIVER_GROUPS[which.slot].store(pid, Ordering::SeqCst);
    EXIT_HOOK.call_once(|| {
        // SAFETY: registers a plain extern "C" function that only calls kill(2).
        assert_eq!(unsafe { libc::atexit(kill_driver_groups) }, 0, "atexit");
    });

    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + DRIVER_START;
    loop {
        if status_ready(port) {
            return url;
        }
        assert!(
            Instant::now() < deadline,
            "{} did not answer ready on {url} within {DRIVER_START:?}; its log:\n{}",
            which.name,
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether a driver's `/status` says it is ready. Plain blocking HTTP: this runs once, from
/// whichever test's runtime comes first, and must not tie anything to that runtime.
fn status_ready(port: u16) -> bool {
    use std::io::{Read as _, Write as _};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET /status HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let compact: String = response.split_whitespace().collect();
    compact.contains("\"ready\":true")
}

/// One headless browser session on a kairos server.
pub(crate) struct Browser {
    pub(crate) client: Client,
    base: String,
}

impl Browser {
    /// A new headless Chromium session, for pages under `base` (`http://127.0.0.1:port`).
    pub(crate) async fn open(base: &str) -> Browser {
        let chromium = program("KAIROS_CHROMIUM", "chromium");
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                // --no-sandbox: the tests run as root, where Chromium's sandbox refuses to start.
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,900"],
            },
        });
        Browser::session(base, capabilities, driver(), "Chromium").await
    }

    /// A new headless Firefox session. geckodriver serves one session at a time: only one test
    /// may hold it.
    pub(crate) async fn open_firefox(base: &str) -> Browser {
        let firefox = program("KAIROS_FIREFOX", "firefox-esr");
        let capabilities = json!({
            "browserName": "firefox",
            "moz:firefoxOptions": {
                "binary": firefox,
                "args": ["-headless", "--width=1280", "--height=900"],
            },
        });
        Browser::session(base, capabilities, gecko(), "Firefox").await
    }

    async fn session(base: &str, capabilities: Value, driver: &str, what: &str) -> Browser {
        let Value::Object(capabilities) = capabilities else {
            unreachable!("an object")
        };
        // The drivers speak plain HTTP on loopback: no TLS connector needed.
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(driver)
            .await
            .unwrap_or_else(|e| panic!("a {what} session: {e}"));
        Browser {
            client,
            base: base.to_owned(),
        }
    }

    /// Loads `path` (`/jobs/x`) of the server; returns once the page has loaded.
    pub(crate) async fn goto(&self, path: &str) {
        let url = format!("{}{path}", self.base);
        self.client
            .goto(&url)
            .await
            .unwrap_or_else(|e| panic!("loading {url}: {e}"));
    }

    /// The current page's path and query, as a server sees them: `/?q=x&page=2`.
    pub(crate) async fn location(&self) -> String {
        let url = self.client.current_url().await.expect("current URL");
        match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        }
    }

    /// The first element matching `css`, waiting for it up to 15 s.
    pub(crate) async fn wait_for(&self, css: &str) -> Element {
        self.client
            .wait()
            .at_most(WAIT)
            .every(Duration::from_millis(50))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element matches {css} within {WAIT:?}: {e}"))
    }

    /// The visible text of the first element matching `css`.
    pub(crate) async fn text(&self, css: &str) -> String {
        // The jobs table is replaced every 5 s by its refresh: an element found just before can
        // go stale, so it is looked up again.
        self.retry_stale(css, async |e| e.text().await).await
    }

    /// The text of every element matching `css`, in document order, read in one round trip.
    pub(crate) async fn texts(&self, css: &str) -> Vec<String> {
        let found = self
            .client
            .execute(
                "return Array.from(document.querySelectorAll(arguments[0]), e => e.textContent.trim());",
                vec![json!(css)],
            )
            .await
            .unwrap_or_else(|e| panic!("reading {css}: {e}"));
        serde_json::from_value(found).expect("a list of strings")
    }

    /// Clicks the first element matching `css`, as a pointer does.
    pub(crate) async fn click(&self, css: &str) {
        self.retry_stale(css, async |e| e.click().await).await;
    }

    /// Focuses the first element matching `css` and types `keys` into it, as a keyboard does.
    pub(crate) async fn type_into(&self, css: &str, keys: &str) {
        self.retry_stale(css, async |e| e.send_keys(keys).await).await;
    }

    /// Presses Enter on the first element matching `css`: follows a link, submits a form.
    pub(crate) async fn press_enter(&self, css: &str) {
        self.type_into(css, &Key::Enter.to_string()).await;
    }

    /// Waits until the text of the first element matching `css` contains `needle`; returns it.
    pub(crate) async fn wait_for_text(&self, css: &str, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let text = self.text(css).await;
            if text.contains(needle) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "{css} did not come to contain {needle:?} within {WAIT:?}; it reads {text:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the page's path and query (see [`Browser::location`]) satisfy `check`.
    pub(crate) async fn wait_for_location(&self, what: &str, check: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let location = self.location().await;
            if check(&location) {
                return location;
            }
            assert!(
                Instant::now() < deadline,
                "the browser did not reach {what} within {WAIT:?}; it is at {location}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Saves what the window shows as `target/ui-screenshots/<name>.png`; returns its path.
    pub(crate) async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("screenshot");
        let dir = target_dir().join("ui-screenshots");
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("screenshot written");
        path
    }

    /// Ends the session, and with it the browser.
    pub(crate) async fn close(self) {
        self.client.close().await.expect("closing the session");
    }

    /// `act` on the element matching `css`, looked up again while it goes stale under a refresh.
    async fn retry_stale<T>(&self, css: &str, mut act: impl AsyncFnMut(Element) -> Result<T, CmdError>) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            let element = self.wait_for(css).await;
            match act(element).await {
                Ok(value) => return value,
                // A page that reloads under the action leaves the element stale, or (Chromium)
                // answers that its node is gone from the document.
                Err(CmdError::Standard(e))
                    if (e.error == ErrorStatus::StaleElementReference
                        || e.message.contains("does not belong to the document"))
                        && Instant::now() < deadline => {}
                Err(e) => panic!("acting on {css}: {e}"),
            }
        }
    }
}

/// The job names in the jobs table, top to bottom.
async fn table_names(b: &Browser) -> Vec<String> {
    b.texts("#jobs tbody th a").await
}

fn names(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("job-{i:05}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_jobs_page_and_search_in_a_browser() {
    const JOBS: usize = 10_000;
    let h = Harness::start().await;
    let started = Instant::now();
    // 64 requests in flight: the server takes them as fast as its store writes them.
    let created: Vec<(usize, u16)> = futures_util::stream::iter(0..JOBS)
        .map(|i| {
            let h = &h;
            async move {
                let job = json!({"name": format!("job-{i:05}"), "command": format!("echo {i}"),
                                 "owner": "ops@example.com", "schedule": "R/2030-01-01T00:00:00Z/P1D"});
                (i, h.post("/v1/scheduler/iso8601", job).await.0)
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let failed: Vec<_> = created.iter().filter(|(_, status)| *status != 204).collect();
    assert!(
        failed.is_empty(),
        "some jobs were not created: {:?}",
        &failed[..failed.len().min(5)]
    );
    eprintln!("created {JOBS} jobs in {:?}", started.elapsed());

    let b = Browser::open(&h.base).await;
    b.goto("/").await;
    assert_eq!(b.text("h1").await, "Jobs");
    b.wait_for_text("main > p.muted", "10000 jobs match").await;
    assert_eq!(table_names(&b).await, names(0..50), "the first 50 by name");
    assert_eq!(b.text("#jobs nav.pager span").await, "Page 1 of 200");
    assert!(
        b.client.find(Locator::Css("#jobs a[rel=prev]")).await.is_err(),
        "the first page has no previous page"
    );

    // Next, by pointer.
    b.click("#jobs a[rel=next]").await;
    b.wait_for_text("#jobs nav.pager span", "Page 2 of 200").await;
    assert!(b.location().await.contains("page=2"), "{}", b.location().await);
    assert_eq!(table_names(&b).await, names(50..100));
    // Next again, by keyboard: Enter on the focused link.
    b.press_enter("#jobs a[rel=next]").await;
    b.wait_for_text("#jobs nav.pager span", "Page 3 of 200").await;
    assert_eq!(table_names(&b).await, names(100..150));
    // And back.
    b.click("#jobs a[rel=prev]").await;
    b.wait_for_text("#jobs nav.pager span", "Page 2 of 200").await;
    assert_eq!(table_names(&b).await, names(50..100));

    // Search: type into the box and press Enter; the form submits to `/?q=`.
    b.type_into("input[name=q]", "JOB-0432").await;
    b.press_enter("input[name=q]").await;
    b.wait_for_location("a search for job-0432", |l| l.contains("q=JOB-0432"))
        .await;
    b.wait_for_text("main > p.muted", "10 jobs match").await;
    assert_eq!(
        table_names(&b).await,
        names(4320..4330),
        "case-insensitive, in order"
    );
    assert_eq!(b.text("#jobs nav.pager span").await, "Page 1 of 1");
    assert!(b.client.find(Locator::Css("#jobs a[rel=next]")).await.is_err());
    // The box keeps what was searched for, so that it can be refined.
    let query = b
        .wait_for("input[name=q]")
        .await
        .prop("value")
        .await
        .expect("value");
    assert_eq!(query.as_deref(), Some("JOB-0432"));
    // By command: `echo 9999` belongs to one job.
    b.wait_for("input[name=q]").await.clear().await.expect("clear");
    b.type_into("input[name=q]", "echo 9999").await;
    b.press_enter("input[name=q]").await;
    b.wait_for_text("main > p.muted", "1 jobs match").await;
    assert_eq!(table_names(&b).await, ["job-09999"]);
    // The name leads to the job's page.
    b.click("#jobs tbody th a").await;
    b.wait_for_location("job-09999's page", |l| l == "/jobs/job-09999")
        .await;
    assert_eq!(b.text("h1").await, "job-09999");
    b.close().await;
    eprintln!("whole test: {:?}", started.elapsed());
}

/// Where an edge of the graph starts and ends, and the boxes of the jobs it may join, in the
/// SVG's own coordinates as the browser laid them out.
const EDGE_ENDS: &str = r#"
const box = name => {
  const r = document.querySelector(`svg a[href="/jobs/${name}"] rect`).getBBox();
  return {x: r.x, y: r.y, w: r.width, h: r.height};
};
const edges = Array.from(document.querySelectorAll('svg g.edges path.edge'), p => {
  const a = p.getPointAtLength(0), b = p.getPointAtLength(p.getTotalLength());
  return {from: {x: a.x, y: a.y}, to: {x: b.x, y: b.y}, marker: p.getAttribute('marker-end')};
});
return {edges, parent: box(arguments[0]), child: box(arguments[1])};
"#;

/// How far `point` lies outside `rect` (0 inside), both as EDGE_ENDS returns them.
fn distance(point: &Value, rect: &Value) -> f64 {
    let (x, y) = (point["x"].as_f64().unwrap(), point["y"].as_f64().unwrap());
    let (rx, ry) = (rect["x"].as_f64().unwrap(), rect["y"].as_f64().unwrap());
    let (w, h) = (rect["w"].as_f64().unwrap(), rect["h"].as_f64().unwrap());
    let dx = (rx - x).max(x - (rx + w)).max(0.0);
    let dy = (ry - y).max(y - (ry + h)).max(0.0);
    dx.hypot(dy)
}

#[tokio::test]
async fn a_parent_and_its_child_are_linked_nodes_of_the_graph() {
    let h = Harness::start().await;
    h.create(json!({"name": "parent", "command": "true", "schedule": "R/2030-01-01T00:00:00Z/P1D"}))
        .await;
    let (status, body) = h
        .post(
            "/v1/scheduler/dependency",
            json!({"name": "child", "command": "true", "parents": ["parent"]}),
        )
        .await;
    assert_eq!(status, 204, "{body}");
    // A job on its own, so that the edge has a node it must not touch.
    h.create(json!({"name": "loner", "command": "true", "schedule": "R/2030-01-01T00:00:00Z/P1D"}))
        .await;

    let b = Browser::open(&h.base).await;
    b.goto("/graph").await;
    assert_eq!(b.text("h1").await, "Graph");
    b.wait_for("svg[aria-label='Job dependency graph']").await;
    for name in ["parent", "child", "loner"] {
        let node = b.wait_for(&format!("svg a[href='/jobs/{name}']")).await;
        assert_eq!(node.text().await.expect("label"), name, "the node names its job");
        assert!(node.is_displayed().await.expect("displayed"), "{name} is drawn");
    }

    let ends = b
        .client
        .execute(EDGE_ENDS, vec![json!("parent"), json!("child")])
        .await
        .expect("edge geometry");
    let edges = ends["edges"].as_array().expect("edges");
    assert_eq!(edges.len(), 1, "one dependency, one edge: {ends}");
    let edge = &edges[0];
    // An arrow from the parent's box to the child's: its ends sit on their borders.
    assert!(
        distance(&edge["from"], &ends["parent"]) < 2.0,
        "starts at the parent: {ends}"
    );
    assert!(
        distance(&edge["to"], &ends["child"]) < 2.0,
        "ends at the child: {ends}"
    );
    assert!(distance(&edge["from"], &ends["child"]) > 20.0, "{ends}");
    assert_eq!(edge["marker"], "url(#arrow)", "an arrowhead at the child's end");
    let loner = b
        .client
        .execute(EDGE_ENDS, vec![json!("loner"), json!("loner")])
        .await
        .expect("loner geometry");
    assert!(
        distance(&edge["from"], &loner["parent"]) > 20.0,
        "the loner is not joined: {loner}"
    );
    assert!(distance(&edge["to"], &loner["parent"]) > 20.0, "{loner}");

    // The child's node is a link to its page.
    b.click("svg a[href='/jobs/child']").await;
    b.wait_for_location("the child's page", |l| l == "/jobs/child")
        .await;
    assert_eq!(b.text("h1").await, "child");
    b.wait_for_text("main > p", "after parent").await;
    b.close().await;
}

/// Whether `path` holds a PNG, and its width and height.
fn png_size(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).expect("screenshot exists");
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is a PNG",
        path.display()
    );
    // The IHDR chunk comes first: its width and height follow the signature and chunk header.
    let word = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    (word(16), word(20))
}

#[tokio::test]
async fn every_page_renders_in_a_browser_and_is_captured() {
    let h = Harness::start().await;
    h.create(
        json!({"name": "nightly-report", "command": "echo report", "owner": "data@example.com",
                    "schedule": "R/2030-01-01T02:00:00Z/P1D"}),
    )
    .await;
    let (status, body) = h
        .post(
            "/v1/scheduler/dependency",
            json!({"name": "publish-report", "command": "true", "parents": ["nightly-report"]}),
        )
        .await;
    assert_eq!(status, 204, "{body}");
    // Larger than any worker: it waits, so the queue page has a row and a reason.
    h.create(json!({"name": "huge", "command": "true", "cpus": 100000,
                    "schedule": "R0/2030-01-01T00:00:00Z/P1D"}))
        .await;
    assert_eq!(h.put("/v1/scheduler/job/huge", None).await.0, 204);

    let b = Browser::open(&h.base).await;
    // Each page: its address, its heading, and something only it shows.
    let pages = [
        (
            "jobs",
            "/",
            "Jobs",
            "form[role=search] input[name=q]",
            "nightly-report",
        ),
        (
            "job",
            "/jobs/nightly-report",
            "nightly-report",
            "ol.next time",
            "Next runs",
        ),
        (
            "graph",
            "/graph",
            "Graph",
            "svg a[href='/jobs/publish-report']",
            "publish-report",
        ),
        ("workers", "/workers", "Workers", "main tbody th .tag", "built-in"),
        (
            "queue",
            "/queue",
            "Queue",
            "main tbody th a[href='/jobs/huge']",
            "cpus",
        ),
    ];
    for (name, path, heading, landmark, shows) in pages {
        b.goto(path).await;
        assert_eq!(b.text("main h1").await, heading, "{path}");
        assert_eq!(
            b.client.title().await.expect("title"),
            format!("{heading} · kairos"),
            "{path}"
        );
        b.wait_for("header nav[aria-label=Main] a[href='/queue']").await;
        b.wait_for(landmark).await;
        b.wait_for_text("main", shows).await;
        let shot = b.screenshot(name).await;
        let (width, height) = png_size(&shot);
        assert!(width >= 800 && height >= 500, "{name}: {width}x{height}");
    }
    // The main navigation leads between the pages.
    b.click("header nav a[href='/workers']").await;
    b.wait_for_location("the workers page", |l| l == "/workers").await;
    assert_eq!(b.text("main h1").await, "Workers");
    b.close().await;
}
