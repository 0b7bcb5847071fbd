//! The text transformations of the cleaning steps, as plain functions over `&str`.
//!
//! They are wrapped into DataFusion UDFs by [`super::udf`]; keeping them plain makes them easy
//! to test one by one and to reason about Unicode edge cases.

use std::sync::LazyLock;

use regex::Regex;
use unicode_normalization::UnicodeNormalization;

/// Removes the RFC 822 header block of an e-mail (everything before the first blank line) when
/// the text starts like a message (an mbox `From ` line or a `Name: value` header). The values
/// of the headers named in `keep` (case-insensitive, e.g. `subject`) are kept, one per line,
/// before the body. Text that does not look like a message is returned unchanged.
pub fn strip_email_headers(text: &str, keep: &[String], out: &mut String) {
    static HEADER: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"^(?:From \S|[A-Za-z0-9][A-Za-z0-9-]*:[ \t])").expect("valid regex"));
    if !HEADER.is_match(text) {
        out.push_str(text);
        return;
    }
    let (headers, body) = split_headers(text);
    if !keep.is_empty() {
        let mut current: Option<&str> = None;
        let mut kept: Vec<String> = Vec::new();
        for line in headers.lines() {
            if line.starts_with([' ', '\t']) {
                // A folded continuation of the previous header.
                if current.is_some()
                    && let Some(last) = kept.last_mut()
                {
                    last.push(' ');
                    last.push_str(line.trim());
                }
                continue;
            }
            current = None;
            if let Some((name, value)) = line.split_once(':')
                && keep.iter().any(|k| k.eq_ignore_ascii_case(name.trim()))
            {
                current = Some(name);
                kept.push(value.trim().to_string());
            }
        }
        for v in kept {
            out.push_str(&v);
            out.push('\n');
        }
    }
    out.push_str(body);
}

fn split_headers(text: &str) -> (&str, &str) {
    let lf = text.find("\n\n").map(|i| (i, 2));
    let crlf = text.find("\r\n\r\n").map(|i| (i, 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => {
            let (i, n) = if a.0 <= b.0 { a } else { b };
            (&text[..i], &text[i + n..])
        }
        (Some((i, n)), None) | (None, Some((i, n))) => (&text[..i], &text[i + n..]),
        (None, None) => (text, ""),
    }
}

/// Removes HTML tags, comments and the content of `<script>`/`<style>`, then decodes entities.
/// Tags become a space so words on either side do not merge. A `<` that does not open a tag
/// (`a < b`) is kept.
pub fn strip_html(text: &str, out: &mut String) {
    if !text.contains('<') && !text.contains('&') {
        out.push_str(text);
        return;
    }
    let mut plain = String::with_capacity(text.len());
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < text.len() {
        let rest = &text[i..];
        if bytes[i] == b'<' {
            if rest.starts_with("<!--") {
                i += rest.find("-->").map_or(rest.len(), |e| e + 3);
                plain.push(' ');
                continue;
            }
            let is_tag = rest[1..]
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '/' || c == '!' || c == '?');
            if is_tag {
                let end = rest.find('>').map_or(rest.len(), |e| e + 1);
                let tag = rest[1..end.min(rest.len())].trim_start_matches('/').to_ascii_lowercase();
                i += end;
                for skip in ["script", "style"] {
                    if tag.starts_with(skip) && !rest[1..].starts_with('/') {
                        let close = format!("</{skip}");
                        let tail = text[i..].to_ascii_lowercase();
                        i += tail.find(&close).map_or(tail.len(), |e| {
                            e + tail[e..].find('>').map_or(tail.len() - e, |g| g + 1)
                        });
                    }
                }
                plain.push(' ');
                continue;
            }
        }
        let ch = rest.chars().next().expect("non-empty rest");
        plain.push(ch);
        i += ch.len_utf8();
    }
    out.push_str(&html_escape::decode_html_entities(&plain));
}

/// Unicode compatibility normalization (NFKC): full-width letters, ligatures and composed
/// forms become their canonical equivalents.
pub fn nfkc(text: &str, out: &mut String) {
    out.extend(text.nfkc());
}

/// Unicode-aware lowercase.
pub fn lowercase(text: &str, out: &mut String) {
    for c in text.chars() {
        out.extend(c.to_lowercase());
    }
}

/// Replaces every match of `re` with ` token ` (spaces keep the token a separate word).
pub fn replace(re: &Regex, token: &str, text: &str, out: &mut String) {
    let mut last = 0;
    for m in re.find_iter(text) {
        out.push_str(&text[last..m.start()]);
        out.push(' ');
        out.push_str(token);
        out.push(' ');
        last = m.end();
    }
    out.push_str(&text[last..]);
}

/// Removes control characters (NUL, escape, ...) and other invisible format characters, keeping
/// whitespace (which `collapse_whitespace` handles) and the zero-width joiner that emoji
/// sequences need.
pub fn strip_control(text: &str, out: &mut String) {
    for c in text.chars() {
        let drop = (c.is_control() && !c.is_whitespace())
            || matches!(c, '\u{200B}' | '\u{200E}' | '\u{200F}' | '\u{FEFF}' | '\u{00AD}')
            || ('\u{202A}'..='\u{202E}').contains(&c)
            || ('\u{2066}'..='\u{2069}').contains(&c);
        if !drop {
            out.push(c);
        }
    }
}

