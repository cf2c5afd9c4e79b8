//! The web console in a real browser: Debian's headless Chromium driven through chromedriver
//! (WebDriver, `fantoccini`) against real `meshfed gateway` processes on loopback. An operator
//! logs in, sees two federated meshes, suspends and resumes their federation, creates an
//! invitation on one mesh and accepts it on another, watches the rate plot while `meshfed send`
//! runs, and opens every page; each page is saved as a screenshot at a laptop's and a tablet's
//! size, in light and dark mode, under `target/console-screenshots/`. The overview's render
//! time is measured in the browser on a node whose registry holds 100 federations.
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (`scripts/test` installs the Debian
//! packages `chromium` and `chromium-driver` when they are missing).

#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a step that fails is the test failing"
)]

mod common;

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{admin_token, federate, federations, mesh, started, wait_for_status};
use fantoccini::{Client, ClientBuilder, Locator};
use meshfed_testkit::Mesh;
use meshfed_testkit::process::DEADLINE;
use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// The pages of the console, by the hash that opens them.
const PAGES: [&str; 6] = [
    "overview",
    "topology",
    "live",
    "invitations",
    "policy",
    "audit",
];

/// A laptop's and a tablet's viewport.
const VIEWPORTS: [(&str, u32, u32); 2] = [("laptop", 1366, 768), ("tablet", 820, 1180)];

