//! A one-pass reader for the usual shape of a raw record's JSON: an object whose known fields
//! hold strings (`ts` an integer, `label`/`source`/`ts`/`meta` possibly null) and whose other
//! fields hold strings, numbers or literals.
//!
//! It unescapes straight into reused buffers, with no `serde_json::Value` tree and no
//! allocation per record; strings are scanned eight bytes at a time. It answers only when it is
//! sure: anything else (another shape, a duplicate or escaped key, a number id, a `ts` string,
//! a `meta` object, a control character anywhere, even as whitespace, any syntax error, a lone
//! surrogate, blank text) gives `None`, and the caller decodes the record with
//! [`crate::decode::decode`], which gives the same record, or the exact reason it is dead.
//! `decode::tests` hold the two paths equal on generated and corpus records.

/// The fields of a record, borrowed from the [`Parser`]'s buffers.
#[derive(Debug, PartialEq, Eq)]
pub struct Parsed<'a> {
    pub id: Option<&'a str>,
    pub text: &'a str,
    pub label: Option<&'a str>,
    pub source: Option<&'a str>,
    pub ts: Option<i64>,
}

/// Reusable buffers for the unescaped strings.
#[derive(Debug, Default)]
pub struct Parser {
    id: Buf,
    text: Buf,
    label: Buf,
    source: Buf,
    skipped: Buf,
}

const ID: u8 = 1;
const TEXT: u8 = 2;
const LABEL: u8 = 4;
const SOURCE: u8 = 8;
const TS: u8 = 16;
const META: u8 = 32;

impl Parser {
    /// The fields of `input` when it is a JSON object this reader is sure about.
    ///
    /// `input` need not be UTF-8: outside strings only ASCII tokens are accepted, and every
    /// string read (keys and skipped values too) is checked, which covers the whole input.
    pub fn parse<'s>(&'s mut self, input: &[u8]) -> Option<Parsed<'s>> {
        // Control characters are only allowed as whitespace between tokens; a record that has
        // any is left to serde_json, so strings need not look for them. (A reduction without
        // an early exit: vectorized.)
        if input.iter().fold(false, |any, &c| any | (c < 0x20)) {
            return None;
        }
        let mut r = Reader { b: input, i: 0 };
        // Fields seen (a second one is left to serde_json), and those holding a value (not null).
        let (mut seen, mut valued, mut ts) = (0u8, 0u8, None);
        r.ws();
        r.eat(b'{')?;
        r.ws();
        loop {
            let key = r.key()?;
            r.ws();
            r.eat(b':')?;
            r.ws();
            let field = match key {
                b"id" => ID,
                b"text" => TEXT,
                b"label" => LABEL,
                b"source" => SOURCE,
                b"ts" => TS,
                b"meta" => META,
                _ => 0,
            };
            if seen & field != 0 {
                return None;
            }
            seen |= field;
            if r.null() {
                // As good as absent, except for the text.
                if field == TEXT {
                    return None;
                }
            } else {
                valued |= field;
                match field {
                    ID => r.string(&mut self.id)?,
                    TEXT => r.string(&mut self.text)?,
                    LABEL => r.string(&mut self.label)?,
                    SOURCE => r.string(&mut self.source)?,
                    TS => ts = Some(r.integer()?),
                    META => return None,
                    _ => {
                        r.skip_value(&mut self.skipped)?;
                        std::str::from_utf8(&self.skipped.bytes[..self.skipped.len]).ok()?;
                    }
                }
            }
            r.ws();
            match r.next()? {
                b',' => r.ws(),
                b'}' => break,
                _ => return None,
            }
        }
        r.ws();
        let ended = r.i == r.b.len();
        let has = |f: u8| valued & f != 0;
        // Valid: the input is a str, and escapes give whole characters.
        let utf8 = |buf: &'s Buf| std::str::from_utf8(&buf.bytes[..buf.len]).ok();
        let field = |f: u8, buf: &'s Buf| if has(f) { utf8(buf).map(Some) } else { Some(None) };
        let (id, text) = (field(ID, &self.id)?, utf8(&self.text)?);
        if !ended || !has(TEXT) || id == Some("") || text.trim().is_empty() {
            return None;
        }
        Some(Parsed { id, text, label: field(LABEL, &self.label)?, source: field(SOURCE, &self.source)?, ts })
    }
}