/// Collapses every run of Unicode whitespace into one space and trims both ends.
pub fn collapse_whitespace(text: &str, out: &mut String) {
    let mut first = true;
    for word in text.split(char::is_whitespace).filter(|w| !w.is_empty()) {
        if !first {
            out.push(' ');
        }
        out.push_str(word);
        first = false;
    }
}

/// Keeps at most `max` characters (never splits a character).
pub fn truncate(text: &str, max: usize, out: &mut String) {
    match text.char_indices().nth(max) {
        Some((i, _)) => out.push_str(&text[..i]),
        None => out.push_str(text),
    }
}

pub(crate) static URL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)\b(?:(?:https?|ftp)://|www\.)[^\s<>\x22']+").expect("valid regex"));
pub(crate) static EMAIL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b").expect("valid regex"));
pub(crate) static NUMBER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b\d+(?:[.,:]\d+)*\b").expect("valid regex"));

#[cfg(test)]
mod tests {
    use super::*;

    fn run(f: impl Fn(&str, &mut String), input: &str) -> String {
        let mut out = String::new();
        f(input, &mut out);
        out
    }

    fn check(f: impl Fn(&str, &mut String), input: &str, expected: &str) {
        assert_eq!(run(f, input), expected, "input: {input:?}");
    }

    #[test]
    fn email_headers() {
        let keep = vec!["subject".to_string()];
        let f = |t: &str, o: &mut String| strip_email_headers(t, &keep, o);
        check(
            f,
            "From a@b  Thu\nSubject: Hello\n there\nX-Y: z\n\nBody text\n\nmore",
            "Hello there\nBody text\n\nmore",
        );
        check(f, "Subject: only headers", "only headers\n");
        check(f, "Subject: crlf\r\nTo: x\r\n\r\nbody", "crlf\nbody");
        check(f, "just a sentence: with a colon", "just a sentence: with a colon");
        check(f, "Dear friend,\n\nhello", "Dear friend,\n\nhello");
        let none = |t: &str, o: &mut String| strip_email_headers(t, &[], o);
        check(none, "To: x\nSubject: s\n\nbody", "body");
    }

    #[test]
    fn html() {
        check(strip_html, "<p>Hello&nbsp;<b>world</b></p>", " Hello\u{a0} world  ");
        check(strip_html, "a < b &amp;&amp; c > d", "a < b && c > d");
        check(strip_html, "x<script>var a = '<p>';</script>y", "x y");
        check(strip_html, "x<STYLE>p {}</STYLE>y<!-- c -->z", "x y z");
        check(strip_html, "&#233;t&#xE9; &lt;3", "été <3");
        check(strip_html, "unclosed <a href", "unclosed  ");
    }

    #[test]
    fn unicode_edge_cases() {
        // Combining marks compose under NFKC; full-width and ligatures normalize.
        check(nfkc, "e\u{301}", "é");
        check(nfkc, "ＦＲＥＥ ﬁnance", "FREE finance");
        check(lowercase, "ÉTÉ İSTANBUL ΣΟΦΙΑ", "été i̇stanbul σοφια");
        // RTL text passes through; bidi controls are removed.
        check(strip_control, "\u{202B}مرحبا\u{202C} world", "مرحبا world");
        // NUL and escape removed, whitespace kept for collapse; emoji ZWJ sequences intact.
        check(strip_control, "a\0b\u{1b}[0mc\td", "ab[0mc\td");
        check(strip_control, "👩\u{200D}💻 ok", "👩\u{200D}💻 ok");
        check(collapse_whitespace, "  a \t\n b\u{3000}c  ", "a b c");
        check(collapse_whitespace, " \n\t ", "");
        check(|t: &str, o: &mut String| truncate(t, 3, o), "héllo", "hél");
        check(|t: &str, o: &mut String| truncate(t, 3, o), "👍👍👍👍", "👍👍👍");
    }

    #[test]
    fn token_replacement() {
        let url = |t: &str, o: &mut String| replace(&URL, "<url>", t, o);
        check(url, "see http://x.com/a?b=1, or www.y.org!", "see  <url>  or  <url> ");
        let email = |t: &str, o: &mut String| replace(&EMAIL, "<email>", t, o);
        check(email, "mail jo.e+x@ex-ample.co.uk now", "mail  <email>  now");
        let num = |t: &str, o: &mut String| replace(&NUMBER, "<num>", t, o);
        check(num, "win 1,000,000 in 24h at 10:30", "win  <num>  in 24h at  <num> ");
    }

    #[test]
    fn very_long_lines_are_linear() {
        let long = "word ".repeat(200_000);
        let out = run(collapse_whitespace, &long);
        assert_eq!(out.len(), long.len() - 1);
    }
}
