//! The metric history: an embedded time-series store. Each series is kept at three
//! resolutions (tiers), like an RRD: every scrape (10 s) for a day, 5-minute means for
//! a month, hourly means for a year (all configurable). Points are Gorilla-compressed
//! in chunks (delta-of-delta times, XOR'd values: [`codec`](super::codec), which
//! leaves out what the chunk's row already says), and the chunks are rows of a SQLite
//! file: durability, atomic writes and range reads from SQLite (over 500 lines: the
//! store and its tests are one unit). Chunks written before codec 1 (the `tsz`
//! crate's format, with its 64-bit header) are still read. Bounded by age per tier
//! and by a series count; open chunks are written back every checkpoint, so a
//! restart loses at most one checkpoint interval.
//!
//! Values keep 12 bits of mantissa (a relative error below 0.025 %): monitoring
//! needs no more, and the zeroed low bits are what makes XOR compression small.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};
use tsz::decode::Error as DecodeError;
use tsz::stream::BufferedReader;
use tsz::{Decode, StdDecoder};

use super::codec;

/// One resolution of the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tier {
    /// Seconds per point (0: every point as ingested).
    pub step: u64,
    /// Seconds of points per stored chunk.
    pub chunk: u64,
    /// Seconds kept.
    pub keep: u64,
}

/// 10 s (as scraped) for a day, 5 min for 30 days, 1 h for a year.
pub const DEFAULT_TIERS: [Tier; 3] = [
    Tier {
        step: 0,
        chunk: 1800,
        keep: 86_400,
    },
    Tier {
        step: 300,
        chunk: 86_400,
        keep: 30 * 86_400,
    },
    Tier {
        step: 3600,
        chunk: 7 * 86_400,
        keep: 365 * 86_400,
    },
];

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum TsdbError {
    #[error("metric store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("metric store: chunk of series {0} is corrupt")]
    Corrupt(i64),
    #[error("metric store: chunk of series {0} has unknown codec {1}")]
    Codec(i64, i64),
}

/// A series' name: its metric and the host, VM or controller it is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub metric: String,
    pub target: String,
}

/// A series as a query finds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub key: Key,
    pub tenant: String,
    /// (seconds, value), oldest first.
    pub points: Vec<(u64, f64)>,
}

/// Points not yet in a sealed chunk.
#[derive(Debug, Default)]
struct Open {
    window: u64,
    points: Vec<(u32, f64)>,
    dirty: bool,
}

#[derive(Debug)]
struct SeriesState {
    id: i64,
    key: Key,
    tenant: String,
    last: u64,
    open: Vec<Open>,
    /// The bucket being averaged for each coarser tier: (start, sum, n).
    buckets: Vec<(u64, f64, u32)>,
}

struct State {
    series: Vec<SeriesState>,
    index: HashMap<Key, usize>,
    dropped: u64,
}

/// The store; cheap to share behind an `Arc`.
pub struct Tsdb {
    tiers: Vec<Tier>,
    max_series: usize,
    conn: Mutex<Connection>,
    state: Mutex<State>,
}

/// A series a query reads: id, key, owner, its open chunk's window and the open
/// points in range.
type Wanted = (i64, Key, String, u64, Vec<(u64, f64)>);

/// The codec chunks are written with: [`codec`](super::codec)'s format. Codec 0 is
/// the `tsz` crate's stream, read but no longer written.
const CODEC: i64 = 1;

/// A sealed or checkpointed chunk to write.
struct Write {
    series: i64,
    tier: usize,
    window: u64,
    first: u64,
    last: u64,
    n: usize,
    data: Box<[u8]>,
}

/// Keeps the top 12 bits of the mantissa.
pub fn quantize(v: f64) -> f64 {
    if !v.is_finite() {
        return v;
    }
    f64::from_bits((v.to_bits() + (1 << 39)) & !((1u64 << 40) - 1))
}

fn encode(window: u64, points: &[(u32, f64)]) -> Write {
    Write {
        series: 0,
        tier: 0,
        window,
        first: window + points.first().map_or(0, |p| p.0 as u64),
        last: window + points.last().map_or(0, |p| p.0 as u64),
        n: points.len(),
        data: codec::encode(points).into_boxed_slice(),
    }
}

/// A stored chunk as read: (codec, window, points, bytes).
type Row = (i64, u64, usize, Vec<u8>);

