//! The producer's native reading of Resy search pages (issue 16).
//!
//! One search page is decoded straight into what a snapshot record needs: per venue with a
//! start in the bucket window, its merged slots (one per start time: seating types joined,
//! party sizes widened, the first booking token kept). A fetch's pages are gathered in a
//! [`Collector`], whose `table()` gives the record columns (venues, venue index, slot ids,
//! JSON rows) with no Python object per slot until the columns themselves.
//!
//! It is the same reading as `producers/providers/resy.py`'s typed one (`decode_page` +
//! `take_hits` + `Collector.table`), which stays as the reference and as the fallback: this
//! reading accepts only pages whose every field it reads has the plain shape (strings where
//! text is read, integers that fit 64 bits, ASCII start times, no repeated keys). Anything else
//! gives `None`, and the producer reads the page in Python instead, so what it accepts it
//! reads exactly as Python would (`tests/unit/test_native_pages.py` checks that, byte for byte,
//! against the Python reading on generated pages).

use std::borrow::Cow;
use std::collections::HashMap;

use blake2::digest::{Update, VariableOutput};
use blake2::Blake2bVar;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};

mod scan;
use scan::{NotPlain, Scanner, R};

// ------------------------------------------------------------------ merged slots

/// One start time of one venue: `[seating types, party min, party max, booking token]`.
struct Entry {
    seating: Vec<String>,
    pmin: i64,
    pmax: i64,
    token: String,
}

struct Venue {
    id: String,
    name: String,
    time_zone: String,
    neighborhood: String,
    slug: String,
    city: String,
    times: Vec<(String, Entry)>, // few per venue: a linear search beats hashing
}

impl Venue {
    fn add(&mut self, actual: String, seating: &str, pmin: i64, pmax: i64, token: &str) {
        if let Some((_, got)) = self.times.iter_mut().find(|(t, _)| *t == actual) {
            if !seating.is_empty() && !got.seating.iter().any(|s| s == seating) {
                got.seating.push(seating.to_owned());
            }
            got.pmin = got.pmin.min(pmin);
            got.pmax = got.pmax.max(pmax);
            return;
        }
        let seating = if seating.is_empty() { Vec::new() } else { vec![seating.to_owned()] };
        self.times.push((actual, Entry { seating, pmin, pmax, token: token.to_owned() }));
    }

    fn absorb(&mut self, other: Venue) {
        for (actual, e) in other.times {
            if let Some((_, got)) = self.times.iter_mut().find(|(t, _)| *t == actual) {
                for s in e.seating {
                    if !got.seating.contains(&s) {
                        got.seating.push(s);
                    }
                }
                got.pmin = got.pmin.min(e.pmin);
                got.pmax = got.pmax.max(e.pmax);
            } else {
                self.times.push((actual, e));
            }
        }
    }
}

/// Minutes after midnight of `HH:MM` (hours 00-23, minutes 00-59), as `MINUTE_OF` in Python.
fn minute_of(hhmm: &[u8]) -> Option<u32> {
    if hhmm.len() != 5 || hhmm[2] != b':' {
        return None;
    }
    let d = |c: u8| if c.is_ascii_digit() { Some(u32::from(c - b'0')) } else { None };
    let (h, m) = (d(hhmm[0])? * 10 + d(hhmm[1])?, d(hhmm[3])? * 10 + d(hhmm[4])?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

/// One slot as read from the page, before the window filter.
struct SlotRead<'a> {
    start: Cow<'a, str>,
    kind: Option<Cow<'a, str>>,
    token: Option<Cow<'a, str>>,
    size: (i64, i64),
}

/// Each field read may come once per object: a repeated one is not plain (Python's readings
/// would keep the last one; this one does not guess).
fn once(mask: &mut u32, bit: u32) -> R<()> {
    if *mask & bit != 0 {
        return Err(NotPlain);
    }
    *mask |= bit;
    Ok(())
}

fn read_slot<'a>(s: &mut Scanner<'a>) -> R<SlotRead<'a>> {
    let (mut mask, mut start, mut kind, mut token, mut size) = (0u32, None, None, None, (0, 0));
    s.object(|s, key| match key {
        b"date" => {
            once(&mut mask, 1)?;
            let mut m = 0u32;
            s.object(|s, key| match key {
                b"start" => {
                    once(&mut m, 1)?;
                    start = Some(s.string()?);
                    Ok(())
                }
                _ => s.skip(),
            })
        }
        b"config" => {
            once(&mut mask, 2)?;
            let mut m = 0u32;
            s.object(|s, key| match key {
                b"type" => {
                    once(&mut m, 1)?;
                    kind = s.opt_string()?;
                    Ok(())
                }
                b"token" => {
                    once(&mut m, 2)?;
                    token = s.opt_string()?;
                    Ok(())
                }
                _ => s.skip(),
            })
        }
        b"size" => {
            once(&mut mask, 4)?;
            if s.null()? {
                return Ok(());
            }
            let mut m = 0u32;
            s.object(|s, key| match key {
                b"min" => {
                    once(&mut m, 1)?;
                    size.0 = s.int()?;
                    Ok(())
                }
                b"max" => {
                    once(&mut m, 2)?;
                    size.1 = s.int()?;
                    Ok(())
                }
                _ => s.skip(),
            })
        }
        _ => s.skip(),
    })?;
    if mask & 3 != 3 {
        return Err(NotPlain); // a slot needs its date and config
    }
    Ok(SlotRead { start: start.ok_or(NotPlain)?, kind, token, size })
}

