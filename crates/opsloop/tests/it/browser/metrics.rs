//! The Metrics area in the browser: series put in through remote write are drawn on the graph
//! page (a line and a legend entry each, a tooltip on hover, a click on the legend shows one
//! alone), a wrong expression says why under the box, the Table tab lists the instant values,
//! the state stays in the address; the Targets page lists the server's own scrape, and admins
//! see the TSDB's statistics. With a `prometheus.yml` and a rule file, the Rules page shows the
//! rules and a firing alert, the Alerts page that alert; the golden-signals dashboard draws one
//! line per version of the proxy series written in, and none of another environment's.

use std::time::Instant;

use fantoccini::{Client, Locator};
use opsloop_metrics::labels::Labels;
use opsloop_metrics::storage::Sample;
use reqwest::StatusCode;

use super::{
    ChromeDriver, POLL, STEP_TIMEOUT, assert_no_csp_violation, assert_page, location, page_text, read, screenshot,
    sign_in_as_admin, wait_for_location, wait_for_text,
};
use crate::harness::Server;

/// The series the test writes: one metric on two instances of a project.
const METRIC: &str = "shop_requests_total";

/// Writes `METRIC` for instances `a` and `b` of project `shop`: a sample every 15 s over the
/// last 10 minutes, rising by 1 (a) and 2 (b) per sample.
async fn write_series(server: &Server, token: &str) {
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("a clock after 1970").as_millis()
            as i64;
    let series: Vec<(Labels, Vec<Sample>)> = [("a", 1.0), ("b", 2.0)]
        .into_iter()
        .map(|(instance, slope)| {
            let labels = Labels::from_pairs([("__name__", METRIC), ("instance", instance), ("project", "shop")]);
            let samples = (0..40).map(|i| Sample { t: now - (40 - i) * 15_000, v: slope * i as f64 }).collect();
            (labels, samples)
        })
        .collect();
    let response = Server::client()
        .post(format!("{}/prometheus/api/v1/write", server.url))
        .bearer_auth(token)
        .header("Content-Type", "application/x-protobuf")
        .header("Content-Encoding", "snappy")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .body(opsloop_metrics::remote::encode(&series))
        .send()
        .await
        .expect("POST remote write");
    let status = response.status();
    assert_eq!(status, StatusCode::NO_CONTENT, "remote write: {}", response.text().await.unwrap_or_default());
}