fn decode(series: i64, row: Row, out: &mut Vec<(u64, f64)>) -> Result<(), TsdbError> {
    let (c, window, n, data) = row;
    match c {
        CODEC => codec::decode(&data, window, n, out).ok_or(TsdbError::Corrupt(series)),
        0 => {
            let mut d = StdDecoder::new(BufferedReader::new(data.into_boxed_slice()));
            for _ in 0..n {
                match d.next() {
                    Ok(p) => out.push((p.get_time(), p.get_value())),
                    Err(DecodeError::EndOfStream) => break,
                    Err(_) => return Err(TsdbError::Corrupt(series)),
                }
            }
            Ok(())
        }
        other => Err(TsdbError::Codec(series, other)),
    }
}

impl Tsdb {
    /// Opens (or creates) the store at `path` (`:memory:` for none), loading the
    /// open chunks of every series.
    pub fn open(path: &Path, tiers: &[Tier], max_series: usize) -> Result<Tsdb, TsdbError> {
        let conn = Connection::open(path)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;
             CREATE TABLE IF NOT EXISTS series (id INTEGER PRIMARY KEY, metric TEXT NOT NULL,
                 target TEXT NOT NULL, tenant TEXT NOT NULL, UNIQUE(metric, target));
             CREATE TABLE IF NOT EXISTS chunks (series INTEGER NOT NULL, tier INTEGER NOT NULL,
                 win INTEGER NOT NULL, first INTEGER NOT NULL, last INTEGER NOT NULL,
                 n INTEGER NOT NULL, data BLOB NOT NULL, codec INTEGER NOT NULL DEFAULT 0,
                 PRIMARY KEY (series, tier, win)) WITHOUT ROWID;",
        )?;
        // A file from before codecs: its chunks are all codec 0.
        let has_codec: bool = conn
            .prepare("SELECT 1 FROM pragma_table_info('chunks') WHERE name = 'codec'")?
            .exists([])?;
        if !has_codec {
            conn.execute_batch("ALTER TABLE chunks ADD COLUMN codec INTEGER NOT NULL DEFAULT 0")?;
        }
        let db = Tsdb {
            tiers: tiers.to_vec(),
            max_series,
            conn: Mutex::new(conn),
            state: Mutex::new(State {
                series: vec![],
                index: HashMap::new(),
                dropped: 0,
            }),
        };
        db.load()?;
        Ok(db)
    }

    fn load(&self) -> Result<(), TsdbError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut q = conn.prepare("SELECT id, metric, target, tenant FROM series ORDER BY id")?;
        let rows = q.query_map([], |r| {
            Ok((r.get::<_, i64>(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?;
        let mut latest = conn.prepare(
            "SELECT codec, win, n, data FROM chunks WHERE series = ?1 AND tier = ?2
             ORDER BY win DESC LIMIT 1",
        )?;
        for row in rows {
            let (id, metric, target, tenant): (i64, String, String, String) = row?;
            let key = Key { metric, target };
            let mut s = self.fresh(id, key.clone(), tenant);
            for (i, _) in self.tiers.iter().enumerate() {
                let last: Option<Row> = latest
                    .query_row(params![id, i as i64], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                    })
                    .optional()?;
                if let Some(row) = last {
                    let win = row.1;
                    let mut pts = vec![];
                    decode(id, row, &mut pts)?;
                    s.last = s.last.max(pts.last().map_or(0, |p| p.0));
                    s.open[i] = Open {
                        window: win,
                        points: pts
                            .into_iter()
                            .map(|(t, v)| ((t - win) as u32, v))
                            .collect(),
                        dirty: false,
                    };
                }
            }
            let n = st.series.len();
            st.index.insert(key, n);
            st.series.push(s);
        }
        Ok(())
    }

    fn fresh(&self, id: i64, key: Key, tenant: String) -> SeriesState {
        SeriesState {
            id,
            key,
            tenant,
            last: 0,
            open: self.tiers.iter().map(|_| Open::default()).collect(),
            buckets: vec![(0, 0.0, 0); self.tiers.len()],
        }
    }

    /// Stores one point per series at time `t` (seconds): each sample is (key,
    /// tenant, value). A point not after its series' last one is ignored. Answers
    /// how many were stored.
    pub fn ingest(&self, t: u64, samples: &[(Key, &str, f64)]) -> Result<usize, TsdbError> {
        let mut writes = vec![];
        let mut new_series = vec![];
        let mut stored = 0;
        {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            for (key, tenant, v) in samples {
                let i = match st.index.get(key) {
                    Some(&i) => i,
                    None => {
                        if st.series.len() >= self.max_series {
                            st.dropped += 1;
                            continue;
                        }
                        let i = st.series.len();
                        // The id is assigned when the row is written (below).
                        st.series
                            .push(self.fresh(-1, key.clone(), tenant.to_string()));
                        st.index.insert(key.clone(), i);
                        new_series.push(i);
                        i
                    }
                };
                let s = &mut st.series[i];
                if t <= s.last && s.last != 0 {
                    continue;
                }
                s.last = t;
                stored += 1;
                self.push(s, i, 0, t, quantize(*v), &mut writes);
                for tier in 1..self.tiers.len() {
                    let step = self.tiers[tier].step.max(1);
                    let b = t - t % step;
                    let (start, sum, n) = s.buckets[tier];
                    if n > 0 && start != b {
                        let mean = quantize(sum / n as f64);
                        self.push(s, i, tier, start, mean, &mut writes);
                        s.buckets[tier] = (b, 0.0, 0);
                    }
                    let e = &mut s.buckets[tier];
                    if e.2 == 0 {
                        e.0 = b;
                    }
                    e.1 += v;
                    e.2 += 1;
                }
            }
            if !new_series.is_empty() {
                let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
                let tx = conn.unchecked_transaction()?;
                {
                    let mut ins = tx.prepare_cached(
                        "INSERT INTO series (metric, target, tenant) VALUES (?1, ?2, ?3)
                         ON CONFLICT(metric, target) DO UPDATE SET tenant = excluded.tenant
                         RETURNING id",
                    )?;
                    for &i in &new_series {
                        let s = &st.series[i];
                        let id: i64 = ins
                            .query_row(params![s.key.metric, s.key.target, s.tenant], |r| {
                                r.get(0)
                            })?;
                        st.series[i].id = id;
                    }
                }
                tx.commit()?;
            }
            for w in &mut writes {
                w.series = st.series[w.series as usize].id;
            }
        }
        self.write(&writes)?;
        Ok(stored)
    }

    /// Appends a point to tier `tier`'s open chunk of `s` (series number `idx`),
    /// sealing the chunk when the point is past its window. `writes` names the series
    /// by its number until ids are known.
    fn push(
        &self,
        s: &mut SeriesState,
        idx: usize,
        tier: usize,
        t: u64,
        v: f64,
        writes: &mut Vec<Write>,
    ) {
        let chunk = self.tiers[tier].chunk.max(1);
        let window = t - t % chunk;
        let o = &mut s.open[tier];
        if o.window != window {
            if !o.points.is_empty() {
                let mut w = encode(o.window, &o.points);
                w.tier = tier;
                w.series = idx as i64; // the id once known: see `ingest`
                writes.push(w);
            }
            o.points.clear();
            o.window = window;
        }
        if o.points.last().is_some_and(|p| window + p.0 as u64 >= t) {
            return;
        }
        o.points.push(((t - window) as u32, v));
        o.dirty = true;
    }

    fn write(&self, writes: &[Write]) -> Result<(), TsdbError> {
        if writes.is_empty() {
            return Ok(());
        }
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn.unchecked_transaction()?;
        {
            let mut put = tx.prepare_cached(
                "INSERT OR REPLACE INTO chunks (series, tier, win, first, last, n, data, codec)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            for w in writes {
                put.execute(params![
                    w.series,
                    w.tier as i64,
                    w.window as i64,
                    w.first as i64,
                    w.last as i64,
                    w.n as i64,
                    &w.data[..],
                    CODEC
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Writes every open chunk that changed since the last checkpoint.
    pub fn checkpoint(&self) -> Result<usize, TsdbError> {
        let mut writes = vec![];
        {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            for s in st.series.iter_mut() {
                for (tier, o) in s.open.iter_mut().enumerate() {
                    if o.dirty && !o.points.is_empty() && s.id >= 0 {
                        let mut w = encode(o.window, &o.points);
                        w.series = s.id;
                        w.tier = tier;
                        writes.push(w);
                        o.dirty = false;
                    }
                }
            }
        }
        self.write(&writes)?;
        Ok(writes.len())
    }

    /// Drops chunks older than their tier keeps (as of `now`, seconds), and series
    /// left without any chunk.
    pub fn prune(&self, now: u64) -> Result<usize, TsdbError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let mut n = 0;
        for (i, t) in self.tiers.iter().enumerate() {
            n += conn.execute(
                "DELETE FROM chunks WHERE tier = ?1 AND last < ?2",
                params![i as i64, now.saturating_sub(t.keep) as i64],
            )?;
        }
        Ok(n)
    }

    /// Samples refused because the series limit was reached.
    pub fn dropped(&self) -> u64 {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).dropped
    }

    /// Series in the store.
    pub fn series_count(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .series
            .len()
    }

    /// Bytes the SQLite file holds (pages in use).
    pub fn bytes(&self) -> Result<u64, TsdbError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
        let free: i64 = conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
        let size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        Ok(((pages - free) * size) as u64)
    }

    /// Bytes of compressed chunk data of tier `tier` and the points they hold.
    pub fn chunk_bytes(&self, tier: usize) -> Result<(u64, u64), TsdbError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        Ok(conn.query_row(
            "SELECT COALESCE(SUM(LENGTH(data)), 0), COALESCE(SUM(n), 0) FROM chunks WHERE tier = ?1",
            params![tier as i64],
            |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
        )?)
    }

    /// The metrics the store holds, sorted.
    pub fn metrics(&self) -> Vec<String> {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut m: Vec<String> = st.series.iter().map(|s| s.key.metric.clone()).collect();
        m.sort();
        m.dedup();
        m
    }

    /// Seconds per point of the finest tier that still holds time `start` (as of
    /// `now`), and that tier.
    pub fn tier_for(&self, start: u64, now: u64) -> (usize, u64) {
        for (i, t) in self.tiers.iter().enumerate() {
            if start + t.keep >= now {
                return (i, t.step);
            }
        }
        let i = self.tiers.len() - 1;
        (i, self.tiers[i].step)
    }

    /// The points of every series of `metric` (only `target`'s when given) that
    /// `visible` accepts (by tenant), in `[start, end]` seconds, from the finest
    /// tier that holds `start` as of `now`.
    pub fn query(
        &self,
        metric: &str,
        target: Option<&str>,
        start: u64,
        end: u64,
        now: u64,
        visible: &dyn Fn(&str) -> bool,
    ) -> Result<(usize, Vec<Found>), TsdbError> {
        let (tier, _) = self.tier_for(start, now);
        // Copy what is in memory, then read SQLite without holding the state.
        let wanted: Vec<Wanted> = {
            let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let pick = |s: &SeriesState| {
                let o = &s.open[tier];
                let pts = o
                    .points
                    .iter()
                    .map(|&(off, v)| (o.window + off as u64, v))
                    .filter(|p| p.0 >= start && p.0 <= end)
                    .collect();
                (s.id, s.key.clone(), s.tenant.clone(), o.window, pts)
            };
            match target {
                Some(t) => st
                    .index
                    .get(&Key {
                        metric: metric.into(),
                        target: t.into(),
                    })
                    .map(|&i| &st.series[i])
                    .filter(|s| visible(&s.tenant))
                    .map(pick)
                    .into_iter()
                    .collect(),
                None => st
                    .series
                    .iter()
                    .filter(|s| s.key.metric == metric && visible(&s.tenant))
                    .map(pick)
                    .collect(),
            }
        };
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let mut q = conn.prepare_cached(
            "SELECT codec, win, n, data FROM chunks WHERE series = ?1 AND tier = ?2
             AND last >= ?3 AND first <= ?4 AND win != ?5 ORDER BY win",
        )?;
        let mut out = Vec::with_capacity(wanted.len());
        for (id, key, tenant, open_window, open_points) in wanted {
            let mut points = vec![];
            if id >= 0 {
                let rows = q.query_map(
                    params![
                        id,
                        tier as i64,
                        start as i64,
                        end as i64,
                        open_window as i64
                    ],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )?;
                for r in rows {
                    decode(id, r?, &mut points)?;
                }
            }
            points.retain(|p| p.0 >= start && p.0 <= end);
            points.extend(open_points);
            out.push(Found {
                key,
                tenant,
                points,
            });
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok((tier, out))
    }
}

/// Means of `points` per `step` seconds, each at its bucket's start.
pub fn resample(points: &[(u64, f64)], step: u64) -> Vec<(u64, f64)> {
    let step = step.max(1);
    let mut out: Vec<(u64, f64)> = vec![];
    let mut acc = (0u64, 0.0, 0u32);
    for &(t, v) in points {
        let b = t - t % step;
        if acc.2 > 0 && acc.0 != b {
            out.push((acc.0, acc.1 / acc.2 as f64));
            acc = (b, 0.0, 0);
        }
        if acc.2 == 0 {
            acc.0 = b;
        }
        acc.1 += v;
        acc.2 += 1;
    }
    if acc.2 > 0 {
        out.push((acc.0, acc.1 / acc.2 as f64));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(m: &str, t: &str) -> Key {
        Key {
            metric: m.into(),
            target: t.into(),
        }
    }

    #[test]
    fn points_survive_a_reopen_and_coarser_tiers_hold_means() {
        let d = nova_tests::TempDir::new();
        let path = d.join("m.db");
        let t0 = 1_700_000_000 - 1_700_000_000 % 86_400;
        {
            let db = Tsdb::open(&path, &DEFAULT_TIERS, 100).unwrap();
            for i in 0..400u64 {
                db.ingest(t0 + i * 10, &[(key("vm.cpu", "a"), "t1", i as f64)])
                    .unwrap();
            }
            db.checkpoint().unwrap();
        }
        let db = Tsdb::open(&path, &DEFAULT_TIERS, 100).unwrap();
        let now = t0 + 4000;
        let all = |_: &str| true;
        let (tier, f) = db.query("vm.cpu", None, t0, now, now, &all).unwrap();
        assert_eq!(tier, 0);
        assert_eq!(f.len(), 1);
        assert_eq!(
            f[0].points.len(),
            400,
            "every raw point, across a sealed chunk"
        );
        assert_eq!(f[0].points[399], (t0 + 3990, 399.0));
        // The 5-minute tier: each closed bucket is the mean of its 30 points.
        let (_, f) = db
            .query("vm.cpu", Some("a"), t0, now, t0 + 2 * 86_400, &all)
            .unwrap();
        assert_eq!(f[0].points[0], (t0, 14.5));
        assert_eq!(f[0].points[1], (t0 + 300, 44.5));
        // Tenants see only their own series.
        let (_, f) = db
            .query("vm.cpu", None, t0, now, now, &|t| t == "t2")
            .unwrap();
        assert!(f.is_empty());
    }

    #[test]
    fn chunks_of_the_older_tsz_format_are_still_read_beside_new_ones() {
        use tsz::stream::BufferedWriter;
        use tsz::{DataPoint, Encode, StdEncoder};
        let db = Tsdb::open(Path::new(":memory:"), &DEFAULT_TIERS, 10).unwrap();
        let t0: u64 = 1_800_000_000; // a multiple of the 1800 s window
        db.ingest(t0 + 1800, &[(key("m", "a"), "t", 5.0)]).unwrap();
        db.checkpoint().unwrap();
        // The window before, as the previous version wrote it (codec 0).
        let mut e = StdEncoder::new(t0, BufferedWriter::new());
        for i in 0..3u64 {
            e.encode(DataPoint::new(t0 + 10 * i, i as f64));
        }
        let data = e.close();
        db.conn
            .lock()
            .unwrap()
            .execute(
                "INSERT INTO chunks (series, tier, win, first, last, n, data, codec)
                 SELECT id, 0, ?1, ?1, ?2, 3, ?3, 0 FROM series",
                params![t0 as i64, (t0 + 20) as i64, &data[..]],
            )
            .unwrap();
        let now = t0 + 1800;
        let (_, f) = db.query("m", None, t0, now, now, &|_| true).unwrap();
        assert_eq!(
            f[0].points,
            vec![(t0, 0.0), (t0 + 10, 1.0), (t0 + 20, 2.0), (t0 + 1800, 5.0)]
        );
        // A codec nobody knows is an error, not a guess.
        db.conn
            .lock()
            .unwrap()
            .execute("UPDATE chunks SET codec = 9 WHERE win = ?1", [t0 as i64])
            .unwrap();
        assert!(matches!(
            db.query("m", None, t0, now, now, &|_| true),
            Err(TsdbError::Codec(_, 9))
        ));
    }

    #[test]
    fn the_series_limit_bounds_the_store_and_old_chunks_are_pruned() {
        let db = Tsdb::open(Path::new(":memory:"), &DEFAULT_TIERS, 2).unwrap();
        let s: Vec<_> = (0..3)
            .map(|i| (key("m", &i.to_string()), "t", 1.0))
            .collect();
        for i in 0..200 {
            db.ingest(10 * i + 1, &s).unwrap();
        }
        assert_eq!(db.series_count(), 2);
        assert_eq!(db.dropped(), 200);
        assert!(db.chunk_bytes(0).unwrap().1 > 0);
        db.prune(10 * 86_400).unwrap();
        assert_eq!(db.chunk_bytes(0).unwrap(), (0, 0));
    }

    #[test]
    fn quantized_values_stay_within_a_fraction_of_a_per_mille() {
        for v in [0.123456, 1e9 + 7.0, 3.3, 42.0, -17.25] {
            let q = quantize(v);
            assert!(((q - v) / v).abs() < 2.5e-4, "{v} -> {q}");
        }
        assert_eq!(quantize(0.0), 0.0);
    }

    #[test]
    fn resampling_averages_each_step() {
        let p = [(0, 1.0), (10, 3.0), (60, 5.0)];
        assert_eq!(resample(&p, 60), vec![(0, 2.0), (60, 5.0)]);
    }
}