struct HitRead<'a> {
    id: Option<String>,
    name: Option<Cow<'a, str>>,
    slug: Option<Cow<'a, str>>,
    time_zone: Option<Cow<'a, str>>,
    neighborhood: Option<Cow<'a, str>>,
    city: Option<Cow<'a, str>>,
    code: Option<Cow<'a, str>>,
    slots: Vec<SlotRead<'a>>,
}

fn read_hit<'a>(s: &mut Scanner<'a>) -> R<HitRead<'a>> {
    let mut h = HitRead {
        id: None, name: None, slug: None, time_zone: None, neighborhood: None, city: None,
        code: None, slots: Vec::new(),
    };
    let mut mask = 0u32;
    s.object(|s, key| match key {
        b"id" => {
            once(&mut mask, 1)?;
            let mut m = 0u32;
            s.object(|s, key| match key {
                b"resy" => {
                    once(&mut m, 1)?;
                    h.id = Some(if s.peek_is_string()? { s.string()?.into_owned() } else { s.int()?.to_string() });
                    Ok(())
                }
                _ => s.skip(),
            })
        }
        b"availability" => {
            once(&mut mask, 2)?;
            if s.null()? {
                return Ok(());
            }
            let mut m = 0u32;
            s.object(|s, key| match key {
                b"slots" => {
                    once(&mut m, 1)?;
                    if s.null()? {
                        return Ok(());
                    }
                    s.array(|s| {
                        h.slots.push(read_slot(s)?);
                        Ok(())
                    })
                }
                _ => s.skip(),
            })
        }
        b"name" => {
            once(&mut mask, 4)?;
            h.name = s.opt_string()?;
            Ok(())
        }
        b"url_slug" => {
            once(&mut mask, 8)?;
            h.slug = s.opt_string()?;
            Ok(())
        }
        b"location" => {
            once(&mut mask, 16)?;
            if s.null()? {
                return Ok(());
            }
            let mut m = 0u32;
            s.object(|s, key| {
                let (bit, into) = match key {
                    b"time_zone" => (1, &mut h.time_zone),
                    b"neighborhood" => (2, &mut h.neighborhood),
                    b"url_slug" => (4, &mut h.city),
                    b"code" => (8, &mut h.code),
                    _ => return s.skip(),
                };
                once(&mut m, bit)?;
                *into = s.opt_string()?;
                Ok(())
            })
        }
        _ => s.skip(),
    })?;
    if h.id.is_none() {
        return Err(NotPlain); // a hit needs id.resy
    }
    Ok(h)
}

fn text(value: &Option<Cow<'_, str>>) -> String {
    value.as_deref().unwrap_or("").to_owned()
}