/// Waits until `script` returns `expected`, and fails with a screenshot when it never does.
async fn wait_for_value(browser: &Client, script: &str, expected: serde_json::Value, what: &str) {
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        let value = read(browser, script).await;
        if value == expected {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "{what}: expected {expected}, the page says {value} at {} ({}); it shows:\n{}",
                location(browser).await,
                screenshot(browser, "metrics").await,
                page_text(browser).await
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_written_in_are_graphed_and_tabled_in_the_browser() {
    let Some(driver) = ChromeDriver::start_or_skip().await else { return };
    let server = tokio::task::spawn_blocking(Server::start).await.expect("start the server");
    let token = tokio::task::block_in_place(|| server.token("admin"));
    write_series(&server, &token).await;
    let browser = driver.open_browser().await;
    sign_in_as_admin(&browser, &server).await;
    let at = |path: &str| format!("{}{path}", server.url);

    // 1. The Metrics link of the navigation opens the graph page.
    browser.goto(&at("/projects")).await.expect("open /projects");
    let link = wait_for_text(&browser, "nav.areas a[href='/metrics/graph']", "Metrics").await;
    link.click().await.expect("follow Metrics");
    wait_for_location(&browser, "/metrics/graph").await;
    wait_for_text(&browser, "main h1", "Metrics").await;
    wait_for_text(&browser, "nav.areas a[aria-current=page]", "Metrics").await;

    // 2. A linked graph: one line and one legend entry per series.
    let linked = format!("/metrics/graph?expr={METRIC}&range=15m");
    browser.goto(&at(&linked)).await.expect("open a linked graph");
    wait_for_value(
        &browser,
        "return document.querySelectorAll('svg#metrics-chart path.series').length",
        2.into(),
        "a line per series",
    )
    .await;
    let drawn = read(&browser, "return [...document.querySelectorAll('svg#metrics-chart path.series')].every(p => p.getAttribute('d').split('L').length > 30)").await;
    assert_page(&browser, drawn == serde_json::Value::Bool(true), "each line through its 40 samples").await;
    wait_for_text(&browser, "ul.legend button.series", &format!("{METRIC}{{instance=\"a\", project=\"shop\"}}")).await;
    wait_for_text(&browser, "ul.legend button.series", &format!("{METRIC}{{instance=\"b\", project=\"shop\"}}")).await;
    // Value ticks with SI suffixes are not needed for 0..78; time ticks are clock times.
    let ticks = read(
        &browser,
        "return [...document.querySelectorAll('svg#metrics-chart text.tick.x')].map(t => t.textContent)",
    )
    .await;
    let ticks: Vec<String> = serde_json::from_value(ticks).unwrap_or_default();
    assert_page(
        &browser,
        ticks.len() >= 2 && ticks.iter().all(|t| t.len() == 5 && t.as_bytes()[2] == b':'),
        &format!("time ticks as HH:MM: {ticks:?}"),
    )
    .await;

    // A hover shows the nearest sample's time, value and series.
    let hovered = r"
        const overlay = document.querySelector('svg#metrics-chart rect.overlay');
        const box = overlay.getBoundingClientRect();
        overlay.dispatchEvent(new MouseEvent('mousemove', { clientX: box.right - 2, clientY: box.top + 2, bubbles: true }));
        const tip = document.querySelector('#chart .tooltip');
        return tip.hidden ? '' : tip.textContent;";
    let tip = read(&browser, hovered).await;
    let tip = tip.as_str().unwrap_or_default();
    assert_page(
        &browser,
        tip.contains("value: 78") && tip.contains("instance=\"b\""),
        &format!("a tooltip for b's last sample: {tip:?}"),
    )
    .await;

    // Clicking a legend entry shows that series alone; clicking it again shows both.
    let shown = "return [...document.querySelectorAll('svg#metrics-chart path.series')].filter(p => p.getAttribute('display') !== 'none').length";
    let first = wait_for_text(&browser, "ul.legend button.series", "instance=\"a\"").await;
    first.click().await.expect("isolate a");
    wait_for_value(&browser, shown, 1.into(), "one series isolated").await;
    let first = wait_for_text(&browser, "ul.legend button.series", "instance=\"a\"").await;
    first.click().await.expect("show both again");
    wait_for_value(&browser, shown, 2.into(), "both series again").await;
    assert_no_csp_violation(&browser).await;

    // 3. A wrong expression: the API's error under the box, no dialog; Enter runs it.
    let expr = browser.find(Locator::Css("textarea[name='expr']")).await.expect("the expression box");
    expr.clear().await.expect("clear the expression");
    expr.send_keys(&format!("sum({METRIC}")).await.expect("type a broken expression");
    expr.send_keys("\u{E007}").await.expect("press Enter");
    let error = wait_for_text(&browser, "p#metrics-error.error[data-error-type='bad_data']", "").await;
    assert!(error.is_displayed().await.expect("error visibility"), "the error is shown");
    let message = error.text().await.expect("the error's text");
    assert_page(&browser, message.contains("parenthesis"), &format!("the parse error is explained: {message:?}")).await;
    let typed = expr.prop("value").await.expect("the box's value");
    assert_eq!(typed.as_deref(), Some(format!("sum({METRIC}").as_str()), "Enter ran the query, no new line");

    // 4. Fixed, and in the Table tab: a row per series with its instant value.
    expr.clear().await.expect("clear the expression");
    expr.send_keys(METRIC).await.expect("type the metric");
    expr.send_keys("\u{E007}").await.expect("press Enter");
    wait_for_value(
        &browser,
        "return document.querySelector('#metrics-error').hidden",
        true.into(),
        "the error goes away",
    )
    .await;
    browser.find(Locator::Id("tab-table")).await.expect("the Table tab").click().await.expect("open Table");
    wait_for_value(
        &browser,
        "return document.querySelectorAll('#result-table tbody tr').length",
        2.into(),
        "a row per series",
    )
    .await;
    let row = wait_for_text(&browser, "#result-table tbody tr", "instance=\"b\"").await;
    let text = row.text().await.expect("row text");
    assert!(text.contains("78"), "b's newest value: {text}");
    let here = location(&browser).await;
    assert!(
        here.contains("tab=table") && here.contains(&format!("expr={METRIC}")),
        "the state is in the address: {here}"
    );

    // 5. The address alone brings the same table back.
    browser.goto(&at(&here)).await.expect("open the bookmarked address");
    wait_for_value(
        &browser,
        "return document.querySelectorAll('#result-table tbody tr').length",
        2.into(),
        "the bookmarked table",
    )
    .await;
    assert_no_csp_violation(&browser).await;

    // 6. Admins see the TSDB's statistics.
    browser.goto(&at("/metrics/tsdb")).await.expect("open the TSDB status");
    wait_for_text(&browser, "main h1", "TSDB status").await;
    wait_for_text(&browser, "dl.facts dt", "Series").await;
    // The server scrapes itself too, so only what every series has is sure to be in a top 10.
    wait_for_text(&browser, "main table.top td code", "__name__").await;
    assert_no_csp_violation(&browser).await;

    // 7. The Targets page lists what the server scrapes: without a prometheus.yml, itself.
    let targets = wait_for_text(&browser, "nav.subnav a[href='/metrics/targets']", "Targets").await;
    targets.click().await.expect("open Targets");
    wait_for_location(&browser, "/metrics/targets").await;
    wait_for_text(&browser, "main h2", "opsloop").await;
    wait_for_text(&browser, "main table.targets td code", &format!("{}/metrics", server.url)).await;
    assert_no_csp_violation(&browser).await;

    // 8. With auto-refresh on, the graph is drawn again on its own; the choice is in the address.
    browser.goto(&at(&linked)).await.expect("open the graph again");
    wait_for_value(
        &browser,
        "return document.querySelectorAll('svg#metrics-chart path.series').length",
        2.into(),
        "the graph again",
    )
    .await;
    wait_for_text(&browser, "select#metrics-names option", METRIC).await;
    browser
        .execute("document.querySelector('svg#metrics-chart').dataset.old = '1';", vec![])
        .await
        .expect("mark the graph");
    let refresh = browser.find(Locator::Css("select[name='refresh'] option[value='5s']")).await.expect("a 5 s refresh");
    refresh.click().await.expect("choose 5 s");
    wait_for_value(&browser, "return location.search.includes('refresh=5s')", true.into(), "refresh in the address")
        .await;
    let redrawn =
        "const svg = document.querySelector('svg#metrics-chart'); return !!svg && svg.dataset.old === undefined;";
    wait_for_value(&browser, redrawn, true.into(), "a graph drawn again by the refresh").await;
    browser.close().await.expect("end the browser session");
}

/// A rule file with a recording rule and an alert that fires at its first evaluation.
const RULES: &str = "groups:
  - name: shop-rules
    interval: 1s
    rules:
      - record: shop:requests:sum
        expr: sum(shop_requests_total)
      - alert: ShopAlwaysFiring
        expr: vector(1)
        labels:
          severity: page
        annotations:
          summary: the shop always fires
";

/// Writes the proxy's golden signals of `web` in `shop`'s production for two versions over the
/// last 10 minutes, and a third version in staging that production's dashboard must not show.
async fn write_proxy_signals(server: &Server, token: &str) {
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("a clock after 1970").as_millis()
            as i64;
    let mut series: Vec<(Labels, Vec<Sample>)> = Vec::new();
    let versions = [
        ("shop/production/web", "1.0.0#1", 1.0),
        ("shop/production/web", "1.1.0#2", 2.0),
        ("shop/staging/web", "9.9.9#9", 3.0),
    ];
    for (service, version, scale) in versions {
        let mut add = |name: &str, extra: Option<(&str, &str)>, per_sample: f64, gauge: bool| {
            let mut pairs = vec![("__name__", name), ("service", service), ("version", version)];
            pairs.extend(extra);
            let samples = (0..40)
                .map(|i| Sample {
                    t: now - (40 - i) * 15_000,
                    v: if gauge { per_sample } else { per_sample * i as f64 },
                })
                .collect();
            series.push((Labels::from_pairs(pairs), samples));
        };
        add("opsloop_proxy_requests_total", None, 10.0 * scale, false);
        add("opsloop_proxy_errors_total", None, 1.0, false);
        add("opsloop_proxy_request_duration_seconds_bucket", Some(("le", "0.1")), 5.0 * scale, false);
        add("opsloop_proxy_request_duration_seconds_bucket", Some(("le", "0.5")), 9.0 * scale, false);
        add("opsloop_proxy_request_duration_seconds_bucket", Some(("le", "+Inf")), 10.0 * scale, false);
        add("opsloop_proxy_saturation", None, 0.2 * scale, true);
    }
    let response = Server::client()
        .post(format!("{}/prometheus/api/v1/write", server.url))
        .bearer_auth(token)
        .header("Content-Type", "application/x-protobuf")
        .header("Content-Encoding", "snappy")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .body(opsloop_metrics::remote::encode(&series))
        .send()
        .await
        .expect("POST remote write");
    let status = response.status();
    assert_eq!(status, StatusCode::NO_CONTENT, "remote write: {}", response.text().await.unwrap_or_default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_alerts_and_golden_signals_in_the_browser() {
    let Some(driver) = ChromeDriver::start_or_skip().await else { return };
    let dir = tempfile::tempdir().expect("temporary directory");
    std::fs::write(dir.path().join("rules.yml"), RULES).expect("write rules.yml");
    let config = dir.path().join("prometheus.yml");
    std::fs::write(&config, "global:\n  evaluation_interval: 1s\nrule_files: ['rules.yml']\nscrape_configs: []\n")
        .expect("write prometheus.yml");
    let data_dir = dir.path().join("data");
    let config_arg = config.to_str().expect("utf-8 path").to_owned();
    let server = tokio::task::spawn_blocking(move || Server::start_in(&data_dir, &["--metrics-config", &config_arg]))
        .await
        .expect("start the server");
    let token = tokio::task::block_in_place(|| server.token("admin"));
    let created = Server::client()
        .post(format!("{}/api/v1/projects", server.url))
        .bearer_auth(&token)
        .json(&serde_json::json!({"name": "shop", "repo_url": "https://example.invalid/shop.git"}))
        .send()
        .await
        .expect("create shop");
    assert_eq!(created.status(), StatusCode::CREATED);
    write_proxy_signals(&server, &token).await;
    let browser = driver.open_browser().await;
    sign_in_as_admin(&browser, &server).await;
    let at = |path: &str| format!("{}{path}", server.url);

    // 1. Rules: the Rules tab beside Graph and Targets lists the group with both rules, the
    // alerting rule firing with its alert, each expression linked to the graph.
    browser.goto(&at("/metrics/graph")).await.expect("open the graph page");
    let tab = wait_for_text(&browser, "nav.subnav a[href='/metrics/rules']", "Rules").await;
    tab.click().await.expect("open Rules");
    wait_for_location(&browser, "/metrics/rules").await;
    wait_for_text(&browser, "section.rule-group h2", "shop-rules").await;
    wait_for_text(&browser, "article.rule[data-kind='recording'] h3", "shop:requests:sum").await;
    let firing = "return !!document.querySelector(\"article.rule[data-rule='ShopAlwaysFiring'] h3 .state[data-state='firing']\")";
    // The alert fires at the group's first evaluation, a second or so after the start.
    let deadline = Instant::now() + STEP_TIMEOUT;
    while read(&browser, firing).await != serde_json::Value::Bool(true) {
        assert!(Instant::now() < deadline, "ShopAlwaysFiring never showed firing:\n{}", page_text(&browser).await);
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        browser.refresh().await.expect("reload the rules page");
    }
    wait_for_text(&browser, "article.rule[data-rule='ShopAlwaysFiring'] table.alerts td", "severity=\"page\"").await;
    wait_for_text(&browser, "article.rule[data-rule='ShopAlwaysFiring'] dd .health", "ok").await;
    let link = read(
        &browser,
        "return document.querySelector(\"article.rule[data-rule='shop:requests:sum'] p.expr a\").getAttribute('href')",
    )
    .await;
    assert_eq!(
        link,
        serde_json::json!("/metrics/graph?expr=sum%28shop_requests_total%29"),
        "the expression opens the graph"
    );
    assert_no_csp_violation(&browser).await;

    // 2. Alerts: the firing alert with its labels and annotations.
    let tab = wait_for_text(&browser, "nav.subnav a[href='/metrics/alerts']", "Alerts").await;
    tab.click().await.expect("open Alerts");
    wait_for_location(&browser, "/metrics/alerts").await;
    wait_for_text(&browser, "section.alert-group h2", "ShopAlwaysFiring").await;
    wait_for_text(&browser, "section.alert-group tr.alert[data-state='firing'] td", "the shop always fires").await;
    wait_for_text(&browser, "#alert-counts", "1 firing").await;
    assert_no_csp_violation(&browser).await;

    // 3. The golden signals of web in production: one line per version on every chart, the
    // staging version nowhere.
    browser.goto(&at("/projects/shop/environments/production/signals?service=web")).await.expect("open the signals");
    wait_for_text(&browser, "main h1", "Golden signals of web in production").await;
    for panel in ["rate", "errors", "p50", "p95", "p99", "saturation"] {
        wait_for_value(
            &browser,
            &format!("return document.querySelectorAll('svg#signals-{panel} path.series').length"),
            2.into(),
            &format!("a line per version on {panel}"),
        )
        .await;
    }
    let legend =
        read(&browser, "return [...document.querySelectorAll('#legend-rate button.series')].map(b => b.textContent)")
            .await;
    assert_eq!(legend, serde_json::json!(["1.0.0#1", "1.1.0#2"]), "the versions in the legend");
    let drawn = read(&browser, "return [...document.querySelectorAll('svg#signals-rate path.series')].every(p => p.getAttribute('d').split('L').length > 20)").await;
    assert_page(&browser, drawn == serde_json::Value::Bool(true), "each rate line through the written samples").await;
    // v2 serves twice v1's requests: 20 per 15 s is 1.33/s; the tooltip's value has its unit.
    let hovered = r"
        const overlay = document.querySelector('svg#signals-rate rect.overlay');
        const box = overlay.getBoundingClientRect();
        overlay.dispatchEvent(new MouseEvent('mousemove', { clientX: box.right - 60, clientY: box.top + 2, bubbles: true }));
        const tip = document.querySelector('#chart-rate .tooltip');
        return tip.hidden ? '' : tip.textContent;";
    let tip = read(&browser, hovered).await;
    let tip = tip.as_str().unwrap_or_default();
    assert_page(
        &browser,
        tip.contains("1.33/s") && tip.contains("1.1.0#2"),
        &format!("a tooltip for v2's rate: {tip:?}"),
    )
    .await;
    let ticks = read(
        &browser,
        "return [...document.querySelectorAll('svg#signals-errors text.tick.y')].map(t => t.textContent)",
    )
    .await;
    let ticks: Vec<String> = serde_json::from_value(ticks).unwrap_or_default();
    assert_page(
        &browser,
        !ticks.is_empty() && ticks.iter().all(|t| t.ends_with('%')),
        &format!("error ratio in percent: {ticks:?}"),
    )
    .await;
    assert_no_csp_violation(&browser).await;

    // 4. Staging shows its own version only.
    browser.goto(&at("/projects/shop/environments/staging/signals?service=web")).await.expect("open staging's signals");
    wait_for_value(
        &browser,
        "return [...document.querySelectorAll('#legend-rate button.series')].map(b => b.textContent).join()",
        "9.9.9#9".into(),
        "staging's one version",
    )
    .await;
    browser.close().await.expect("end the browser session");
}
