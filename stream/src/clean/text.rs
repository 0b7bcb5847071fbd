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
///
/// The step `strip_email_headers` of the first default spec: any text starting with `Word: `
/// loses its first paragraph (`Note: …`, `Re: …`). Kept with this meaning for the datasets
/// cleaned with it; new specs take [`strip_message_headers`].
pub fn strip_email_headers(text: &str, keep: &[String], out: &mut String) {
    static HEADER: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"^(?:From \S|[A-Za-z0-9][A-Za-z0-9-]*:[ \t])").expect("valid regex"));
    if !HEADER.is_match(text) {
        out.push_str(text);
        return;
    }
    let (headers, body) = split_headers(text);
    push_kept_values(headers, keep, out);
    out.push_str(body);
}

/// Removes an e-mail's header block only when the text starts with a real one (RFC 5322
/// section 2.2): every line up to the first blank line (or the end) is a header field —
/// a name of printable ASCII without `:` or space, then `:` — or a folded continuation (a line
/// starting with a space or tab after a field), and the block is a message's: it opens with an
/// mbox `From <sender> <asctime date>` line followed by a field, or it holds at least two fields
/// with names messages carry ([`MESSAGE_FIELDS`]: From, To, Subject, Date, Received, Message-ID,
/// …). `keep` works as in [`strip_email_headers`]. Anything else — `Note: …`, `Re: …`,
/// `Q: … A: …`, a `Date: … Time: …` memo — is returned unchanged.
pub fn strip_message_headers(text: &str, keep: &[String], out: &mut String) {
    let (headers, body) = split_headers(text);
    if !is_message_header_block(headers) {
        out.push_str(text);
        return;
    }
    push_kept_values(headers, keep, out);
    out.push_str(body);
}

/// Field names (lowercase) that mark a header block as a message's for [`strip_message_headers`]:
/// the originator, destination, identification, informational and trace fields of RFC 5322
/// section 3.6, and the MIME and delivery fields mail transports add.
pub const MESSAGE_FIELDS: &[&str] = &[
    "from",
    "sender",
    "reply-to",
    "to",
    "cc",
    "bcc",
    "message-id",
    "in-reply-to",
    "references",
    "subject",
    "date",
    "received",
    "return-path",
    "delivered-to",
    "envelope-to",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "x-mailer",
    "list-id",
    "list-unsubscribe",
];

fn is_message_header_block(headers: &str) -> bool {
    // `From sender  Thu Aug 22 13:17:22 2002`, as mbox files separate messages (the sender
    // may hold spaces: `From x@[10.0.0.1] [pi]  Sun Aug  5 09:44:26 2001` is in the corpus).
    static MBOX_FROM: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(
            r"^From \S.*? +(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) (?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) +\d{1,2} \d{1,2}:\d{2}",
        )
        .expect("valid regex")
    });
    // A text of fields only ends the block with its last line break.
    let headers = headers.strip_suffix('\n').unwrap_or(headers);
    let (mut mbox, mut fields, mut known) = (false, 0usize, 0usize);
    for (i, line) in headers.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if i == 0 && line.starts_with("From ") && MBOX_FROM.is_match(line) {
            mbox = true;
        } else if line.starts_with([' ', '\t']) {
            if fields == 0 {
                return false;
            }
        } else {
            let Some((name, _)) = line.split_once(':') else { return false };
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
                return false;
            }
            fields += 1;
            known += usize::from(MESSAGE_FIELDS.iter().any(|f| f.eq_ignore_ascii_case(name)));
        }
    }
    (mbox && fields > 0) || known >= 2
}

/// Writes the values of the fields named in `keep`, one per line, folded continuations joined.
fn push_kept_values(headers: &str, keep: &[String], out: &mut String) {
    if keep.is_empty() {
        return;
    }
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

fn split_headers(text: &str) -> (&str, &str) {
    let lf = text.find("\n\n").map(|i| (i, 2));
    // A CRLF blank line wins only if it starts first, so it is looked for only up to the LF
    // one, not through the whole body. (One starting before `i` ends by `i + 1`: `text[i]` and
    // `text[i + 1]` are both `\n`; and `i + 1` is a character boundary.)
    let crlf_region = lf.map_or(text, |(i, _)| &text[..i + 1]);
    let crlf = crlf_region.find("\r\n\r\n").map(|i| (i, 4));
    crlf.or(lf).map_or((text, ""), |(i, n)| (&text[..i], &text[i + n..]))
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
        // Plain text up to the next `<` (after this one, if this one opens no tag).
        let from = usize::from(bytes[i] == b'<');
        let run = rest[from..].find('<').map_or(rest.len(), |e| e + from);
        plain.push_str(&rest[..run]);
        i += run;
    }
    out.push_str(&html_escape::decode_html_entities(&plain));
}

