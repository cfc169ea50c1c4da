//! Variable expansion the way GitLab does it: `$VAR` and `${VAR}`, `$$` for a literal `$`,
//! nested references resolved, undefined variables expanding to nothing.

use std::collections::HashMap;

/// Expands `$NAME` and `${NAME}` in `text`; `$$` stays a single `$`.
pub fn expand(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.char_indices().peekable();
    while let Some((index, c)) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        match chars.peek().copied() {
            Some((_, '$')) => {
                chars.next();
                out.push('$');
            }
            Some((start, '{')) => {
                let rest = &text[start + 1..];
                match rest.find('}') {
                    Some(end) if is_name(&rest[..end]) => {
                        out.push_str(&lookup(&rest[..end]).unwrap_or_default());
                        for _ in 0..=end + 1 {
                            chars.next();
                        }
                    }
                    _ => out.push('$'),
                }
            }
            Some((start, first)) if first.is_ascii_alphabetic() || first == '_' => {
                let rest = &text[start..];
                let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
                out.push_str(&lookup(&rest[..end]).unwrap_or_default());
                for _ in 0..rest[..end].chars().count() {
                    chars.next();
                }
            }
            _ => {
                let _ = index;
                out.push('$');
            }
        }
    }
    out
}

fn is_name(text: &str) -> bool {
    !text.is_empty() && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Resolves a layered list of variables (later entries win) into final values. A value with
/// `expand` may refer to any other variable; references are resolved recursively from the raw
/// values (so `$$` stays an escaped `$` and is never expanded twice), with a depth limit that
/// ends cycles, and fall back to `base` (the environment, predefined values).
pub fn resolve(layers: &[(String, String, bool)], base: &dyn Fn(&str) -> Option<String>) -> Vec<(String, String)> {
    let mut order: Vec<String> = Vec::new();
    let mut raw: HashMap<String, (String, bool)> = HashMap::new();
    for (name, value, expandable) in layers {
        if !raw.contains_key(name) {
            order.push(name.clone());
        }
        raw.insert(name.clone(), (value.clone(), *expandable));
    }
    /// Longest value expansion may build; beyond it the raw value is kept (expansion bombs).
    const MAX_VALUE_BYTES: usize = 1 << 20;
    fn value_of(
        name: &str,
        raw: &HashMap<String, (String, bool)>,
        base: &dyn Fn(&str) -> Option<String>,
        memo: &std::cell::RefCell<HashMap<String, String>>,
        depth: usize,
    ) -> Option<String> {
        let Some((value, expandable)) = raw.get(name) else { return base(name) };
        if !expandable || !value.contains('$') || depth > 10 {
            return Some(value.clone());
        }
        if let Some(done) = memo.borrow().get(name) {
            return Some(done.clone());
        }
        let expanded = expand(value, &|inner: &str| {
            if inner == name { base(inner) } else { value_of(inner, raw, base, memo, depth + 1) }
        });
        let result = if expanded.len() > MAX_VALUE_BYTES { value.clone() } else { expanded };
        memo.borrow_mut().insert(name.to_owned(), result.clone());
        Some(result)
    }
    let memo = std::cell::RefCell::new(HashMap::new());
    order
        .into_iter()
        .map(|name| {
            let value = value_of(&name, &raw, base, &memo, 0).unwrap_or_default();
            (name, value)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOME" => Some("/root".to_owned()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands_both_forms_and_escapes() {
        assert_eq!(expand("$HOME/x ${HOME}/y $$HOME $NOPE. ${EMPTY}z", &env), "/root/x /root/y $HOME . z");
        assert_eq!(expand("cost: 5$ and ${unclosed", &env), "cost: 5$ and ${unclosed");
        assert_eq!(expand("ünï $HOME ✓", &env), "ünï /root ✓");
    }

    #[test]
    fn resolves_nested_and_layered_values() {
        let layers = vec![
            ("A".to_owned(), "a".to_owned(), true),
            ("B".to_owned(), "$A-b".to_owned(), true),
            ("C".to_owned(), "${B}-c-$HOME".to_owned(), true),
            ("RAW".to_owned(), "$A".to_owned(), false),
            ("A".to_owned(), "A2".to_owned(), true),
            ("LOOP".to_owned(), "$LOOP!".to_owned(), true),
        ];
        let resolved: HashMap<_, _> = resolve(&layers, &env).into_iter().collect();
        assert_eq!(resolved["A"], "A2");
        assert_eq!(resolved["B"], "A2-b");
        assert_eq!(resolved["C"], "A2-b-c-/root");
        assert_eq!(resolved["RAW"], "$A");
        assert_eq!(resolved["LOOP"], "!");
    }

    #[test]
    fn expansion_bombs_stay_small_and_fast() {
        let mut layers = vec![("V0".to_owned(), "x".repeat(100), true)];
        for level in 1..=12 {
            layers.push((format!("V{level}"), format!("${{V{}}}", level - 1).repeat(10), true));
        }
        let started = std::time::Instant::now();
        let resolved = resolve(&layers, &env);
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        assert!(resolved.iter().all(|(_, v)| v.len() <= 1 << 20 || !v.contains('x')));
    }

    #[test]
    fn escaped_dollars_survive_nested_expansion() {
        let layers = vec![
            ("FLAGS".to_owned(), "-al".to_owned(), true),
            ("LS_CMD".to_owned(), "ls \"$FLAGS\" $$TMP_DIR".to_owned(), true),
            ("OUTER".to_owned(), "[$LS_CMD]".to_owned(), true),
        ];
        let resolved: HashMap<_, _> = resolve(&layers, &env).into_iter().collect();
        assert_eq!(resolved["LS_CMD"], "ls \"-al\" $TMP_DIR");
        assert_eq!(resolved["OUTER"], "[ls \"-al\" $TMP_DIR]");
    }
}
