//! The durable, bounded on-disk spool between [`crate::AuditLog::record`]
//! and the sinks.
//!
//! Layout of the spool directory:
//! - segments `{first seq, 20 digits}.jsonl`, one sealed record per line.
//!   Within a segment sequence numbers are consecutive, so a record's seq is
//!   its segment's first seq plus its line index; a gap (a failed write) only
//!   ever falls between segments.
//! - `{sink}.cursor`: the last seq the sink acknowledged, in decimal.
//!
//! The writer never deletes the newest segment: it holds the chain's head,
//! from which a restart continues.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;
use tokio::sync::{mpsc, watch};

const SEGMENT_SUFFIX: &str = ".jsonl";
const CURSOR_SUFFIX: &str = ".cursor";

pub(crate) fn segment_file_name(first_seq: u64) -> String {
    format!("{first_seq:020}{SEGMENT_SUFFIX}")
}

pub(crate) fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

pub(crate) fn cursor_path(dir: &Path, sink: &str) -> PathBuf {
    dir.join(format!("{sink}{CURSOR_SUFFIX}"))
}

pub(crate) fn parse_cursor(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// Sink names become file names in the spool.
pub(crate) fn valid_sink_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// How many of the oldest segments (sizes oldest first, the last being the
/// one written to) must go for `incoming` more bytes to stay within `max`.
/// The last segment is never counted: it holds the chain's head.
pub(crate) fn segments_to_evict(sizes: &[u64], incoming: u64, max: u64) -> usize {
    let mut total: u64 = sizes.iter().sum();
    let mut evicted = 0;
    while evicted + 1 < sizes.len() && total.saturating_add(incoming) > max {
        total -= sizes[evicted];
        evicted += 1;
    }
    evicted
}

/// Records a reader that is at `read_through` (last seq it has, delivered
/// or in flight) can no longer get because everything before `floor` is
/// deleted.
pub(crate) fn unreachable_records(read_through: u64, floor: u64) -> u64 {
    floor.saturating_sub(read_through.saturating_add(1))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SegmentInfo {
    pub first_seq: u64,
    pub bytes: u64,
}

pub(crate) fn list_segments(dir: &Path) -> io::Result<Vec<SegmentInfo>> {
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let Some(first_seq) = entry.file_name().to_str().and_then(parse_segment_file_name) else {
            continue;
        };
        // A segment deleted since read_dir listed it is simply gone.
        let bytes = match entry.metadata() {
            Ok(meta) => meta.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        segments.push(SegmentInfo { first_seq, bytes });
    }
    segments.sort_by_key(|s| s.first_seq);
    Ok(segments)
}

/// A sealed record on its way to the spool.
pub(crate) struct Spooled {
    pub seq: u64,
    /// The record's JSON with its trailing newline.
    pub line: Vec<u8>,
}

/// Counters the writer publishes for readers and stats.
#[derive(Default)]
pub(crate) struct SpoolShared {
    /// First seq still on disk: readers behind it lost what lies between.
    pub floor: AtomicU64,
    pub bytes: AtomicU64,
    pub segments: AtomicU64,
    /// Records written to the spool by this process.
    pub spooled: AtomicU64,
    /// Records that failed to be written (disk errors).
    pub write_failures: AtomicU64,
}

/// A sink's acknowledgement, as the writer sees it when it cleans up and
/// when it warns about what the bound deletes.
pub(crate) struct SinkProgress {
    pub name: String,
    pub acked: Arc<AtomicU64>,
}

/// What a restart finds in the spool.
pub(crate) struct Recovered {
    pub segments: Vec<SegmentInfo>,
    /// The newest record spooled: the chain continues after it.
    pub head: Option<Value>,
}

#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{path}: its last record is not readable JSON: {why}")]
    Corrupt { path: PathBuf, why: String },
}

/// Opens the spool after a stop or crash: a torn last line (the process
/// died mid-write) is cut off, an empty newest segment removed, and the
/// newest whole record returned.
pub(crate) fn recover(dir: &Path) -> Result<Recovered, RecoverError> {
    fs::create_dir_all(dir)?;
    let mut segments = list_segments(dir)?;
    while let Some(newest) = segments.last().copied() {
        let path = dir.join(segment_file_name(newest.first_seq));
        let mut content = Vec::new();
        File::open(&path)?.read_to_end(&mut content)?;
        let whole = content
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        if whole == 0 {
            fs::remove_file(&path)?;
            segments.pop();
            continue;
        }
        if whole < content.len() {
            tracing::warn!(
                segment = %path.display(),
                bytes = content.len() - whole,
                "audit spool: cutting off a torn last line left by a crash"
            );
            OpenOptions::new()
                .write(true)
                .open(&path)?
                .set_len(whole as u64)?;
            if let Some(last) = segments.last_mut() {
                last.bytes = whole as u64;
            }
        }
        let body = &content[..whole - 1];
        let last_line = body
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(body, |i| &body[i + 1..]);
        let head =
            serde_json::from_slice::<Value>(last_line).map_err(|e| RecoverError::Corrupt {
                path: path.clone(),
                why: e.to_string(),
            })?;
        return Ok(Recovered {
            segments,
            head: Some(head),
        });
    }
    Ok(Recovered {
        segments,
        head: None,
    })
}

/// Appends sealed records to segments, keeps the spool within its bound
/// and deletes segments every sink has acknowledged. Runs on a blocking
/// thread of its own.
pub(crate) struct SpoolWriter {
    pub dir: PathBuf,
    /// Oldest first; the last one is the newest.
    pub segments: VecDeque<SegmentInfo>,
    /// The newest segment opened for appending; `None` starts a new one
    /// with the next record (after a restart or a failed write).
    pub active: Option<File>,
    pub max_bytes: u64,
    pub segment_bytes: u64,
    pub fsync: bool,
    pub last_seq: u64,
    pub shared: Arc<SpoolShared>,
    pub sinks: Vec<SinkProgress>,
    pub durable: watch::Sender<u64>,
}

impl SpoolWriter {
    /// Drains `records` until every sender is gone, flushing after each
    /// batch the channel had ready.
    pub fn run(mut self, mut records: mpsc::Receiver<Spooled>) {
        let mut batch = Vec::with_capacity(512);
        while records.blocking_recv_many(&mut batch, 512) > 0 {
            for record in batch.drain(..) {
                self.append(record);
            }
            self.flush();
        }
        self.flush();
    }

    fn append(&mut self, record: Spooled) {
        if let Err(error) = self.try_append(&record) {
            tracing::error!(seq = record.seq, %error, "audit spool: write failed, record lost");
            self.shared.write_failures.fetch_add(1, Ordering::Relaxed);
            // Cut what may have been half written and start a new segment,
            // so seqs within a segment stay consecutive.
            if let (Some(file), Some(segment)) = (self.active.take(), self.segments.back()) {
                let _ = file.set_len(segment.bytes);
            }
        }
    }

    fn try_append(&mut self, record: &Spooled) -> io::Result<()> {
        let len = record.line.len() as u64;
        let full = self
            .segments
            .back()
            .is_some_and(|s| s.bytes > 0 && s.bytes + len > self.segment_bytes);
        if self.active.is_none() || full {
            self.start_segment(record.seq)?;
        }
        self.enforce_bound(len);
        let Some(file) = self.active.as_mut() else {
            return Err(io::Error::other("no open segment"));
        };
        file.write_all(&record.line)?;
        if let Some(segment) = self.segments.back_mut() {
            segment.bytes += len;
        }
        self.last_seq = record.seq;
        self.shared.spooled.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn start_segment(&mut self, first_seq: u64) -> io::Result<()> {
        if let Some(previous) = self.active.take()
            && self.fsync
        {
            previous.sync_data()?;
        }
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(self.dir.join(segment_file_name(first_seq)))?;
        self.active = Some(file);
        self.segments.push_back(SegmentInfo {
            first_seq,
            bytes: 0,
        });
        self.remove_delivered();
        Ok(())
    }

    /// Deletes the oldest segments that every sink has acknowledged.
    fn remove_delivered(&mut self) {
        let acked = self
            .sinks
            .iter()
            .map(|s| s.acked.load(Ordering::Acquire))
            .min()
            .unwrap_or(u64::MAX);
        while self.segments.len() > 1 {
            let last_in_oldest = self.segments[1].first_seq - 1;
            if last_in_oldest > acked {
                break;
            }
            self.remove_oldest();
        }
    }

    /// Over the bound the oldest segments go whether delivered or not;
    /// readers count what they miss (see [`SpoolReader::read`]).
    fn enforce_bound(&mut self, incoming: u64) {
        let sizes: Vec<u64> = self.segments.iter().map(|s| s.bytes).collect();
        for _ in 0..segments_to_evict(&sizes, incoming, self.max_bytes) {
            let (first, last) = (self.segments[0].first_seq, self.segments[1].first_seq - 1);
            for sink in &self.sinks {
                let acked = sink.acked.load(Ordering::Acquire);
                if acked < last {
                    tracing::warn!(
                        sink = %sink.name,
                        records = last - acked.max(first - 1),
                        first,
                        last,
                        bound = self.max_bytes,
                        "audit spool full: deleting records the sink has not delivered; they are lost for it"
                    );
                }
            }
            self.remove_oldest();
        }
    }

    fn remove_oldest(&mut self) {
        let Some(oldest) = self.segments.pop_front() else {
            return;
        };
        // Readers look at the floor before opening a segment: raise it
        // first, then delete.
        if let Some(next) = self.segments.front() {
            self.shared.floor.store(next.first_seq, Ordering::Release);
        }
        let path = self.dir.join(segment_file_name(oldest.first_seq));
        if let Err(error) = fs::remove_file(&path)
            && error.kind() != io::ErrorKind::NotFound
        {
            tracing::error!(segment = %path.display(), %error, "audit spool: cannot delete segment");
        }
    }

    fn flush(&mut self) {
        if self.fsync
            && let Some(file) = self.active.as_ref()
            && let Err(error) = file.sync_data()
        {
            tracing::error!(%error, "audit spool: fsync failed");
        }
        self.shared.bytes.store(
            self.segments.iter().map(|s| s.bytes).sum(),
            Ordering::Relaxed,
        );
        self.shared
            .segments
            .store(self.segments.len() as u64, Ordering::Relaxed);
        self.durable.send_if_modified(|durable| {
            let changed = *durable != self.last_seq;
            *durable = self.last_seq;
            changed
        });
    }
}

/// What one read from the spool produced.
#[derive(Debug, Default)]
pub(crate) struct ReadBatch {
    /// (seq, record JSON without its newline), consecutive unless
    /// `skipped` says otherwise.
    pub records: Vec<(u64, String)>,
    /// Records this reader passed over because they were no longer on disk.
    pub skipped: u64,
}

/// One sink's position in the spool.
pub(crate) struct SpoolReader {
    dir: PathBuf,
    /// The next seq to hand out.
    next_seq: u64,
    open: Option<OpenSegment>,
}

struct OpenSegment {
    first_seq: u64,
    reader: BufReader<File>,
}

impl SpoolReader {
    pub fn new(dir: PathBuf, next_seq: u64) -> Self {
        Self {
            dir,
            next_seq,
            open: None,
        }
    }

    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Up to `max` records from `next_seq` on, none past `durable` (the
    /// last seq the writer has flushed); `floor` is the first seq still on
    /// disk.
    pub fn read(&mut self, floor: u64, durable: u64, max: usize) -> io::Result<ReadBatch> {
        let mut batch = ReadBatch::default();
        if floor > self.next_seq {
            batch.skipped += floor - self.next_seq;
            self.next_seq = floor;
            self.open = None;
        }
        let mut line = Vec::new();
        // Each segment switch costs one; segments deleted under the reader
        // cannot keep it looping.
        let mut switches_left = 64;
        while batch.records.len() < max && self.next_seq <= durable {
            let Some(open) = self.open.as_mut() else {
                switches_left -= 1;
                if switches_left == 0 || !self.open_segment_for_next(&mut batch)? {
                    break;
                }
                continue;
            };
            line.clear();
            let read = open.reader.read_until(b'\n', &mut line)?;
            if read == 0 {
                // The record is flushed but not here: it is in a later segment.
                let done = open.first_seq;
                if !self.open_segment_after(done, &mut batch)? {
                    break;
                }
                continue;
            }
            if line.last() != Some(&b'\n') {
                // Half a line: leave it for a later read.
                open.reader.seek_relative(-(read as i64))?;
                break;
            }
            line.pop();
            batch
                .records
                .push((self.next_seq, String::from_utf8_lossy(&line).into_owned()));
            self.next_seq += 1;
        }
        Ok(batch)
    }

    /// Opens the segment holding `next_seq` and skips to it; jumps (and
    /// counts) past records no longer on disk. False when nothing is there.
    fn open_segment_for_next(&mut self, batch: &mut ReadBatch) -> io::Result<bool> {
        let segments = list_segments(&self.dir)?;
        match segments.iter().rev().find(|s| s.first_seq <= self.next_seq) {
            Some(segment) => {
                let first_seq = segment.first_seq;
                let Some(mut reader) = self.open_file(first_seq)? else {
                    // Deleted since listed: list again.
                    return Ok(true);
                };
                let mut line = Vec::new();
                for _ in first_seq..self.next_seq {
                    line.clear();
                    if reader.read_until(b'\n', &mut line)? == 0 || line.last() != Some(&b'\n') {
                        // next_seq lies past this segment's end (a gap left
                        // by a failed write): move to the following one.
                        return self.open_segment_after(first_seq, batch);
                    }
                }
                self.open = Some(OpenSegment { first_seq, reader });
                Ok(true)
            }
            None => match segments.first() {
                Some(oldest) => {
                    batch.skipped += oldest.first_seq - self.next_seq;
                    self.next_seq = oldest.first_seq;
                    Ok(true)
                }
                None => Ok(false),
            },
        }
    }

    /// Opens the segment after the one starting at `done`.
    fn open_segment_after(&mut self, done: u64, batch: &mut ReadBatch) -> io::Result<bool> {
        self.open = None;
        let segments = list_segments(&self.dir)?;
        let Some(next) = segments.iter().find(|s| s.first_seq > done) else {
            return Ok(false);
        };
        if next.first_seq > self.next_seq {
            batch.skipped += next.first_seq - self.next_seq;
            self.next_seq = next.first_seq;
        }
        Ok(true)
    }

    fn open_file(&self, first_seq: u64) -> io::Result<Option<BufReader<File>>> {
        match File::open(self.dir.join(segment_file_name(first_seq))) {
            Ok(file) => Ok(Some(BufReader::with_capacity(64 << 10, file))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Persists a sink's cursor: write a temporary file, then rename it over
/// the old one, so a crash leaves either the old or the new value.
pub(crate) fn store_cursor(dir: &Path, sink: &str, acked: u64, fsync: bool) -> io::Result<()> {
    let path = cursor_path(dir, sink);
    let temporary = path.with_extension("cursor.tmp");
    let mut file = File::create(&temporary)?;
    file.write_all(format!("{acked}\n").as_bytes())?;
    if fsync {
        file.sync_data()?;
    }
    fs::rename(&temporary, &path)
}

pub(crate) fn load_cursor(dir: &Path, sink: &str) -> io::Result<Option<u64>> {
    match fs::read_to_string(cursor_path(dir, sink)) {
        Ok(text) => Ok(parse_cursor(&text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The last whole line's `seq` in `path`, cutting off a torn last line; for
/// a sink file that must not repeat records after a restart.
pub(crate) fn last_seq_in_file(path: &Path) -> io::Result<Option<u64>> {
    let mut file = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    // Records are far smaller; a longer last line just disables the check.
    let window = len.min(1 << 20);
    file.seek(SeekFrom::Start(len - window))?;
    let mut tail = Vec::with_capacity(window as usize);
    file.read_to_end(&mut tail)?;
    let Some(end) = tail.iter().rposition(|&b| b == b'\n') else {
        if window == len && len > 0 {
            file.set_len(0)?;
        }
        return Ok(None);
    };
    if end + 1 < tail.len() {
        file.set_len(len - window + end as u64 + 1)?;
    }
    let body = &tail[..end];
    let last = body
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(body, |i| &body[i + 1..]);
    Ok(serde_json::from_slice::<Value>(last)
        .ok()
        .and_then(|v| v.get("seq").and_then(Value::as_u64)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_sort_by_seq_and_round_trip() {
        assert_eq!(segment_file_name(42), "00000000000000000042.jsonl");
        assert_eq!(parse_segment_file_name(&segment_file_name(42)), Some(42));
        assert_eq!(
            parse_segment_file_name(&segment_file_name(u64::MAX)),
            Some(u64::MAX)
        );
        assert!(segment_file_name(9) < segment_file_name(10));
        for other in ["42.jsonl", "0000000000000000004x.jsonl", "siem.cursor", "x"] {
            assert_eq!(parse_segment_file_name(other), None, "{other}");
        }
    }

    #[test]
    fn cursors_parse_and_sink_names_are_safe_file_names() {
        assert_eq!(parse_cursor("17\n"), Some(17));
        assert_eq!(parse_cursor(""), None);
        assert_eq!(parse_cursor("-1"), None);
        assert!(valid_sink_name("siem-1.prod_a"));
        for bad in ["", ".hidden", "a/b", "..", "white space"] {
            assert!(!valid_sink_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn cursor_store_and_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load_cursor(dir.path(), "s").unwrap(), None);
        store_cursor(dir.path(), "s", 5, false).unwrap();
        store_cursor(dir.path(), "s", 9, true).unwrap();
        assert_eq!(load_cursor(dir.path(), "s").unwrap(), Some(9));
    }

    #[test]
    fn the_bound_evicts_oldest_first_and_never_the_newest() {
        assert_eq!(segments_to_evict(&[100, 100, 50], 10, 300), 0);
        assert_eq!(segments_to_evict(&[100, 100, 50], 51, 300), 1);
        assert_eq!(segments_to_evict(&[100, 100, 50], 200, 300), 2);
        // The newest stays even when it alone is over the bound.
        assert_eq!(segments_to_evict(&[100, 100, 500], 10, 300), 2);
        assert_eq!(segments_to_evict(&[400], 10, 300), 0);
        assert_eq!(segments_to_evict(&[], 10, 300), 0);
    }

    #[test]
    fn records_behind_the_floor_are_unreachable() {
        assert_eq!(unreachable_records(0, 1), 0);
        assert_eq!(unreachable_records(10, 11), 0);
        assert_eq!(unreachable_records(10, 25), 14);
        assert_eq!(unreachable_records(30, 25), 0);
    }

    fn write_segment(dir: &Path, first: u64, count: u64) {
        let mut text = String::new();
        for seq in first..first + count {
            text.push_str(&format!("{{\"seq\":{seq}}}\n"));
        }
        fs::write(dir.join(segment_file_name(first)), text).unwrap();
    }

    #[test]
    fn a_reader_resumes_mid_segment_and_crosses_segments() {
        let dir = tempfile::tempdir().unwrap();
        write_segment(dir.path(), 1, 5);
        write_segment(dir.path(), 6, 5);
        let mut reader = SpoolReader::new(dir.path().into(), 4);
        let batch = reader.read(1, 10, 4).unwrap();
        let seqs: Vec<u64> = batch.records.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, [4, 5, 6, 7]);
        assert_eq!(batch.records[2].1, "{\"seq\":6}");
        // Nothing past what the writer has flushed.
        let batch = reader.read(1, 8, 10).unwrap();
        assert_eq!(batch.records.len(), 1);
        let batch = reader.read(1, 10, 10).unwrap();
        assert_eq!(batch.records.len(), 2);
        assert_eq!(reader.read(1, 10, 10).unwrap().records.len(), 0);
    }

    #[test]
    fn a_reader_counts_what_the_bound_deleted_and_gaps_between_segments() {
        let dir = tempfile::tempdir().unwrap();
        write_segment(dir.path(), 11, 5);
        write_segment(dir.path(), 20, 2); // 16..=19 never written
        let mut reader = SpoolReader::new(dir.path().into(), 3);
        let batch = reader.read(11, 21, 100).unwrap();
        assert_eq!(batch.skipped, 8 + 4);
        assert_eq!(batch.records.len(), 7);
        assert_eq!(batch.records.last().unwrap().0, 21);
    }

    #[test]
    fn recovery_cuts_a_torn_line_and_finds_the_head() {
        let dir = tempfile::tempdir().unwrap();
        write_segment(dir.path(), 1, 3);
        let path = dir.path().join(segment_file_name(1));
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"{\"seq\":4,\"tr").unwrap();
        // An empty newest segment (crash right after it was created).
        fs::write(dir.path().join(segment_file_name(4)), "").unwrap();
        let recovered = recover(dir.path()).unwrap();
        assert_eq!(recovered.head.unwrap()["seq"], 3);
        assert_eq!(recovered.segments.len(), 1);
        assert_eq!(
            recovered.segments[0].bytes,
            fs::metadata(&path).unwrap().len()
        );
        assert!(
            fs::read_to_string(&path)
                .unwrap()
                .ends_with("{\"seq\":3}\n")
        );
    }

    #[test]
    fn the_last_seq_of_a_sink_file_survives_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        assert_eq!(last_seq_in_file(&path).unwrap(), None);
        fs::write(&path, "{\"seq\":1}\n{\"seq\":2}\n{\"seq\":3,").unwrap();
        assert_eq!(last_seq_in_file(&path).unwrap(), Some(2));
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "{\"seq\":1}\n{\"seq\":2}\n"
        );
    }
}