/// Unicode compatibility normalization (NFKC): full-width letters, ligatures and composed
/// forms become their canonical equivalents.
///
/// ASCII is its own NFKC and nothing composes onto an ASCII character, so the text is
/// normalized piece by piece: ASCII runs are copied, and each non-ASCII run is normalized
/// together with the character before it (a combining mark composes with it: `e` + U+0301 is
/// `é`). The result equals normalizing the whole text at once.
pub fn nfkc(text: &str, out: &mut String) {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let Some(n) = bytes[i..].iter().position(|b| !b.is_ascii()) else {
            out.push_str(&text[i..]);
            return;
        };
        // The piece starts at the character before the non-ASCII run (if it is ASCII).
        let start = if n > 0 { i + n - 1 } else { i };
        out.push_str(&text[i..start]);
        let end = bytes[i + n..].iter().position(u8::is_ascii).map_or(bytes.len(), |e| i + n + e);
        out.extend(text[start..end].nfkc());
        i = end;
    }
}

/// Unicode-aware lowercase, character by character (`char::to_lowercase`, so no
/// context-dependent rules such as a final sigma); ASCII runs are lowercased in place.
pub fn lowercase(text: &str, out: &mut String) {
    let mut rest = text;
    while !rest.is_empty() {
        let n = rest.bytes().position(|b| !b.is_ascii()).unwrap_or(rest.len());
        let start = out.len();
        out.push_str(&rest[..n]);
        out[start..].make_ascii_lowercase();
        rest = &rest[n..];
        if let Some(c) = rest.chars().next() {
            out.extend(c.to_lowercase());
            rest = &rest[c.len_utf8()..];
        }
    }
}

/// Replaces every match of `pattern` with ` token ` (spaces keep the token a separate word).
pub fn replace(pattern: &Pattern, token: &str, text: &str, out: &mut String) {
    let mut last = 0;
    pattern.for_each_match(text, |span| {
        out.push_str(&text[last..span.start]);
        out.push(' ');
        out.push_str(token);
        out.push(' ');
        last = span.end;
    });
    out.push_str(&text[last..]);
}

/// A token pattern: the Unicode regex, and for texts that are all ASCII the same regex with
/// ASCII classes and word boundaries (the Unicode classes and `\b` agree with the ASCII ones
/// on ASCII), or a hand-written scanner that finds exactly the regex's matches.
pub struct Pattern {
    unicode: Regex,
    ascii: Regex,
    /// The next match at or after a byte offset of an ASCII text.
    ascii_scan: Option<Scanner>,
}

impl Pattern {
    fn new(unicode: &str, ascii: &str) -> Pattern {
        Pattern {
            unicode: Regex::new(unicode).expect("valid regex"),
            ascii: Regex::new(ascii).expect("valid regex"),
            ascii_scan: None,
        }
    }

    /// Calls `f` with the span of every match of the Unicode regex in `text`, in order.
    ///
    /// A pattern with an ASCII scanner (numbers: no literal for a regex to look for) searches
    /// the text in pieces cut at ASCII whitespace, which no match contains and which is not a
    /// word character: all-ASCII pieces with the scanner, and each run of words holding
    /// non-ASCII characters with the Unicode regex.
    fn for_each_match(&self, text: &str, mut f: impl FnMut(std::ops::Range<usize>)) {
        let Some(scan) = self.ascii_scan else {
            // Regexes with a literal to look for are fast on the whole text.
            let re = if text.is_ascii() { &self.ascii } else { &self.unicode };
            re.find_iter(text).for_each(|m| f(m.range()));
            return;
        };
        let bytes = text.as_bytes();
        let is_space = |b: &u8| matches!(b, b'\t'..=b'\r' | b' ');
        let mut piece = 0;
        while piece < bytes.len() {
            let (end, ascii) = match bytes[piece..].iter().position(|b| !b.is_ascii()) {
                None => (bytes.len(), true),
                Some(q) => match bytes[piece..piece + q].iter().rposition(is_space) {
                    // The ASCII words before the word holding the non-ASCII byte.
                    Some(w) => (piece + w + 1, true),
                    // That word and the ones after it up to the next ASCII whitespace.
                    None => (
                        bytes[piece + q..].iter().position(is_space).map_or(bytes.len(), |e| piece + q + e),
                        false,
                    ),
                },
            };
            let at = |span: std::ops::Range<usize>| piece + span.start..piece + span.end;
            if ascii {
                let mut from = 0;
                while let Some(span) = scan(&bytes[piece..end], from) {
                    from = span.end;
                    f(at(span));
                }
            } else {
                self.unicode.find_iter(&text[piece..end]).for_each(|m| f(at(m.range())));
            }
            piece = end;
        }
    }
}

