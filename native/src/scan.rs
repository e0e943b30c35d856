//! A strict JSON scanner for one known document shape: the reader walks the fields it reads
//! and skips the rest, checking the skipped values' grammar as it goes (brackets, strings and
//! their escapes, numbers, literals) without building them.
//!
//! Why not a general parser: a search page is about 400 KB of which a snapshot reads a few
//! percent; serde_json, sonic-rs and simd-json (through serde or its tape) were measured here at 1.4 - 3x
//! msgspec's decode of the same page (2026-12-02, on simulator pages of 430 KB), while skipping
//! what is not read is a scan of bytes.
//!
//! Anything outside plain JSON, or a shape the reader does not take, is `NotPlain`: the caller
//! then leaves the page to the Python reading, which decides what it is.

use std::borrow::Cow;

/// The page is not of the plain shape this reading takes.
#[derive(Debug)]
pub struct NotPlain;

pub type R<T> = Result<T, NotPlain>;

const MAX_DEPTH: u32 = 128;

pub struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

/// Bytes that end the fast part of a string: the quote, the backslash, control bytes and the
/// bytes of non-ASCII characters (each checked as UTF-8 where it is met: no pass over the page
/// before the scan).
static STOP: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        t[c] = c < 0x20 || c >= 0x80;
        c += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// The first index at or after ``i`` of a byte that ends the plain part of a string (``STOP``),
