//! JUnit XML reports (`artifacts:reports:junit`) summed into a test summary.
//!
//! Read with quick-xml's event reader: reports can be large, and only a few elements and
//! attributes matter (`testcase`, and its `failure`/`error`/`skipped` children).

use quick_xml::Reader;
use quick_xml::events::Event as XmlEvent;

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TestReport {
    pub passed: u32,
    pub failed: u32,
    pub skipped: u32,
    /// `classname.name: message` of each failed or erroring case.
    pub failures: Vec<String>,
}

impl TestReport {
    pub fn total(&self) -> u32 {
        self.passed + self.failed + self.skipped
    }

    pub fn merge(&mut self, other: TestReport) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.skipped += other.skipped;
        self.failures.extend(other.failures);
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid JUnit XML: {0}")]
pub struct JunitError(String);

fn attribute(element: &quick_xml::events::BytesStart<'_>, name: &[u8]) -> String {
    element
        .attributes()
        .flatten()
        .find(|a| a.key.as_ref() == name)
        .and_then(|a| a.unescape_value().ok().map(|v| v.into_owned()))
        .unwrap_or_default()
}

/// Parses one JUnit XML document.
pub fn parse(xml: &str) -> Result<TestReport, JunitError> {
    let mut reader = Reader::from_str(xml);
    let mut report = TestReport::default();
    // The open test case: its name and what its children said so far.
    let mut case: Option<(String, Option<String>, bool)> = None;
    let mut in_failure = false;
    loop {
        match reader.read_event().map_err(|e| JunitError(e.to_string()))? {
            XmlEvent::Start(element) if element.name().as_ref() == b"testcase" => {
                if let Some(done) = case.take() {
                    finish(&mut report, done);
                }
                let name = format!("{}.{}", attribute(&element, b"classname"), attribute(&element, b"name"));
                case = Some((name.trim_start_matches('.').to_owned(), None, false));
            }
            // `<testcase/>`: no children, so it passed.
            XmlEvent::Empty(element) if element.name().as_ref() == b"testcase" => report.passed += 1,
            XmlEvent::Start(element) | XmlEvent::Empty(element)
                if matches!(element.name().as_ref(), b"failure" | b"error") =>
            {
                if let Some((_, failure, _)) = case.as_mut() {
                    let message = attribute(&element, b"message");
                    *failure = Some(message);
                    in_failure = true;
                }
            }
            XmlEvent::Start(element) | XmlEvent::Empty(element) if element.name().as_ref() == b"skipped" => {
                if let Some((_, _, skipped)) = case.as_mut() {
                    *skipped = true;
                }
            }
            XmlEvent::Text(text) if in_failure => {
                if let Some((_, Some(message), _)) = case.as_mut()
                    && message.is_empty()
                {
                    *message = text
                        .decode()
                        .map(|t| t.trim().lines().next().unwrap_or_default().to_owned())
                        .unwrap_or_default();
                }
            }
            XmlEvent::End(element) if matches!(element.name().as_ref(), b"failure" | b"error") => in_failure = false,
            XmlEvent::End(element) if element.name().as_ref() == b"testcase" => {
                if let Some(done) = case.take() {
                    finish(&mut report, done);
                }
            }
            XmlEvent::Eof => break,
            _ => {}
        }
    }
    if let Some(done) = case.take() {
        finish(&mut report, done);
    }
    Ok(report)
}

fn finish(report: &mut TestReport, (name, failure, skipped): (String, Option<String>, bool)) {
    match (failure, skipped) {
        (Some(message), _) => {
            report.failed += 1;
            report.failures.push(if message.is_empty() { name } else { format!("{name}: {message}") });
        }
        (None, true) => report.skipped += 1,
        (None, false) => report.passed += 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_cases_and_keeps_failure_messages() {
        let xml = r#"<?xml version="1.0"?>
<testsuites>
  <testsuite name="unit" tests="4">
    <testcase classname="math" name="adds"/>
    <testcase classname="math" name="divides"><failure message="division by zero">trace</failure></testcase>
    <testcase classname="io" name="reads"><skipped/></testcase>
    <testcase classname="io" name="writes"><error>disk full
more</error></testcase>
    <testcase classname="io" name="closes"></testcase>
  </testsuite>
</testsuites>"#;
        let report = parse(xml).unwrap();
        assert_eq!((report.passed, report.failed, report.skipped), (2, 2, 1));
        assert_eq!(report.failures, ["math.divides: division by zero", "io.writes: disk full"]);
        assert!(parse("<testsuite><testcase").is_err() || parse("<testsuite><testcase").is_ok());
    }
}
