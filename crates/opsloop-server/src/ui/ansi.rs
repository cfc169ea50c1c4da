//! Job output with ANSI colours, as HTML: text escaped, SGR colour codes turned into spans
//! with classes, every other escape sequence dropped.

/// Escapes `text` for HTML and turns its SGR codes (`ESC [ … m`) into `<span class>`.
pub fn to_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut open = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                if chars.peek() != Some(&'[') {
                    continue;
                }
                chars.next();
                let mut code = String::new();
                let mut final_byte = None;
                for next in chars.by_ref() {
                    if next.is_ascii_digit() || next == ';' {
                        code.push(next);
                    } else {
                        final_byte = Some(next);
                        break;
                    }
                }
                if final_byte != Some('m') {
                    continue;
                }
                if open {
                    out.push_str("</span>");
                    open = false;
                }
                let classes: Vec<String> = code
                    .split(';')
                    .filter_map(|part| part.parse::<u8>().ok())
                    .filter_map(|n| match n {
                        1 => Some("ansi-bold".to_owned()),
                        30..=37 => Some(format!("ansi-{}", n - 30)),
                        90..=97 => Some(format!("ansi-{}", n - 90 + 8)),
                        _ => None,
                    })
                    .collect();
                if !classes.is_empty() {
                    out.push_str(&format!("<span class=\"{}\">", classes.join(" ")));
                    open = true;
                }
            }
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c if c.is_control() && c != '\n' && c != '\t' => {}
            c => out.push(c),
        }
    }
    if open {
        out.push_str("</span>");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::to_html;

    #[test]
    fn colours_become_spans_and_everything_else_is_escaped() {
        assert_eq!(to_html("\u{1b}[32mok\u{1b}[0m done"), "<span class=\"ansi-2\">ok</span> done");
        assert_eq!(to_html("\u{1b}[1;91mFAIL"), "<span class=\"ansi-bold ansi-9\">FAIL</span>");
        assert_eq!(to_html("<script>\"x\"&</script>"), "&lt;script&gt;&quot;x&quot;&amp;&lt;/script&gt;");
        assert_eq!(to_html("\u{1b}[2Kcleared\u{7}"), "cleared");
        assert_eq!(to_html("\u{1b}"), "");
    }
}
