//! Masking secret values in output. Output is masked line by line, after lines are
//! reassembled from the pipe, so a value split across read chunks is still caught.

#[derive(Debug, Clone, Default)]
pub struct Masker {
    /// Longest first, so a value containing another is masked whole.
    values: Vec<String>,
}

pub const MASK: &str = "[MASKED]";

impl Masker {
    pub fn new(values: impl IntoIterator<Item = String>) -> Self {
        let mut values: Vec<String> = values.into_iter().filter(|v| v.len() >= 4).collect();
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        values.dedup();
        Masker { values }
    }

    pub fn mask(&self, line: &str) -> String {
        let mut line = line.to_owned();
        for value in &self.values {
            if line.contains(value.as_str()) {
                line = line.replace(value.as_str(), MASK);
            }
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_every_occurrence_longest_first_and_ignores_short_values() {
        let masker = Masker::new(["s3cret".to_owned(), "s3cret-token".to_owned(), "ab".to_owned()]);
        assert_eq!(masker.mask("a s3cret-token and s3cret, ab"), "a [MASKED] and [MASKED], ab");
    }
}
