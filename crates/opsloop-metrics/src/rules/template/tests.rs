//! Tests of the Go-template subset against what Prometheus documents.

use super::*;
use crate::labels::Labels;

fn data(value: f64) -> TemplateData {
    TemplateData {
        labels: BTreeMap::from([
            ("instance".to_owned(), "web-1:9100".to_owned()),
            ("job".to_owned(), "node".to_owned()),
        ]),
        external_labels: BTreeMap::from([("cluster".to_owned(), "eu1".to_owned())]),
        external_url: "https://ops.example.com/prometheus".to_owned(),
        value,
    }
}

fn run(text: &str) -> String {
    expand(text, "t", &data(1234567.0), None).unwrap_or_else(|e| format!("ERROR {e}"))
}

fn each(func: &str, values: &[f64]) -> String {
    values.iter().map(|v| format!("{}:", run(&format!("{{{{ {func} {} }}}}", go_float_v(*v))))).collect()
}

#[test]
fn prometheus_documented_humanize() {
    // The cases of Prometheus's template_test.go.
    assert_eq!(each("humanize", &[0.0, 1.0, 1234567.0, 0.12]), "0:1:1.235M:120m:");
    assert_eq!(run("{{ humanize 1234567 }}"), "1.235M");
    assert_eq!(each("humanize", &[0.000_001, 1e24, 1e27]), "1u:1Y:1000Y:");
    assert_eq!(each("humanize1024", &[0.0, 1.0, 1_048_576.0, 0.12]), "0:1:1Mi:0.12:");
    assert_eq!(
        each(
            "humanizeDuration",
            &[
                0.0,
                1.0,
                60.0,
                3600.0,
                86400.0,
                86400.0 + 3600.0,
                -(86400.0 * 2.0 + 3600.0 * 3.0 + 60.0 * 4.0 + 5.0),
                899.99
            ]
        ),
        "0s:1s:1m 0s:1h 0m 0s:1d 0h 0m 0s:1d 1h 0m 0s:-2d 3h 4m 5s:14m 59s:"
    );
    assert_eq!(run("{{ humanizeDuration 3661 }}"), "1h 1m 1s");
    assert_eq!(
        each("humanizeDuration", &[0.1, 0.0001, 0.12345, 60.1, 60.5, 1.2345, 12.345]),
        "100ms:100us:123.5ms:1m 0s:1m 0s:1.234s:12.35s:"
    );
    assert_eq!(
        each("humanizePercentage", &[0.0, 0.1234567, 0.01, 0.02, 0.9999, 1.0, 1.5]),
        "0%:12.35%:1%:2%:99.99%:100%:150%:"
    );
    assert_eq!(run("{{ humanizeTimestamp 1435065584.128 }}"), "2015-06-23 13:19:44.128 +0000 UTC");
    assert_eq!(run("{{ humanizeTimestamp 0 }}"), "1970-01-01 00:00:00 +0000 UTC");
    assert_eq!(run(r#"{{ humanize "1234567" }}"#), "1.235M");
    assert_eq!(run("{{ humanize1024 +Inf }}"), "ERROR template: t:1: bad number syntax: \"+Inf\"");
}

#[test]
fn values_print_as_go_prints_them() {
    assert_eq!(run("{{ $value }}"), "1.234567e+06");
    assert_eq!(run("{{ .Value }}"), "1.234567e+06");
    assert_eq!(expand("{{ $value }}", "t", &data(0.5), None).ok().as_deref(), Some("0.5"));
    assert_eq!(expand("{{ $value }}", "t", &data(123456.0), None).ok().as_deref(), Some("123456"));
    assert_eq!(expand("{{ $value }}", "t", &data(0.00001), None).ok().as_deref(), Some("1e-05"));
    assert_eq!(expand("{{ $value }}", "t", &data(f64::NAN), None).ok().as_deref(), Some("NaN"));
    assert_eq!(
        run("{{ $labels.instance }} {{ .Labels.job }} {{ $externalLabels.cluster }} [{{ $labels.nope }}]"),
        "web-1:9100 node eu1 []"
    );
    assert_eq!(run("{{ $labels }}"), "map[instance:web-1:9100 job:node]");
}

#[test]
fn string_functions() {
    assert_eq!(run(r#"{{ "aa bb CC" | title }}"#), "Aa Bb CC");
    assert_eq!(run(r#"{{ toUpper "aBc" }} {{ toLower "aBc" }}"#), "ABC abc");
    assert_eq!(run(r#"{{ match "a+" "baaad" }} {{ match "^x" "baaad" }}"#), "true false");
    assert_eq!(run(r#"{{ reReplaceAll "(a)b" "x$1" "ab ab" }}"#), "xa xa");
    assert_eq!(run(r#"{{ reReplaceAll ":.*" "" $labels.instance }}"#), "web-1");
    assert_eq!(run(r#"{{ $labels.instance | stripPort }}"#), "web-1");
    assert_eq!(
        run(r#"{{ printf "%.2f%%" 12.3456 }}|{{ printf "%s=%d" "n" 3 }}|{{ printf "%5.1f|%-4s|" 2.25 "ab" }}"#),
        "12.35%|n=3|  2.2|ab  |"
    );
    assert_eq!(run(r#"{{ printf "%v %g %.3g %q" 1.5 1e21 3.14159 "x" }}"#), "1.5 1e+21 3.14 \"x\"");
    assert_eq!(run(r#"{{ printf "%d" 1.5 }}"#), "%!d(float64=1.5)");
    assert_eq!(run(r#"{{ print "a" 1 2 "b" }}"#), "a1 2b");
    assert_eq!(run(r#"{{ len "abc" }} {{ index $labels "job" }}"#), "3 node");
    assert_eq!(run(r#"{{ "a\tb" }}|{{ `raw\n` }}"#), "a\tb|raw\\n");
}

#[test]
fn control_structures() {
    assert_eq!(run("{{ if gt $value 80.0 }}high{{ else }}low{{ end }}"), "high");
    assert_eq!(
        run("{{ if lt $value 80.0 }}low{{ else if eq $labels.job \"node\" }}node{{ else }}other{{ end }}"),
        "node"
    );
    assert_eq!(run(r#"{{ if and (ne $labels.job "x") (not false) }}y{{ end }}"#), "y");
    assert_eq!(run(r#"{{ or "" "fallback" }} {{ and 1 0 }}"#), "fallback 0");
    assert_eq!(run(r#"{{ if eq $labels.job "a" "b" "node" }}in{{ end }}"#), "in");
    assert_eq!(
        run(r#"{{ with $labels.job }}job={{ . }}{{ end }}{{ with $labels.nope }}x{{ else }}none{{ end }}"#),
        "job=nodenone"
    );
    assert_eq!(run(r#"{{ range $k, $v := $labels }}{{ $k }}={{ $v }};{{ end }}"#), "instance=web-1:9100;job=node;");
    assert_eq!(run(r#"{{ $x := "a" }}{{ if true }}{{ $x = "b" }}{{ end }}{{ $x }}"#), "b");
    assert_eq!(run("a  {{- \" b \" -}}  c\n{{/* a comment */}}d"), "a b c\nd");
    assert_eq!(run("x\n  {{- /* trimmed */ -}}\n  y"), "xy");
    assert_eq!(run(r#"{{ $value | humanize }} {{ 0.5 | humanizePercentage | printf "%s!" }}"#), "1.235M 50%!");
}

#[test]
fn query_through_a_callback() {
    let q = |expr: &str| -> Result<Vec<InstantSample>, PromqlError> {
        match expr {
            "up" => Ok(vec![
                InstantSample { labels: Labels::from_pairs([("__name__", "up"), ("instance", "b")]), t: 0, v: 0.0 },
                InstantSample { labels: Labels::from_pairs([("__name__", "up"), ("instance", "a")]), t: 0, v: 1.0 },
            ]),
            "1.5" => Ok(vec![InstantSample { labels: Labels::new(), t: 0, v: 1.5 }]),
            "none" => Ok(vec![]),
            other => Err(PromqlError::Parse(format!("bad query {other}"))),
        }
    };
    let run_q = |text: &str| expand(text, "t", &data(1.0), Some(&q)).unwrap_or_else(|e| format!("ERROR {e}"));
    assert_eq!(run_q(r#"{{ query "1.5" | first | value }}"#), "1.5");
    assert_eq!(run_q(r#"{{ with query "up" }}{{ . | first | label "instance" }}{{ end }}"#), "b");
    assert_eq!(
        run_q(r#"{{ range query "up" | sortByLabel "instance" }}{{ .Labels.instance }}={{ .Value }} {{ end }}"#),
        "a=1 b=0 "
    );
    assert_eq!(run_q(r#"{{ range query "none" }}x{{ else }}empty{{ end }}"#), "empty");
    assert!(run_q(r#"{{ query "none" | first | value }}"#).contains("first() called on vector with no elements"));
    assert!(run_q(r#"{{ query "x(" }}"#).contains("bad query"));
    assert!(run(r#"{{ query "up" }}"#).starts_with("ERROR"));
}

#[test]
fn parse_errors_are_values_with_go_wording() {
    let err = |t: &str| parse_check(t, "__alert_X").err().map(|e| e.to_string()).unwrap_or_default();
    assert_eq!(err("{{ $labels.x }} {{ humanize $value }}"), "");
    assert_eq!(err("{{ nope 1 }}"), "template: __alert_X:1: function \"nope\" not defined");
    assert_eq!(err("a\n{{ $undefined }}"), "template: __alert_X:2: undefined variable \"$undefined\"");
    assert!(err("{{ if true }}x").contains("unexpected EOF"));
    assert!(err("{{ end }}").contains("unexpected {{end}}"));
    assert!(err("{{ $labels.x ").contains("unclosed action"));
    assert!(err("{{ \"abc }}").contains("unterminated quoted string"));
    assert!(err("{{ (1 }}").contains("unclosed left paren"));
    assert!(err("{{ }}").contains("missing value"));
    assert!(err("{{ if $x := 1 }}{{ $x }}{{ end }}{{ $x }}").contains("undefined variable \"$x\""));
    // Execution errors are values too.
    assert!(run("{{ $value.foo }}").contains("can't evaluate field foo"));
    assert!(run("{{ lt \"a\" 1 }}").contains("incompatible types"));
    assert!(run("{{ 1 2 }}").contains("can't give argument to non-function"));
}