struct Reader<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Reader<'a> {
    fn next(&mut self) -> Option<u8> {
        let c = *self.b.get(self.i)?;
        self.i += 1;
        Some(c)
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.next()? == c).then_some(())
    }

    /// Spaces (the other JSON whitespace is a control character, left to serde_json).
    fn ws(&mut self) {
        while self.b.get(self.i) == Some(&b' ') {
            self.i += 1;
        }
    }

    fn null(&mut self) -> bool {
        let is = self.b[self.i..].starts_with(b"null");
        if is {
            self.i += 4;
        }
        is
    }

    /// A key without escapes.
    fn key(&mut self) -> Option<&'a [u8]> {
        self.eat(b'"')?;
        let start = self.i;
        let end = start + self.b[start..].iter().position(|&c| c == b'"' || c == b'\\')?;
        if self.b[end] != b'"' {
            return None;
        }
        self.i = end + 1;
        let key = &self.b[start..end];
        std::str::from_utf8(key).ok()?;
        Some(key)
    }

    /// A string, unescaped into `out`, eight bytes at a time: each word is copied before it is
    /// looked at, and the output moves on to the first quote or backslash in it. The input
    /// holds no control characters ([`Parser::parse`] checks first), so none is looked for.
    fn string(&mut self, buf: &mut Buf) -> Option<()> {
        self.eat(b'"')?;
        let b = self.b;
        // Unescaping never lengthens a string: the rest of the input and a word more bound it.
        let room = b.len() - self.i + 8;
        if buf.bytes.len() < room {
            buf.bytes.resize(room, 0);
        }
        let out = &mut buf.bytes[..];
        let (mut i, mut o) = (self.i, 0);
        loop {
            let hit = match b.get(i..i + 8) {
                Some(word) => {
                    out[o..o + 8].copy_from_slice(word);
                    let hits = quotes_or_backslashes(u64::from_le_bytes(word.try_into().ok()?));
                    if hits == 0 {
                        (i, o) = (i + 8, o + 8);
                        continue;
                    }
                    let k = hits.trailing_zeros() as usize / 8;
                    (i, o) = (i + k, o + k);
                    b[i]
                }
                None => {
                    let c = *b.get(i)?;
                    if c != b'"' && c != b'\\' {
                        out[o] = c;
                        (i, o) = (i + 1, o + 1);
                        continue;
                    }
                    c
                }
            };
            i += 1;
            if hit == b'"' {
                break;
            }
            // The one-character escapes by table, without a branch per kind.
            let simple = SIMPLE_ESCAPES[usize::from(*b.get(i)?)];
            if simple != 0 {
                out[o] = simple;
                (i, o) = (i + 1, o + 1);
                continue;
            }
            self.i = i;
            o += self.escape(&mut out[o..o + 4])?;
            i = self.i;
        }
        self.i = i;
        buf.len = o;
        Some(())
    }

    /// Writes the character of a `\u` escape (the backslash read) to `dst`; its length.
    fn escape(&mut self, dst: &mut [u8]) -> Option<usize> {
        match self.next()? {
            b'u' => {
                let high = self.hex4()?;
                let c = match high {
                    0xD800..=0xDBFF => {
                        self.eat(b'\\')?;
                        self.eat(b'u')?;
                        let low = self.hex4()?;
                        if !(0xDC00..=0xDFFF).contains(&low) {
                            return None;
                        }
                        char::from_u32(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00))?
                    }
                    _ => char::from_u32(high)?, // None for a lone low surrogate
                };
                Some(c.encode_utf8(dst).len())
            }
            _ => None,
        }
    }

    fn hex4(&mut self) -> Option<u32> {
        let digits = self.b.get(self.i..self.i + 4)?;
        self.i += 4;
        digits.iter().try_fold(0u32, |n, &d| Some(n * 16 + (d as char).to_digit(16)?))
    }

    /// An integer of at most 18 digits (so it fits an i64), without sign tricks: `-0` and
    /// leading zeros are left to serde_json.
    fn integer(&mut self) -> Option<i64> {
        let negative = self.b.get(self.i) == Some(&b'-');
        let start = self.i + usize::from(negative);
        let digits = self.b[start..].iter().take_while(|c| c.is_ascii_digit()).count();
        let text = &self.b[start..start + digits];
        if digits == 0 || digits > 18 || (text[0] == b'0' && (digits > 1 || negative)) {
            return None;
        }
        if matches!(self.b.get(start + digits), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        self.i = start + digits;
        let n = text.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0'));
        Some(if negative { -n } else { n })
    }

    /// Any value but an object or array (those are left to serde_json).
    fn skip_value(&mut self, scratch: &mut Buf) -> Option<()> {
        match *self.b.get(self.i)? {
            b'"' => self.string(scratch),
            b't' | b'f' | b'n' => {
                let rest = &self.b[self.i..];
                let len = [&b"true"[..], b"false", b"null"].iter().find(|w| rest.starts_with(w))?.len();
                self.i += len;
                Some(())
            }
            b'-' | b'0'..=b'9' => self.integer().map(drop),
            _ => None,
        }
    }
}

/// What each one-character escape (`\n`, ...) stands for; 0 for the others.
const SIMPLE_ESCAPES: [u8; 256] = {
    let mut table = [0u8; 256];
    let pairs = [
        (b'"', b'"'),
        (b'\\', b'\\'),
        (b'/', b'/'),
        (b'b', 8),
        (b'f', 12),
        (b'n', b'\n'),
        (b'r', b'\r'),
        (b't', b'\t'),
    ];
    let mut k = 0;
    while k < pairs.len() {
        table[pairs[k].0 as usize] = pairs[k].1;
        k += 1;
    }
    table
};