/// How long the overview may take, from navigation to the federations table, with 100
/// federations.
const RENDER_BUDGET_MS: f64 = 1000.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_runs_two_federated_meshes_from_the_console() {
    let shots = screenshot_dir();
    let mut a = started("plant-a");
    let b = started("supplier-b");
    let id = federate(&b, &a);
    wait_for_status(&a, &id, "active");
    check_console_headers(&a);

    let driver = Driver::start();
    let light = driver.browser(false).await;
    let console = Console::new(&light, &a);

    // A wrong token is refused with the node's reason, and nothing is kept.
    console.open("").await;
    console.login("not-a-token").await;
    let refused = console
        .text_when("#login-message .error", |t| !t.is_empty())
        .await;
    assert!(refused.contains("refused"), "{refused}");

    // A component token without the admin role is refused as such; one with it logs in, and
    // logging out forgets it.
    let scoped = a.cli(&[
        "token",
        "issue",
        "--subject",
        "mes",
        "--role",
        "line-3",
        "--topics",
        "orders/#",
        "--actions",
        "publish",
    ]);
    console.login(scoped.ok().trim()).await;
    console
        .text_when("#login-message .error", |t| {
            t.starts_with("This token has no admin role")
        })
        .await;
    let operator = a.cli(&[
        "token",
        "issue",
        "--subject",
        "operator",
        "--role",
        "admin",
        "--topics",
        "#",
        "--actions",
        "publish",
    ]);
    console.login(operator.ok().trim()).await;
    console.text_when("#node h2", |t| t == "Mesh plant-a").await;
    console.click("#logout").await;
    console.wait(Locator::Css("#token")).await;

    // The overview shows this mesh and the federation with supplier-b, active.
    console.login(&admin_token(&a)).await;
    console.text_when("#node h2", |t| t == "Mesh plant-a").await;
    let row = format!("tr[data-federation='{id}']");
    console
        .text_when(&format!("{row} td:nth-child(2)"), |t| t == "supplier-b")
        .await;
    console
        .attr_when(&row, "data-status", |s| s == "active")
        .await;
    console
        .text_when("#who", |t| t.starts_with("plant-a"))
        .await;

    // Suspend and resume from the federation page, each confirmed; the peer follows.
    console.open(&format!("federation/{id}")).await;
    console.text_when("#peer", |t| t == "supplier-b").await;
    console
        .attr_when("main", "data-status", |s| s == "active")
        .await;
    console.act("suspend").await;
    console
        .attr_when("main", "data-status", |s| s == "suspended")
        .await;
    console
        .text_when("#action-result", |t| {
            t.contains("Suspend: the federation is now suspended")
        })
        .await;
    wait_for_status(&b, &id, "suspended");
    console.act("resume").await;
    console
        .attr_when("main", "data-status", |s| s == "active")
        .await;
    wait_for_status(&b, &id, "active");
    wait_for_status(&a, &id, "active");
    // Renegotiating makes version 2, with version 1 in the history.
    console.act("renegotiate").await;
    console
        .text_when("#action-result", |t| {
            t.contains("Renegotiate: the federation is now active")
        })
        .await;
    console
        .text_when("#history", |t| t.contains("Version"))
        .await;
    console
        .text_when("#agreement dl.facts dd", |t| t == "2")
        .await;
    // A cancelled confirmation does nothing.
    console.click("#action-suspend").await;
    console.click("#confirm-cancel").await;
    assert_eq!(federation_status(&a, &id), "active");

    // The rate plot moves while `meshfed send` runs.
    watch_the_rate_plot(&console, &mut a).await;

    // An invitation created in plant-a's console and accepted in lab-c's.
    let c = started("lab-c");
    console.open("invitations").await;
    console.type_into("#invite-peer", "lab-c").await;
    console.click("#invite-button").await;
    let token = console
        .prop_when("#invite-token", "value", |t| t.len() > 40)
        .await;
    console
        .text_when("#invite-result", |t| t.contains("shown only once"))
        .await;
    console.click("#copy-token").await;
    console.text_when("#copied", |t| !t.is_empty()).await;
    shoot_all_sizes(&light, &shots, "invitation-created", "light").await;
    let lab = Console::new(&light, &c);
    lab.open("").await;
    lab.login(&admin_token(&c)).await;
    lab.text_when("#node h2", |t| t == "Mesh lab-c").await;
    lab.open("invitations").await;
    lab.type_into("#join-token", &token).await;
    lab.click("#join-button").await;
    let joined = lab
        .text_when("#joined-federation", |t| t.starts_with("fed_"))
        .await;
    lab.text_when("#join-result", |t| t.contains("with mesh plant-a (active)"))
        .await;
    shoot_all_sizes(&light, &shots, "invitation-joined", "light").await;
    wait_for_status(&a, &joined, "active");

    // The topology shows both partners around plant-a.
    console.open("topology").await;
    for peer in ["supplier-b", "lab-c"] {
        console
            .attr_when(&format!("g[data-mesh='{peer}']"), "class", |c| {
                c.contains("good")
            })
            .await;
    }
    // The policy page lists both agreements; the audit trail verifies.
    console.open("policy").await;
    console
        .text_when("#policy-agreements", |t| {
            t.contains("supplier-b") && t.contains("lab-c")
        })
        .await;
    console.open("audit").await;
    console.click("#audit-verify").await;
    console
        .text_when("#audit-verification", |t| t.contains("intact"))
        .await;
    console
        .text_when("#audit-records", |t| t.contains("handshake"))
        .await;

    // Every page at both sizes, light and dark.
    screenshots(&console, &shots, "light", &id).await;
    light.clone().close().await.unwrap();
    let dark = driver.browser(true).await;
    let console = Console::new(&dark, &a);
    console.open("").await;
    console.login(&admin_token(&a)).await;
    console.text_when("#node h2", |t| t == "Mesh plant-a").await;
    screenshots(&console, &shots, "dark", &id).await;

    // The overview of a registry of 100 federations renders within budget.
    let elapsed = overview_with_100_federations(&dark, &a).await;
    dark.clone().close().await.unwrap();
    println!("overview render time with 100 federations: {elapsed:.0} ms");
    assert!(
        elapsed < RENDER_BUDGET_MS,
        "the overview took {elapsed:.0} ms with 100 federations"
    );
    println!("screenshots in {}", shots.display());
}