/// or ``b.len()``: eight bytes at a time (SWAR), most of a page's bytes are inside strings.
#[inline]
fn plain_end(b: &[u8], mut i: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    while i + 8 <= b.len() {
        let x = u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        let quote = x ^ (ONES * u64::from(b'"'));
        let slash = x ^ (ONES * u64::from(b'\\'));
        let hit = (quote.wrapping_sub(ONES) & !quote)
            | (slash.wrapping_sub(ONES) & !slash)
            | (x.wrapping_sub(ONES * 0x20) & !x)
            | x; // a byte of a non-ASCII character
        let hit = hit & HIGH;
        if hit != 0 {
            return i + (hit.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < b.len() && !STOP[b[i] as usize] {
        i += 1;
    }
    i
}

impl<'a> Scanner<'a> {
    /// A scanner over ``b`` (outside strings only ASCII is JSON; inside them, each non-ASCII
    /// character is checked as UTF-8 where the scan meets it).
    pub fn new(b: &'a [u8]) -> R<Self> {
        Ok(Scanner { b, i: 0 })
    }

    #[inline]
    fn ws(&mut self) {
        while let Some(&c) = self.b.get(self.i) {
            if !matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
                break;
            }
            self.i += 1;
        }
    }

    #[inline]
    fn peek(&mut self) -> R<u8> {
        self.ws();
        self.b.get(self.i).copied().ok_or(NotPlain)
    }

    #[inline]
    fn expect(&mut self, c: u8) -> R<()> {
        if self.peek()? != c {
            return Err(NotPlain);
        }
        self.i += 1;
        Ok(())
    }

    /// The next value is a string.
    pub fn peek_is_string(&mut self) -> R<bool> {
        Ok(self.peek()? == b'"')
    }

    /// Only whitespace is left.
    pub fn end(&mut self) -> R<()> {
        self.ws();
        if self.i == self.b.len() { Ok(()) } else { Err(NotPlain) }
    }

    /// The next value is `null` (consumed) or not (nothing consumed).
    pub fn null(&mut self) -> R<bool> {
        if self.peek()? == b'n' {
            self.literal(b"null")?;
            return Ok(true);
        }
        Ok(false)
    }

    fn literal(&mut self, word: &[u8]) -> R<()> {
        if self.b.get(self.i..self.i + word.len()) != Some(word) {
            return Err(NotPlain);
        }
        self.i += word.len();
        Ok(())
    }

    /// A key: its raw bytes (a key with an escape is not plain: it could spell a field read).
    #[inline]
    fn key(&mut self) -> R<&'a [u8]> {
        if self.peek()? != b'"' {
            return Err(NotPlain);
        }
        let b = self.b;
        let start = self.i + 1;
        let i = plain_end(b, start);
        if b.get(i) != Some(&b'"') {
            return Err(NotPlain);
        }
        self.i = i + 1;
        Ok(&b[start..i])
    }

    /// An object: ``f`` is called with each key, positioned at its value, and must consume it.
    pub fn object(&mut self, mut f: impl FnMut(&mut Self, &[u8]) -> R<()>) -> R<()> {
        self.expect(b'{')?;
        if self.peek()? == b'}' {
            self.i += 1;
            return Ok(());
        }
        loop {
            let key = self.key()?;
            self.expect(b':')?;
            f(self, key)?;
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return Err(NotPlain),
            }
        }
    }

    /// An array: ``f`` is called at each element and must consume it.
    pub fn array(&mut self, mut f: impl FnMut(&mut Self) -> R<()>) -> R<()> {
        self.expect(b'[')?;
        if self.peek()? == b']' {
            self.i += 1;
            return Ok(());
        }
        loop {
            f(self)?;
            match self.peek()? {
                b',' => self.i += 1,
                b']' => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return Err(NotPlain),
            }
        }
    }

    /// A string, unescaped: borrowed from the page when it has no escape.
    pub fn string(&mut self) -> R<Cow<'a, str>> {
        self.expect(b'"')?;
        let b = self.b;
        let start = self.i;
        let i = plain_end(b, start);
        match b.get(i) {
            Some(b'"') => {
                self.i = i + 1;
                // ASCII only (any other byte stops the scan)
                std::str::from_utf8(&b[start..i]).map(Cow::Borrowed).map_err(|_| NotPlain)
            }
            Some(&c) if c == b'\\' || c >= 0x80 => {
                let mut out: Vec<u8> = b[start..i].to_vec();
                self.i = i;
                self.escaped(&mut out)?;
                String::from_utf8(out).map(Cow::Owned).map_err(|_| NotPlain)
            }
            _ => Err(NotPlain), // a control byte, or the end
        }
    }

    /// The rest of a string from an escape on, into ``out`` (when given), through the quote.
    fn rest(&mut self, mut out: Option<&mut Vec<u8>>) -> R<()> {
        let b = self.b;
        loop {
            let start = self.i;
            let i = plain_end(b, start);
            if let Some(o) = out.as_deref_mut() {
                o.extend_from_slice(&b[start..i]);
            }
            match b.get(i) {
                Some(b'"') => {
                    self.i = i + 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    self.i = i + 1;
                    let c = *b.get(self.i).ok_or(NotPlain)?;
                    self.i += 1;
                    let plain = match c {
                        b'"' => b'"',
                        b'\\' => b'\\',
                        b'/' => b'/',
                        b'b' => 0x08,
                        b'f' => 0x0c,
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'u' => {
                            let ch = self.unicode()?;
                            if let Some(o) = out.as_deref_mut() {
                                let mut buf = [0u8; 4];
                                o.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                            }
                            continue;
                        }
                        _ => return Err(NotPlain),
                    };
                    if let Some(o) = out.as_deref_mut() {
                        o.push(plain);
                    }
                }
                Some(&c) if c >= 0x80 => {
                    // one character: its length from its first byte, then checked as UTF-8
                    let n = match c {
                        0xC2..=0xDF => 2,
                        0xE0..=0xEF => 3,
                        0xF0..=0xF4 => 4,
                        _ => return Err(NotPlain),
                    };
                    let ch = b.get(i..i + n).ok_or(NotPlain)?;
                    std::str::from_utf8(ch).map_err(|_| NotPlain)?;
                    if let Some(o) = out.as_deref_mut() {
                        o.extend_from_slice(ch);
                    }
                    self.i = i + n;
                }
                _ => return Err(NotPlain),
            }
        }
    }

    fn escaped(&mut self, out: &mut Vec<u8>) -> R<()> {
        self.rest(Some(out))
    }

    fn hex4(&mut self) -> R<u32> {
        let h = self.b.get(self.i..self.i + 4).ok_or(NotPlain)?;
        let mut v = 0u32;
        for &c in h {
            v = v * 16 + (c as char).to_digit(16).ok_or(NotPlain)?;
        }
        self.i += 4;
        Ok(v)
    }

    /// After ``\u``: one character (a surrogate pair as one; a lone surrogate is not plain).
    fn unicode(&mut self) -> R<char> {
        let hi = self.hex4()?;
        let code = if (0xD800..0xDC00).contains(&hi) {
            if self.b.get(self.i..self.i + 2) != Some(b"\\u") {
                return Err(NotPlain);
            }
            self.i += 2;
            let lo = self.hex4()?;
            if !(0xDC00..0xE000).contains(&lo) {
                return Err(NotPlain);
            }
            0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
        } else if (0xDC00..0xE000).contains(&hi) {
            return Err(NotPlain);
        } else {
            hi
        };
        char::from_u32(code).ok_or(NotPlain)
    }

    /// A string or null.
    pub fn opt_string(&mut self) -> R<Option<Cow<'a, str>>> {
        if self.null()? { Ok(None) } else { self.string().map(Some) }
    }

    /// An integer that fits 64 bits signed (a fraction or an exponent is not plain).
    pub fn int(&mut self) -> R<i64> {
        self.ws();
        let b = self.b;
        let neg = b.get(self.i) == Some(&b'-');
        if neg {
            self.i += 1;
        }
        let start = self.i;
        let mut mag: u64 = 0;
        while let Some(&c) = b.get(self.i) {
            if !c.is_ascii_digit() {
                break;
            }
            mag = mag.checked_mul(10).and_then(|m| m.checked_add(u64::from(c - b'0'))).ok_or(NotPlain)?;
            self.i += 1;
        }
        let digits = self.i - start;
        if digits == 0 || (digits > 1 && b[start] == b'0') {
            return Err(NotPlain);
        }
        if matches!(b.get(self.i), Some(b'.' | b'e' | b'E')) {
            return Err(NotPlain);
        }
        if neg {
            if mag > 1u64 << 63 {
                return Err(NotPlain);
            }
            Ok((mag as i128).wrapping_neg() as i64)
        } else {
            i64::try_from(mag).map_err(|_| NotPlain)
        }
    }

    /// An integer or null.
    pub fn opt_int(&mut self) -> R<Option<i64>> {
        if self.null()? { Ok(None) } else { self.int().map(Some) }
    }

    /// Skip one value of any kind, checking its grammar: one loop over the bytes with a stack
    /// of the open objects and arrays (a recursive walk cost about 15% more a page here).
    pub fn skip(&mut self) -> R<()> {
        const OBJ: bool = true;
        let mut open: u128 = 0; // bit d: the bracket open at depth d is an object's
        let mut depth = 0u32;
        loop {
            // a value is expected
            match self.peek()? {
                b'"' => {
                    self.i += 1;
                    self.skip_string()?;
                }
                c @ (b'{' | b'[') => {
                    self.i += 1;
                    let close = if c == b'{' { b'}' } else { b']' };
                    if self.peek()? == close {
                        self.i += 1;
                    } else {
                        if depth == MAX_DEPTH {
                            return Err(NotPlain);
                        }
                        open = (open & !(1u128 << depth)) | (u128::from(c == b'{') << depth);
                        depth += 1;
                        if c == b'{' {
                            self.member_key()?;
                        }
                        continue;
                    }
                }
                b't' => self.literal(b"true")?,
                b'f' => self.literal(b"false")?,
                b'n' => self.literal(b"null")?,
                b'-' | b'0'..=b'9' => self.number()?,
                _ => return Err(NotPlain),
            }
            // after a value: a comma (then the next member or element) or the closing bracket
            loop {
                if depth == 0 {
                    return Ok(());
                }
                let top = open >> (depth - 1) & 1 == 1;
                match self.peek()? {
                    b',' => {
                        self.i += 1;
                        if top == OBJ {
                            self.member_key()?;
                        }
                        break;
                    }
                    b'}' if top == OBJ => {
                        self.i += 1;
                        depth -= 1;
                    }
                    b']' if top != OBJ => {
                        self.i += 1;
                        depth -= 1;
                    }
                    _ => return Err(NotPlain),
                }
            }
        }
    }

    /// A member's key of a skipped object and its colon (any valid key text).
    #[inline]
    fn member_key(&mut self) -> R<()> {
        if self.peek()? != b'"' {
            return Err(NotPlain);
        }
        self.i += 1;
        self.skip_string()?;
        self.expect(b':')
    }

    /// The rest of a skipped string, after its opening quote.
    #[inline]
    fn skip_string(&mut self) -> R<()> {
        let b = self.b;
        let i = plain_end(b, self.i);
        if b.get(i) == Some(&b'"') {
            self.i = i + 1;
            return Ok(());
        }
        self.i = i;
        self.rest(None)
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while self.b.get(self.i).is_some_and(u8::is_ascii_digit) {
            self.i += 1;
        }
        self.i - start
    }

    fn number(&mut self) -> R<()> {
        if self.b.get(self.i) == Some(&b'-') {
            self.i += 1;
        }
        let first = self.b.get(self.i).copied();
        let n = self.digits();
        if n == 0 || (n > 1 && first == Some(b'0')) {
            return Err(NotPlain);
        }
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return Err(NotPlain);
            }
        }
        if matches!(self.b.get(self.i), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.b.get(self.i), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if self.digits() == 0 {
                return Err(NotPlain);
            }
        }
        Ok(())
    }
}