/// The high bit of every byte of `w` that may be `"` or `\`: exact for the lowest one, which
/// is all that is read.
fn quotes_or_backslashes(w: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    let quote = w ^ (ONES * u64::from(b'"'));
    let backslash = w ^ (ONES * u64::from(b'\\'));
    ((quote.wrapping_sub(ONES) & !quote) | (backslash.wrapping_sub(ONES) & !backslash)) & (ONES << 7)
}

/// An unescaped string: the first `len` bytes of a buffer reused from record to record (and
/// never shrunk, so it is zeroed only when it grows).
#[derive(Debug, Default)]
struct Buf {
    bytes: Vec<u8>,
    len: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// id, text, label, source, ts
    type Owned = (Option<String>, String, Option<String>, Option<String>, Option<i64>);

    fn fields(input: &str) -> Option<Owned> {
        let mut p = Parser::default();
        p.parse(input.as_bytes()).map(|f| {
            (
                f.id.map(str::to_string),
                f.text.to_string(),
                f.label.map(str::to_string),
                f.source.map(str::to_string),
                f.ts,
            )
        })
    }

    #[test]
    fn reads_the_usual_shapes() {
        let f = fields(r#"{"id": "a1", "text": "Hi\nthere \"you\" \u00e9\ud83d\ude00", "label": "spam"}"#)
            .unwrap();
        assert_eq!(f, (Some("a1".into()), "Hi\nthere \"you\" é😀".into(), Some("spam".into()), None, None));
        let f = fields(
            " {\"text\":\"x\",\"source\":null,\"ts\":-1700,\"meta\":null,\"n\":15,\"b\":true,\"s\":\"\\t\"} ",
        );
        assert_eq!(f, Some((None, "x".into(), None, None, Some(-1700))));
    }

    #[test]
    fn leaves_everything_else_to_serde() {
        for input in [
            r#"{}"#,
            r#"{"text":"a","text":"b"}"#,
            r#"{"te\u0078t":"a"}"#,
            r#"{"text":"a","id":7}"#,
            r#"{"text":"a","id":""}"#,
            r#"{"text":"  \n"}"#,
            r#"{"text":"a","ts":"2020-01-01T00:00:00Z"}"#,
            r#"{"text":"a","ts":1.5}"#,
            r#"{"text":"a","ts":01}"#,
            r#"{"text":"a","ts":-0}"#,
            r#"{"text":"a","ts":1234567890123456789}"#,
            r#"{"text":"a","meta":{"k":1}}"#,
            r#"{"text":"a","x":[1]}"#,
            r#"{"text":"a","x":1e5}"#,
            r#"{"text":"\ud800"}"#,
            r#"{"text":"\udc00"}"#,
            r#"{"text":"\x"}"#,
            "{\"text\":\"a\tb\"}",
            r#"{"text":"a"} x"#,
            r#"{"text":"a",}"#,
            r#"{"text":"a""#,
            r#"{"text":"a"#,
            r#"["text"]"#,
            r#"{"text":null}"#,
            r#"{"text":"a","label":5}"#,
            "{\"text\":\"a\"}\n",
        ] {
            assert_eq!(fields(input), None, "{input}");
        }
    }

    #[test]
    fn every_string_is_checked_for_utf8() {
        let mut p = Parser::default();
        assert!(p.parse(b"{\"text\":\"\xc3\xa9\",\"x\":\"\xe2\x82\xac\"}").is_some());
        for input in [
            &b"{\"text\":\"\xc3\"}"[..],
            b"{\"text\":\"\xc3\\n\xa9\"}",
            b"{\"text\":\"a\",\"x\":\"\xff\"}",
            b"{\"text\":\"a\",\"\xff\":1}",
            b"{\"text\":\"a\",\"id\":\"\xed\xa0\x80\"}",
            b"{\"text\":\"a\"}\xff",
        ] {
            assert_eq!(p.parse(input), None, "{}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn unescapes_at_every_position() {
        let mut p = Parser::default();
        for len in 0..40 {
            for pos in 0..len {
                for (escaped, plain) in
                    [("\\n", "\n"), ("\\u00e9", "é"), ("\\ud83d\\ude00", "😀"), ("\\\"", "\"")]
                {
                    let text: String = (0..len).map(|i| if i % 3 == 0 { 'x' } else { 'é' }).collect();
                    let cut = text.char_indices().nth(pos).map_or(text.len(), |(i, _)| i);
                    let input = format!("{{\"text\":\"{}{escaped}{}\"}}", &text[..cut], &text[cut..]);
                    let expected = format!("{}{plain}{}", &text[..cut], &text[cut..]);
                    assert_eq!(
                        p.parse(input.as_bytes()).map(|f| f.text.to_string()),
                        Some(expected),
                        "{input}"
                    );
                }
            }
        }
    }
}