/// An API that listens beyond loopback (here every address, reached on loopback) serves TLS
/// with a certificate from the mesh's CA: the CLI works trusting the
/// mesh CA, openssl verifies the chain for 127.0.0.1 against the mesh CA alone, plain HTTP
/// gets no answer, and the browser gets the console over https.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_loopback_the_api_and_its_console_are_served_over_tls_from_the_mesh_ca() {
    let mut m = mesh("plant-a");
    m.configure("api", "listen", "0.0.0.0:0");
    m.start();
    assert!(m.api_addr().ip().is_unspecified(), "{}", m.api_addr());
    let port = m.api_addr().port();
    let list = m.cli(&["federation", "list", "--json"]);
    assert_eq!(list.ok().trim(), "[]", "{list}");

    let ca = m.dir().join("ca/ca.crt");
    let verified = Command::new("openssl")
        .args([
            "s_client",
            "-brief",
            "-verify_return_error",
            "-verify_ip",
            "127.0.0.1",
        ])
        .arg("-CAfile")
        .arg(&ca)
        .args(["-connect", &format!("127.0.0.1:{port}")])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&verified.stderr);
    assert!(
        verified.status.success() && said.contains("Verification: OK"),
        "openssl did not verify the API's certificate against the mesh CA:\n{said}"
    );
    // The name check is real: the certificate does not name another address.
    let wrong = Command::new("openssl")
        .args([
            "s_client",
            "-brief",
            "-verify_return_error",
            "-verify_ip",
            "10.9.8.7",
        ])
        .arg("-CAfile")
        .arg(&ca)
        .args(["-connect", &format!("127.0.0.1:{port}")])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!wrong.status.success(), "a certificate for 10.9.8.7?");

    let plain = plain_http(port);
    assert!(
        !plain.starts_with("HTTP/1.1"),
        "answered in the clear: {plain}"
    );

    // The browser trusts the mesh's issuing CA (pinned by its key: Chromium's pins apply to
    // the certificates a server presents, the leaf and the issuing CA) and gets the console
    // over https.
    let driver = Driver::start();
    let issuing = m.dir().join("ca/issuing.crt");
    let client = driver
        .browser_trusting(false, Some(&spki_sha256(&issuing)))
        .await;
    client
        .goto(&format!("https://127.0.0.1:{port}/"))
        .await
        .unwrap();
    let console = Console {
        client: &client,
        base: format!("https://127.0.0.1:{port}/"),
    };
    console.login(&admin_token(&m)).await;
    console.text_when("#node h2", |t| t == "Mesh plant-a").await;
    let url = client.current_url().await.unwrap();
    assert_eq!(url.scheme(), "https");
    client.close().await.unwrap();
}