type Scanner = fn(&[u8], usize) -> Option<std::ops::Range<usize>>;

/// `\b[0-9]+(?:[.,:][0-9]+)*\b` on ASCII, without a regex: a digit run that starts a word,
/// extended by `[.,:]`-separated digit groups, ending at the longest extension followed by a
/// non-word byte (greedy, as the regex backtracks).
fn next_number(b: &[u8], mut at: usize) -> Option<std::ops::Range<usize>> {
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let digits_end = |mut i: usize| {
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        i
    };
    while at < b.len() {
        let start = at + b[at..].iter().position(u8::is_ascii_digit)?;
        if start > 0 && word(b[start - 1]) {
            // Inside a word: no boundary before any digit of it.
            at = start + 1;
            while at < b.len() && word(b[at]) {
                at += 1;
            }
            continue;
        }
        let mut end = digits_end(start);
        let mut best = None;
        while end == b.len() || !word(b[end]) {
            best = Some(end);
            if end + 1 < b.len() && matches!(b[end], b'.' | b',' | b':') && b[end + 1].is_ascii_digit() {
                end = digits_end(end + 1);
            } else {
                break;
            }
        }
        match best {
            Some(e) => return Some(start..e),
            None => at = end,
        }
    }
    None
}

/// Removes control characters (NUL, escape, ...) and other invisible format characters, keeping
/// whitespace (which `collapse_whitespace` handles) and the zero-width joiner that emoji
/// sequences need.
pub fn strip_control(text: &str, out: &mut String) {
    let bytes = text.as_bytes();
    let mut kept = 0; // text[kept..i] is still to be copied
    let mut i = 0;
    while i < bytes.len() {
        let (drop, len) = match bytes[i] {
            // ASCII controls but the whitespace ones (tab, LF, VT, FF, CR).
            b @ 0..0x80 => ((b < b' ' && !(b'\t'..=b'\r').contains(&b)) || b == 0x7f, 1),
            _ => {
                let c = text[i..].chars().next().expect("a character starts here");
                (is_dropped_control(c), c.len_utf8())
            }
        };
        if drop {
            out.push_str(&text[kept..i]);
            kept = i + len;
        }
        i += len;
    }
    out.push_str(&text[kept..]);
}