fn read_page(body: &[u8], date: &str, lo: u32, hi: u32) -> R<Page> {
    let mut s = Scanner::new(body)?;
    let mut page = Page { hits: 0, total: None, venue_ids: Vec::new(), venues: Vec::new() };
    let mut index: HashMap<String, usize> = HashMap::new();
    let (mut mask, mut nb_hits, mut meta_total) = (0u32, None, None);
    let mut hits_seen = false;
    s.object(|s, key| match key {
        b"search" => {
            once(&mut mask, 1)?;
            let mut m = 0u32;
            s.object(|s, key| match key {
                b"hits" => {
                    once(&mut m, 1)?;
                    hits_seen = true;
                    s.array(|s| {
                        let hit = read_hit(s)?;
                        take_hit(&mut page, &mut index, hit, date, lo, hi)
                    })
                }
                b"nbHits" => {
                    once(&mut m, 2)?;
                    nb_hits = s.opt_int()?;
                    Ok(())
                }
                _ => s.skip(),
            })
        }
        b"meta" => {
            once(&mut mask, 2)?;
            if s.null()? {
                return Ok(());
            }
            let mut m = 0u32;
            s.object(|s, key| match key {
                b"total" => {
                    once(&mut m, 1)?;
                    meta_total = s.opt_int()?;
                    Ok(())
                }
                _ => s.skip(),
            })
        }
        _ => s.skip(),
    })?;
    s.end()?;
    if !hits_seen {
        return Err(NotPlain); // no search.hits: the Python reading names the failure
    }
    page.total = nb_hits.or(meta_total);
    Ok(page)
}

/// One venue of a page into the page's venues: its slots in the bucket window, merged per
/// start time (``resy.take_hits``).
fn take_hit(
    page: &mut Page,
    index: &mut HashMap<String, usize>,
    hit: HitRead<'_>,
    date: &str,
    lo: u32,
    hi: u32,
) -> R<()> {
    let venue_id = hit.id.clone().ok_or(NotPlain)?;
    page.hits += 1;
    let mut at: Option<usize> = None;
    for slot in &hit.slots {
        let start: &str = &slot.start;
        if !start.is_ascii() {
            return Err(NotPlain); // Python slices text by characters: leave it to Python
        }
        let b = start.as_bytes();
        if b.len() < 10 || &start[..10] != date {
            continue; // another day
        }
        match b.get(11..16.min(b.len())).and_then(minute_of) {
            Some(m) if m >= lo && m < hi => {}
            _ => continue, // another bucket's window (or not a time)
        }
        let j = match at {
            Some(j) => j,
            None => {
                let j = match index.get(&venue_id) {
                    Some(&j) => j,
                    None => {
                        let city = match hit.city.as_deref() {
                            Some(u) if !u.is_empty() => u.to_owned(),
                            _ => text(&hit.code),
                        };
                        page.venues.push(Venue {
                            id: venue_id.clone(),
                            name: text(&hit.name),
                            time_zone: text(&hit.time_zone),
                            neighborhood: text(&hit.neighborhood),
                            slug: text(&hit.slug),
                            city,
                            times: Vec::new(),
                        });
                        index.insert(venue_id.clone(), page.venues.len() - 1);
                        page.venues.len() - 1
                    }
                };
                at = Some(j);
                j
            }
        };
        let actual = if b.len() == 19 && b[10] == b' ' {
            start.to_owned()
        } else {
            format!("{date} {}:00", &start[11..16])
        };
        let (seating, token) = (slot.kind.as_deref().unwrap_or(""), slot.token.as_deref().unwrap_or(""));
        page.venues[j].add(actual, seating, slot.size.0, slot.size.1, token);
    }
    page.venue_ids.push(venue_id);
    Ok(())
}

// ------------------------------------------------------------------ JSON rows, as orjson writes them

fn push_json_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &c) in bytes.iter().enumerate() {
        let esc: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if esc.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[(c >> 4) as usize]);
            out.push(HEX[(c & 15) as usize]);
        } else {
            out.extend_from_slice(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

fn row(actual: &str, e: &Entry) -> Vec<u8> {
    let mut out = Vec::with_capacity(48 + actual.len() + e.token.len());
    out.push(b'[');
    push_json_str(&mut out, actual);
    out.extend_from_slice(b",[");
    for (i, s) in e.seating.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_json_str(&mut out, s);
    }
    out.extend_from_slice(b"],");
    out.extend_from_slice(e.pmin.to_string().as_bytes());
    out.push(b',');
    out.extend_from_slice(e.pmax.to_string().as_bytes());
    out.push(b',');
    push_json_str(&mut out, &e.token);
    out.push(b']');
    out
}

// ------------------------------------------------------------------ the Python surface

/// One search page, read: how many venues it held, the total it announced, every venue id on
/// it, and the venues with a start in the bucket window (taken by a `Collector`).
#[pyclass(module = "drops_native")]
struct Page {
    #[pyo3(get)]
    hits: usize,
    #[pyo3(get)]
    total: Option<i64>,
    venue_ids: Vec<String>,
    venues: Vec<Venue>,
}

#[pymethods]
impl Page {
    /// The id of every venue on the page, in page order.
    fn venue_ids<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, &self.venue_ids)
    }
}