/// What an API on loopback `port` sends back to a plain HTTP request.
fn plain_http(port: u16) -> String {
    use std::io::Read as _;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let _ = write!(s, "GET / HTTP/1.1\r\nHost: meshfed\r\n\r\n");
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

/// The base64 SHA-256 of the public key of the first certificate in the PEM file `ca`, as Chromium's
/// `--ignore-certificate-errors-spki-list` names a key it trusts.
fn spki_sha256(ca: &Path) -> String {
    use base64::Engine as _;
    let text = std::fs::read_to_string(ca).unwrap();
    let pem = pem::parse(text).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(pem.contents()).unwrap();
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, cert.public_key().raw);
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

/// The console's answers carry the security headers; the API's JSON is not a console page.
fn check_console_headers(m: &Mesh) {
    for path in ["/", "/console/app.js", "/console/style.css"] {
        let head = raw_get(m, path);
        assert!(head.starts_with("HTTP/1.1 200"), "{path}: {head}");
        for header in [
            "content-security-policy: default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
            "x-content-type-options: nosniff",
            "referrer-policy: no-referrer",
        ] {
            assert!(head.contains(header), "{path} lacks {header}:\n{head}");
        }
    }
    let missing = raw_get(m, "/console/nothing.js");
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
}

/// The response head of `GET path` on `m`'s API, header names lower-cased.
fn raw_get(m: &Mesh, path: &str) -> String {
    use std::io::Read as _;
    let mut s = std::net::TcpStream::connect(m.api_addr()).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: meshfed\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    s.read_to_end(&mut response).unwrap();
    let text = String::from_utf8_lossy(&response);
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    head.lines()
        .map(|l| match l.split_once(": ") {
            Some((name, value)) => format!("{}: {value}", name.to_ascii_lowercase()),
            None => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The status `federation list` shows for `id` on `m`.
fn federation_status(m: &Mesh, id: &str) -> String {
    let all = federations(m);
    let f = all.iter().find(|f| f["id"] == id).unwrap();
    f["status"].as_str().unwrap().to_owned()
}

/// Opens the live page and sends reliable messages from plant-a to supplier-b with `meshfed
/// send` (one per line on its standard input) until the total rate plot shows a sent rate
/// above 0 on a new point.
async fn watch_the_rate_plot(console: &Console<'_>, a: &mut Mesh) {
    console.open("live").await;
    // The node serves its statistics: the page says so and plots them.
    console
        .attr_when("main", "data-stats", |s| s == "present")
        .await;
    let (sender, mut input) = a.spawn_cli_piped(&[
        "send",
        "--to",
        "supplier-b",
        "--topic",
        "console/rate",
        "--qos",
        "1",
        "-",
    ]);
    let mut n = 0u32;
    let mut feed = move || {
        for _ in 0..20 {
            n += 1;
            writeln!(input, "{{\"n\": {n}}}").ok()?;
        }
        Some(())
    };
    let plot = "#plot-total-rate";
    let first = console.attr_when(plot, "data-points", |_| true).await;
    let moved = eventually("the rate plot shows messages sent", async || {
        feed()?;
        let last: Value = serde_json::from_str(&console.attr(plot, "data-last").await?).ok()?;
        let points = console.attr(plot, "data-points").await?;
        (last[0].as_f64()? > 0.0 && points != first).then_some(last)
    })
    .await;
    println!("rate plot moved: sent, delivered, refused per second = {moved}");
    shoot_all_sizes(
        console.client,
        &screenshot_dir_path(),
        "live-moving",
        "light",
    )
    .await;
    drop(feed);
    let out = sender.finish(DEADLINE);
    out.ok();
}

/// Puts 99 more federations in the registry of a fresh mesh federated with `a` (copies of its
/// real one, each with its own id and peer mesh, as the responder: none is dialled), starts
/// it, and measures in the browser the time from navigation to the overview's table with all
/// 100 rows, from the performance mark the console sets.
async fn overview_with_100_federations(client: &Client, a: &Mesh) -> f64 {
    let mut seeded = mesh("hub-s");
    seeded.start();
    federate(&seeded, a);
    seeded.stop();
    let store = meshfed_store::Store::open(&seeded.dir().join("store/meshfed.db")).unwrap();
    let real = store.federations().unwrap().remove(0);
    for i in 1..100 {
        let mut copy = real.clone();
        copy.id = format!("fed_seeded_{i:03}").parse().unwrap();
        copy.peer_mesh = format!("seed-{i:03}").parse().unwrap();
        copy.peer_addrs = vec![];
        copy.role = meshfed_store::Role::Responder;
        store.insert_federation(&copy).unwrap();
    }
    drop(store);
    seeded.start();
    let console = Console::new(client, &seeded);
    console.open("").await;
    console.login(&admin_token(&seeded)).await;
    console.text_when("#node h2", |t| t == "Mesh hub-s").await;
    // A fresh navigation, measured from its start.
    client.refresh().await.unwrap();
    console.attr_when("main", "data-rendered", |_| true).await;
    let rows = client
        .find_all(Locator::Css("#federation-rows tr"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 100);
    let mark = client
        .execute(
            "return performance.getEntriesByName('overview-rendered')[0].startTime",
            vec![],
        )
        .await
        .unwrap();
    mark.as_f64().unwrap()
}

/// Every page, and the federation page of `id`, at both viewports, in `scheme`.
async fn screenshots(console: &Console<'_>, dir: &Path, scheme: &str, id: &str) {
    let dark: bool = console
        .client
        .execute(
            "return matchMedia('(prefers-color-scheme: dark)').matches",
            vec![],
        )
        .await
        .unwrap()
        .as_bool()
        .unwrap();
    assert_eq!(dark, scheme == "dark", "the browser's colour scheme");
    for page in PAGES {
        console.open(page).await;
        console.ready(page).await;
        shoot_all_sizes(console.client, dir, page, scheme).await;
    }
    console.open(&format!("federation/{id}")).await;
    console.ready("federation").await;
    shoot_all_sizes(console.client, dir, "federation", scheme).await;
}

/// A screenshot of what `client` shows at each viewport, named `page-viewport-scheme.png`.
async fn shoot_all_sizes(client: &Client, dir: &Path, page: &str, scheme: &str) {
    for (name, width, height) in VIEWPORTS {
        viewport(client, width, height).await;
        let png = client.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a screenshot is a PNG");
        let path = dir.join(format!("{page}-{name}-{scheme}.png"));
        std::fs::write(&path, png).unwrap();
        println!("screenshot {}", path.display());
    }
    viewport(client, 1366, 768).await;
}

/// Sizes the window so that the page's viewport is `width` × `height` CSS pixels: the window
/// is the viewport plus the browser's own frame, which a resize shows (and shows late).
async fn viewport(client: &Client, width: u32, height: u32) {
    let want = (u64::from(width), u64::from(height));
    eventually(&format!("the viewport is {width}x{height}"), async || {
        let inner = client
            .execute("return [innerWidth, innerHeight]", vec![])
            .await
            .ok()?;
        let inner = (inner[0].as_u64()?, inner[1].as_u64()?);
        if inner == want {
            return Some(());
        }
        let (w, h) = client.get_window_size().await.ok()?;
        let fit = |window: u64, want: u64, inner: u64| {
            u32::try_from((window + want).saturating_sub(inner)).ok()
        };
        client
            .set_window_size(fit(w, want.0, inner.0)?, fit(h, want.1, inner.1)?)
            .await
            .ok()?;
        None
    })
    .await;
}

/// `target/console-screenshots/`, emptied.
fn screenshot_dir() -> PathBuf {
    let dir = screenshot_dir_path();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.canonicalize().unwrap()
}

/// `target/console-screenshots/`.
fn screenshot_dir_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/console-screenshots")
}

/// Polls `check` until it gives a value, for at most [`DEADLINE`].
async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One node's console in the browser.
struct Console<'a> {
    client: &'a Client,
    base: String,
}

impl<'a> Console<'a> {
    fn new(client: &'a Client, m: &Mesh) -> Self {
        Self {
            client,
            base: format!("http://{}/", m.api_addr()),
        }
    }

    /// Opens page `hash` (`""` for the start page).
    async fn open(&self, hash: &str) {
        let url = if hash.is_empty() {
            self.base.clone()
        } else {
            format!("{}#/{hash}", self.base)
        };
        self.client.goto(&url).await.unwrap();
    }

    /// Logs in with `token` on the login form.
    async fn login(&self, token: &str) {
        let input = self.wait(Locator::Css("#token")).await;
        input.clear().await.unwrap();
        input.send_keys(token).await.unwrap();
        self.click("#login-button").await;
    }

    /// Waits until what `page` loads is shown.
    async fn ready(&self, page: &str) {
        let (css, attr) = match page {
            "overview" => ("main", "data-rendered"),
            "topology" => ("#topology svg", "viewBox"),
            "live" => ("main", "data-stats"),
            "federation" => ("main", "data-status"),
            "invitations" => ("#invite-button", "type"),
            "policy" => ("#policy-agreements table", "class"),
            "audit" => ("#audit-records", "id"),
            other => panic!("no page {other}"),
        };
        if page == "policy" {
            self.wait(Locator::Css(css)).await;
            return;
        }
        self.attr_when(css, attr, |_| true).await;
    }

    /// Clicks `button` on a federation page and confirms in the dialog.
    async fn act(&self, op: &str) {
        self.click(&format!("#action-{op}")).await;
        self.click("dialog[open] #confirm-ok").await;
    }

    async fn wait(&self, locator: Locator<'_>) -> fantoccini::elements::Element {
        let client = self.client;
        eventually("an element is shown", async || {
            client.find(locator).await.ok()
        })
        .await
    }

    async fn click(&self, css: &str) {
        let client = self.client;
        eventually(&format!("{css} can be clicked"), async || {
            let el = client.find(Locator::Css(css)).await.ok()?;
            el.is_enabled().await.ok()?.then_some(())?;
            el.click().await.ok()
        })
        .await;
    }

    async fn type_into(&self, css: &str, text: &str) {
        let el = self.wait(Locator::Css(css)).await;
        el.clear().await.unwrap();
        el.send_keys(text).await.unwrap();
    }

    async fn attr(&self, css: &str, name: &str) -> Option<String> {
        let el = self.client.find(Locator::Css(css)).await.ok()?;
        el.attr(name).await.ok()?
    }

    /// The text of `css` once `ok` holds for it.
    async fn text_when(&self, css: &str, ok: impl Fn(&str) -> bool) -> String {
        let client = self.client;
        let what = format!("{css} shows the text wanted");
        eventually(&what, async || {
            let el = client.find(Locator::Css(css)).await.ok()?;
            let text = el.text().await.ok()?;
            ok(&text).then_some(text)
        })
        .await
    }

    /// Attribute `name` of `css` once it is set and `ok` holds for it.
    async fn attr_when(&self, css: &str, name: &str, ok: impl Fn(&str) -> bool) -> String {
        let what = format!("{css} has {name} as wanted");
        eventually(&what, async || {
            let v = self.attr(css, name).await?;
            ok(&v).then_some(v)
        })
        .await
    }

    /// Property `name` of `css` once `ok` holds for it.
    async fn prop_when(&self, css: &str, name: &str, ok: impl Fn(&str) -> bool) -> String {
        let client = self.client;
        let what = format!("{css} has {name} as wanted");
        eventually(&what, async || {
            let el = client.find(Locator::Css(css)).await.ok()?;
            let v = el.prop(name).await.ok()??;
            ok(&v).then_some(v)
        })
        .await
    }
}

/// chromedriver on an ephemeral loopback port, in a process group of its own: dropping it
/// kills the group (chromedriver and every browser it started).
struct Driver {
    child: Child,
    url: String,
    profiles: tempfile::TempDir,
}

impl Driver {
    fn start() -> Self {
        for bin in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(bin).exists(),
                "{bin} is missing: install the Debian packages chromium and chromium-driver (scripts/test does)"
            );
        }
        use std::os::unix::process::CommandExt as _;
        let mut child = Command::new(CHROMEDRIVER)
            .args(["--port=0", "--allowed-ips=127.0.0.1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let port = loop {
            let Some(Ok(line)) = lines.next() else {
                panic!("chromedriver exited before saying its port");
            };
            if let Some(rest) = line.split("started successfully on port ").nth(1) {
                break rest.trim_end_matches('.').trim().to_owned();
            }
        };
        // Keep reading its output so that it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            profiles: meshfed_testkit::temp_dir(),
        }
    }

    /// A new headless Chromium session with a fresh profile, in dark mode or light.
    async fn browser(&self, dark: bool) -> Client {
        self.browser_trusting(dark, None).await
    }

    /// [`Driver::browser`], trusting the CA whose key has the SHA-256 (base64) `spki`.
    async fn browser_trusting(&self, dark: bool, spki: Option<&str>) -> Client {
        let profile = self
            .profiles
            .path()
            .join(if dark { "dark" } else { "light" });
        let mut args = vec![
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--window-size=1366,768".to_owned(),
            format!("--user-data-dir={}", profile.display()),
        ];
        if let Some(spki) = spki {
            args.push(format!("--ignore-certificate-errors-spki-list={spki}"));
        }
        if dark {
            args.push("--force-dark-mode".to_owned());
            args.push("--blink-settings=preferredColorScheme=0".to_owned());
        } else {
            args.push("--blink-settings=preferredColorScheme=1".to_owned());
        }
        let caps = json!({
            "goog:chromeOptions": { "binary": CHROMIUM, "args": args },
        });
        let Value::Object(caps) = caps else {
            unreachable!("a JSON object")
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&self.url)
            .await
            .unwrap()
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
    }
}
