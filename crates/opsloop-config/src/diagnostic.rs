//! Problems found in a configuration file (a pipeline, `opsloop.yml`, and every parser to
//! come), with where they are and how to fix them.

use crate::yaml::Span;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Warning,
    Error,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub message: String,
    pub span: Option<Span>,
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn error(message: impl Into<String>, span: Option<Span>) -> Self {
        Diagnostic { severity: Severity::Error, message: message.into(), span, hint: None }
    }
    pub fn warning(message: impl Into<String>, span: Option<Span>) -> Self {
        Diagnostic { severity: Severity::Warning, message: message.into(), span, hint: None }
    }
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// The files a pipeline was loaded from, to turn spans into `file:line:column`.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub files: Vec<(String, String)>,
}

impl Sources {
    pub fn add(&mut self, path: &str, text: &str) -> u32 {
        self.files.push((path.to_owned(), text.to_owned()));
        u32::try_from(self.files.len() - 1).unwrap_or(u32::MAX)
    }

    pub fn path(&self, span: Span) -> &str {
        self.files.get(span.file as usize).map_or("<unknown>", |(path, _)| path)
    }

    pub fn text(&self, span: Span) -> &str {
        self.files.get(span.file as usize).map_or("", |(_, text)| text)
    }

    /// `path:line:column`.
    pub fn location(&self, span: Span) -> String {
        format!("{}:{}:{}", self.path(span), span.line, span.column)
    }

    /// The byte offset of a span in its file (spans count characters).
    pub fn byte_offset(&self, span: Span) -> usize {
        let text = self.text(span);
        text.char_indices().nth(span.index).map_or(text.len(), |(offset, _)| offset)
    }

    /// One line per diagnostic: `error: message` with its place and hint.
    pub fn render(&self, diagnostic: &Diagnostic) -> String {
        let level = match diagnostic.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let mut text = match diagnostic.span {
            Some(span) => format!("{level}: {}: {}", self.location(span), diagnostic.message),
            None => format!("{level}: {}", diagnostic.message),
        };
        if let Some(hint) = &diagnostic.hint {
            text.push_str(&format!("\n  hint: {hint}"));
        }
        text
    }
}

/// Whether `typed` is one edit (an insertion, deletion, substitution or swap of neighbours)
/// away from `key`: a misspelt configuration key. Written here rather than pulled in
/// (`strsim`) for comparisons of short keys.
pub fn near_miss(typed: &str, key: &str) -> bool {
    let (a, b): (Vec<char>, Vec<char>) = (typed.chars().collect(), key.chars().collect());
    if a.len().abs_diff(b.len()) > 1 || a == b {
        return false;
    }
    let prefix = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let (ra, rb) = (&a[prefix..], &b[prefix..]);
    let suffix = ra.iter().rev().zip(rb.iter().rev()).take_while(|(x, y)| x == y).count();
    let (ma, mb) = (&ra[..ra.len() - suffix.min(ra.len())], &rb[..rb.len() - suffix.min(rb.len())]);
    match (ma.len(), mb.len()) {
        (0, 1) | (1, 0) | (1, 1) => true,
        (2, 2) => ma[0] == mb[1] && ma[1] == mb[0],
        _ => false,
    }
}

/// The known key `typed` most likely meant: one edit away, or the same ignoring case, `-`/`_`.
pub fn nearest<'a>(typed: &str, known: &[&'a str]) -> Option<&'a str> {
    let folded = |text: &str| text.to_ascii_lowercase().replace('-', "_");
    known.iter().copied().find(|key| near_miss(typed, key) || (folded(typed) == folded(key) && typed != *key))
}

/// Why a file was refused: every problem found, rendered at file:line:column. Shared by the
/// parsers of `alertmanager.yml`, on-call files and checks files.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{rendered}")]
pub struct ConfigError {
    pub diagnostics: Vec<Diagnostic>,
    pub rendered: String,
}

/// A configuration file that could not be read, or was refused.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Invalid(#[from] ConfigError),
}

/// Reads `path` and parses it with `parse` (which names the file in its errors).
pub fn load_file<T>(
    path: &std::path::Path,
    parse: impl FnOnce(&str, &str) -> Result<T, ConfigError>,
) -> Result<T, LoadError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read { path: name.clone(), source })?;
    Ok(parse(&text, &name)?)
}

#[cfg(test)]
mod near_tests {
    use super::*;

    #[test]
    fn near_misses_are_one_edit_away() {
        assert!(near_miss("comand", "command") && near_miss("strategy", "stratgey") && !near_miss("env", "slo"));
        assert_eq!(nearest("scirpt", &["stage", "script"]), Some("script"));
        assert_eq!(nearest("Allow-Failure", &["allow_failure"]), Some("allow_failure"));
        assert_eq!(nearest("variables", &["stage"]), None);
    }
}