/// A search page read for the bucket `date` and the start minutes `[lo, hi)`, or `None` when
/// the page is not of the plain shape (then the Python reading decides).
#[pyfunction]
fn read_search_page(body: &[u8], date: &str, lo: u32, hi: u32) -> Option<Page> {
    read_page(body, date, lo, hi).ok()
}

/// The venues of one fetch's pages, merged by venue id (the first page's venue details kept).
#[pyclass(module = "drops_native")]
struct Collector {
    index: HashMap<String, usize>,
    venues: Vec<Venue>,
}

type ExportedSlot = (String, Vec<String>, i64, i64, String);
type ExportedVenue = (String, String, String, String, String, String, Vec<ExportedSlot>);
type Columns<'py> = (Bound<'py, PyList>, Bound<'py, PyList>, Bound<'py, PyList>, Bound<'py, PyList>);

#[pymethods]
impl Collector {
    #[new]
    fn new() -> Self {
        Collector { index: HashMap::new(), venues: Vec::new() }
    }

    fn __len__(&self) -> usize {
        self.venues.len()
    }

    /// Take a page's venues (the page keeps its counts and ids, not its venues).
    fn take(&mut self, mut page: PyRefMut<'_, Page>) {
        for v in std::mem::take(&mut page.venues) {
            match self.index.get(&v.id) {
                Some(&j) => self.venues[j].absorb(v),
                None => {
                    self.index.insert(v.id.clone(), self.venues.len());
                    self.venues.push(v);
                }
            }
        }
    }

    /// Every venue and its merged slots, in the order they were first taken, to continue in
    /// Python: `(venue_id, name, time_zone, neighborhood, slug, city, [(actual, seating,
    /// party_min, party_max, token), ...])`.
    fn export(&self) -> Vec<ExportedVenue> {
        self.venues
            .iter()
            .map(|v| {
                let times = v
                    .times
                    .iter()
                    .map(|(t, e)| (t.clone(), e.seating.clone(), e.pmin, e.pmax, e.token.clone()))
                    .collect();
                let (id, name, tz, hood) = (v.id.clone(), v.name.clone(), v.time_zone.clone(), v.neighborhood.clone());
                (id, name, tz, hood, v.slug.clone(), v.city.clone(), times)
            })
            .collect()
    }

    /// The slots as record columns, sorted by venue id and start time: `(venues, venue_of,
    /// ids, rows)`, as `SlotTable` holds them; slot ids are the first 8 bytes of BLAKE2b of
    /// `provider␟venue_id␟actual_time` (`schemas/ids.py`).
    fn table<'py>(&mut self, py: Python<'py>, provider: &str) -> PyResult<Columns<'py>> {
        let mut order: Vec<usize> = (0..self.venues.len()).collect();
        order.sort_by(|&a, &b| self.venues[a].id.cmp(&self.venues[b].id));
        let (venues, venue_of, ids, rows) =
            (PyList::empty(py), PyList::empty(py), PyList::empty(py), PyList::empty(py));
        let mut n = 0usize;
        for j in order {
            let v = &mut self.venues[j];
            if v.times.is_empty() {
                continue;
            }
            let info = [&v.id, &v.name, &v.time_zone, &v.neighborhood, &v.slug, &v.city];
            venues.append(PyTuple::new(py, info)?)?;
            let mut head = Blake2bVar::new(8).expect("8 is a BLAKE2b digest size");
            head.update(provider.as_bytes());
            head.update(b"\x1f");
            head.update(v.id.as_bytes());
            head.update(b"\x1f");
            v.times.sort_by(|a, b| a.0.cmp(&b.0));
            for (actual, e) in v.times.iter_mut() {
                if e.seating.len() > 1 {
                    e.seating.sort();
                }
                let mut h = head.clone();
                h.update(actual.as_bytes());
                let mut digest = [0u8; 8];
                h.finalize_variable(&mut digest).expect("an 8-byte digest");
                venue_of.append(n)?;
                ids.append(u64::from_be_bytes(digest))?;
                rows.append(PyBytes::new(py, &row(actual, e)))?;
            }
            n += 1;
        }
        Ok((venues, venue_of, ids, rows))
    }
}

#[pymodule]
fn drops_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Page>()?;
    m.add_class::<Collector>()?;
    m.add_function(wrap_pyfunction!(read_search_page, m)?)?;
    Ok(())
}