fn is_dropped_control(c: char) -> bool {
    (c.is_control() && !c.is_whitespace())
        || matches!(c, '\u{200B}' | '\u{200E}' | '\u{200F}' | '\u{FEFF}' | '\u{00AD}')
        || ('\u{202A}'..='\u{202E}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

/// Collapses every run of Unicode whitespace into one space and trims both ends.
///
/// Text that is already words separated by single spaces is copied in one piece.
pub fn collapse_whitespace(text: &str, out: &mut String) {
    let n = text.len();
    let mut i = 0;
    let mut run: Option<usize> = None; // start of the text being copied as it is
    while let Some((space, len)) = next_space(text, i) {
        if space > i {
            run.get_or_insert(i);
        }
        let mut j = space + len;
        while j < n {
            match space_len(text, j) {
                0 => break,
                l => j += l,
            }
        }
        match run {
            // One plain space between two words: the run goes on.
            Some(_) if j == space + 1 && text.as_bytes()[space] == b' ' && j < n => {}
            Some(start) => {
                out.push_str(&text[start..space]);
                if j < n {
                    out.push(' ');
                    run = Some(j);
                } else {
                    run = None;
                }
            }
            None => {} // leading whitespace
        }
        i = j;
    }
    let start = run.unwrap_or(i);
    if start < n {
        out.push_str(&text[start..]);
    }
}

/// Bytes that may start a whitespace character: ASCII tab to carriage return and space, and
/// the UTF-8 lead bytes of the others (U+0085, U+00A0, U+1680, U+2000–U+205F, U+3000).
static MAY_START_SPACE: [bool; 256] = byte_table(&[(b'\t', b'\r'), (b' ', b' '), (0xC2, 0xC2), (0xE1, 0xE3)]);

const fn byte_table(ranges: &[(u8, u8)]) -> [bool; 256] {
    let mut table = [false; 256];
    let mut r = 0;
    while r < ranges.len() {
        let mut b = ranges[r].0 as usize;
        while b <= ranges[r].1 as usize {
            table[b] = true;
            b += 1;
        }
        r += 1;
    }
    table
}

/// The length of the whitespace character at byte `i` of `text`, or 0.
fn space_len(text: &str, i: usize) -> usize {
    let b = text.as_bytes()[i];
    if b < 0x80 {
        return usize::from(MAY_START_SPACE[usize::from(b)]);
    }
    text[i..].chars().next().filter(|c| c.is_whitespace()).map_or(0, char::len_utf8)
}

/// The next whitespace character at or after byte `i`: its position and length.
fn next_space(text: &str, mut i: usize) -> Option<(usize, usize)> {
    let bytes = text.as_bytes();
    loop {
        while i < bytes.len() && !MAY_START_SPACE[usize::from(bytes[i])] {
            i += 1;
        }
        if i == bytes.len() {
            return None;
        }
        match space_len(text, i) {
            0 => i += 1,
            l => return Some((i, l)),
        }
    }
}

/// Keeps at most `max` characters (never splits a character).
pub fn truncate(text: &str, max: usize, out: &mut String) {
    match text.char_indices().nth(max) {
        Some((i, _)) => out.push_str(&text[..i]),
        None => out.push_str(text),
    }
}

pub static URL: LazyLock<Pattern> = LazyLock::new(|| {
    Pattern::new(
        r"(?i)\b(?:(?:https?|ftp)://|www\.)[^\s<>\x22']+",
        r"(?i)(?-u:\b)(?:(?:https?|ftp)://|www\.)[^\t\n\x0B\x0C\r <>\x22']+",
    )
});
pub static EMAIL: LazyLock<Pattern> = LazyLock::new(|| {
    Pattern::new(
        r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b",
        r"(?-u:\b)[0-9A-Za-z_.+-]+@[0-9A-Za-z_-]+(?:\.[0-9A-Za-z_-]+)+(?-u:\b)",
    )
});
pub static NUMBER: LazyLock<Pattern> = LazyLock::new(|| Pattern {
    ascii_scan: Some(next_number),
    ..Pattern::new(r"\b\d+(?:[.,:]\d+)*\b", r"(?-u:\b)[0-9]+(?:[.,:][0-9]+)*(?-u:\b)")
});

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// `count` texts of 0 to 11 of `pieces` each, drawn by an xorshift generator from `seed`.
    pub(in crate::clean) fn mixed_texts(pieces: &[&str], seed: u64, count: usize) -> Vec<String> {
        let mut state = seed;
        (0..count)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (0..(state % 12))
                    .map(|k| pieces[((state >> (k * 5)) % pieces.len() as u64) as usize])
                    .collect()
            })
            .collect()
    }

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
    fn message_headers_only_when_the_block_is_a_message() {
        let keep = vec!["subject".to_string()];
        let f = |t: &str, o: &mut String| strip_message_headers(t, &keep, o);
        // Real header blocks: an mbox line and fields, or two message fields; folded lines; CRLF.
        check(
            f,
            "From a@b  Thu Aug 22 13:17:22 2002\nReturn-Path: <a@b>\nSubject: Hello\n there\nX-Y: z\n\nBody\n\nmore",
            "Hello there\nBody\n\nmore",
        );
        check(
            f,
            "From: Bob <b@x.org>\nTo: t@x.org\nSubject: Release\n  notes\n\nShip it.",
            "Release notes\nShip it.",
        );
        check(f, "Subject: crlf\r\nTo: x\r\n\r\nbody", "crlf\nbody");
        check(f, "Message-ID: <1@x>\nDate: Mon, 2 Sep 2002\n", "");
        check(f, "to: x\nSUBJECT: case\n\nbody", "case\nbody");
        // Texts that start like headers but are not a message's: unchanged.
        for text in [
            "Note: you have won a free prize, click here to claim your money now\n\nthanks",
            "Re: your order\n\nIt shipped today.",
            "Q: what is the price?\nA: ten dollars\n\nok",
            "Date: tomorrow\nPlace: the office\n\nsee you there",
            "Subject: the meeting\n\nlet's meet at five",
            "From the desk of the CEO\n\nHello all",
            "From: a@b.c\nTo: c@d.e\nthis line is not a field\n\nbody",
            "From: a@b.c\nTo name: c@d.e\n\nbody",
            " folded: first\nTo: a\nFrom: b\n\nbody",
            "From a@b  Thu Aug 22 13:17:22 2002\n\nbody",
            "\nTo: a\nFrom: b\n\nbody",
            "just a sentence: with a colon",
            "",
        ] {
            check(f, text, text);
        }
        let none = |t: &str, o: &mut String| strip_message_headers(t, &[], o);
        check(none, "To: x\nSubject: s\n\nbody", "body");
    }

    #[test]
    fn the_first_header_step_keeps_its_meaning() {
        // What `strip_email_headers` did to texts the new step leaves alone: unchanged, so a
        // dataset cleaned with it reads the same.
        let keep = vec!["subject".to_string()];
        let f = |t: &str, o: &mut String| strip_email_headers(t, &keep, o);
        check(f, "Note: you have won\n\nthanks", "thanks");
        check(f, "Re: your order\n\nIt shipped today.", "It shipped today.");
        check(f, "Subject: the meeting\n\nlet's meet", "the meeting\nlet's meet");
        check(f, "From the desk of the CEO\n\nHello all", "Hello all");
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

    /// The straightforward versions the fast paths above must agree with.
    mod reference {
        use unicode_normalization::UnicodeNormalization;

        /// The header split as first written: both blank-line kinds searched through the text.
        pub(super) fn split_headers(text: &str) -> (&str, &str) {
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

        pub(super) fn nfkc(t: &str) -> String {
            t.nfkc().collect()
        }
        pub(super) fn lowercase(t: &str) -> String {
            t.chars().flat_map(char::to_lowercase).collect()
        }
        pub(super) fn strip_control(t: &str) -> String {
            t.chars()
                .filter(|&c| {
                    !((c.is_control() && !c.is_whitespace())
                        || matches!(c, '\u{200B}' | '\u{200E}' | '\u{200F}' | '\u{FEFF}' | '\u{00AD}')
                        || ('\u{202A}'..='\u{202E}').contains(&c)
                        || ('\u{2066}'..='\u{2069}').contains(&c))
                })
                .collect()
        }
        pub(super) fn collapse_whitespace(t: &str) -> String {
            t.split(char::is_whitespace).filter(|w| !w.is_empty()).collect::<Vec<_>>().join(" ")
        }
        /// `strip_html` as it was first written: one character at a time.
        pub(super) fn strip_html(text: &str) -> String {
            if !text.contains('<') && !text.contains('&') {
                return text.to_string();
            }
            let mut plain = String::new();
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
                let ch = rest.chars().next().unwrap();
                plain.push(ch);
                i += ch.len_utf8();
            }
            html_escape::decode_html_entities(&plain).into_owned()
        }
    }

    /// Every step against its reference on `text`.
    fn agree(text: &str) {
        assert_eq!(split_headers(text), reference::split_headers(text), "split_headers of {text:?}");
        assert_eq!(run(nfkc, text), reference::nfkc(text), "nfkc of {text:?}");
        assert_eq!(run(lowercase, text), reference::lowercase(text), "lowercase of {text:?}");
        assert_eq!(run(strip_control, text), reference::strip_control(text), "strip_control of {text:?}");
        assert_eq!(
            run(collapse_whitespace, text),
            reference::collapse_whitespace(text),
            "collapse of {text:?}"
        );
        assert_eq!(run(strip_html, text), reference::strip_html(text), "strip_html of {text:?}");
        for pattern in [&*URL, &*EMAIL, &*NUMBER] {
            let whole = pattern.unicode.replace_all(text, " <t> ");
            assert_eq!(
                run(|t, o| replace(pattern, "<t>", t, o), text),
                whole,
                "{} on {text:?}",
                pattern.unicode
            );
        }
        let ascii: String = text.chars().filter(char::is_ascii).collect();
        for pattern in [&*URL, &*EMAIL, &*NUMBER] {
            let spans = |re: &Regex| re.find_iter(&ascii).map(|m| m.range()).collect::<Vec<_>>();
            assert_eq!(spans(&pattern.ascii), spans(&pattern.unicode), "{} on {ascii:?}", pattern.unicode);
            if let Some(next) = pattern.ascii_scan {
                let mut scanned = Vec::new();
                let mut at = 0;
                while let Some(span) = next(ascii.as_bytes(), at) {
                    at = span.end;
                    scanned.push(span);
                }
                assert_eq!(scanned, spans(&pattern.ascii), "scanner on {ascii:?}");
            }
        }
    }

    #[test]
    fn fast_paths_agree_with_the_plain_versions_on_mixed_text() {
        // ASCII next to combining marks, compatibility forms, Hangul jamo, bidi and control
        // characters, every kind of whitespace, and markup.
        let pieces = [
            "a",
            "E",
            "x",
            " ",
            "  ",
            "\t",
            "\n",
            "\r\n",
            "\u{b}",
            "\u{c}",
            "\u{1c}",
            "\u{85}",
            "\u{a0}",
            "\u{3000}",
            "\u{2028}",
            "e",
            "\u{301}",
            "\u{327}",
            "\u{308}\u{301}",
            "ﬁ",
            "Ｆ",
            "①",
            "İ",
            "Σ",
            "ß",
            "\u{212B}",
            "\u{1E9B}\u{323}",
            "\u{1100}",
            "\u{1161}",
            "\u{11A8}",
            "가",
            "😀",
            "\u{200D}",
            "\u{202B}",
            "\u{2066}",
            "\u{ad}",
            "\0",
            "\u{1b}",
            "\u{7f}",
            "<b>",
            "<",
            ">",
            "&amp;",
            "&#233;",
            "&nbsp;",
            "<!-- c -->",
            "<script>x<y</script>",
            "<STYLE>",
            "a < b",
            "مرحبا",
            "…",
            "½",
            "1",
            "42",
            "3.14",
            "1,000",
            "10:30",
            ".",
            ",",
            ":",
            "_",
            "@",
            "jo.e+x@ex-ample.co.uk",
            "HTTP://",
            "www.",
            "x.org/a?b=1",
            "'",
            "\"",
            "-",
        ];
        for text in mixed_texts(&pieces, 0x2545_f491_4f6c_dd1d, 20_000) {
            agree(&text);
        }
    }

    #[test]
    fn the_header_split_finds_the_first_blank_line_of_either_kind() {
        for text in [
            "a: b\r\n\r\n\nbody",
            "a: b\r\n\r\nx\n\ny",
            "a: b\n\n\r\n\r\nx",
            "a: b\r\n\n\r\n",
            "a: é\n\né",
            "\n\n",
            "\r\n\r\n",
            "no blank line",
        ] {
            assert_eq!(split_headers(text), reference::split_headers(text), "{text:?}");
        }
        assert_eq!(split_headers("a: b\r\n\r\n\nbody"), ("a: b", "\nbody"));
    }

    /// Every text of the SpamAssassin corpus (none when `DRIFTWOOD_CORPUS_DIR` is unset).
    fn corpus_texts() -> Vec<String> {
        let Ok(dir) = std::env::var("DRIFTWOOD_CORPUS_DIR") else { return Vec::new() };
        let mut texts = Vec::new();
        for group in std::fs::read_dir(&dir).unwrap().map(|g| g.unwrap().path()).filter(|g| g.is_dir()) {
            for file in std::fs::read_dir(group).unwrap() {
                let doc: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(file.unwrap().path()).unwrap()).unwrap();
                texts.push(doc["text"].as_str().unwrap().to_string());
            }
        }
        assert!(texts.len() > 5000, "{} corpus texts", texts.len());
        texts
    }

    #[test]
    fn fast_paths_agree_with_the_plain_versions_on_the_corpus() {
        corpus_texts().iter().for_each(|t| agree(t));
    }

    #[test]
    fn both_header_steps_strip_every_message_of_the_corpus_alike() {
        // The corpus is real mail (mbox lines, Received chains, folded fields, odd senders): the
        // strict step must find every header block the first one found.
        let keep = vec!["subject".to_string()];
        for text in corpus_texts() {
            let first = run(|t, o| strip_email_headers(t, &keep, o), &text);
            assert_ne!(first, text);
            assert_eq!(run(|t, o| strip_message_headers(t, &keep, o), &text), first, "{:.200}", text);
        }
    }

    #[test]
    fn very_long_lines_are_linear() {
        let long = "word ".repeat(200_000);
        let out = run(collapse_whitespace, &long);
        assert_eq!(out.len(), long.len() - 1);
    }
}
