//! The audit log against real sinks on loopback: outages, the spool's
//! bound, restarts and file rotation. Every wait is bounded.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use tollgate_audit::{
    AuditConfig, AuditLog, FileSinkConfig, OtlpSinkConfig, SinkConfig, Tamper, WebhookSinkConfig,
};

fn webhook(name: &str, url: String, batch_size: usize) -> SinkConfig {
    SinkConfig::Webhook(WebhookSinkConfig {
        name: Some(name.into()),
        url,
        http: quick_http(batch_size),
    })
}

fn config(spool: &Path, sinks: Vec<SinkConfig>) -> AuditConfig {
    let mut config = AuditConfig::new("gw-test", spool);
    config.sinks = sinks;
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_outage_under_load_loses_nothing_and_keeps_order() {
    let spool = tempfile::tempdir().unwrap();
    let collector = Collector::start(true).await;
    let mut sink = webhook("siem", format!("{}/ingest", collector.base), 200);
    if let SinkConfig::Webhook(w) = &mut sink {
        w.http
            .headers
            .insert("Authorization".into(), "Splunk test-token".into());
    }
    let log = AuditLog::start(config(spool.path(), vec![sink])).unwrap();

    // 4 tasks x 500 records over about a second, while the sink answers 503.
    let started = Instant::now();
    let mut writers = Vec::new();
    for task in 0..4u64 {
        let log = log.clone();
        writers.push(tokio::spawn(async move {
            let mut calls = Vec::with_capacity(500);
            for n in 0..500u64 {
                let call = Instant::now();
                log.record(llm_record(task, n));
                calls.push(call.elapsed());
                if n % 10 == 9 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            calls
        }));
    }
    let mut calls = Vec::new();
    for writer in writers {
        calls.extend(writer.await.unwrap());
    }
    calls.sort();
    let (p50, p99) = (calls[calls.len() / 2], calls[calls.len() * 99 / 100]);
    let written_in = started.elapsed();
    tokio::time::sleep(Duration::from_millis(1500).saturating_sub(written_in)).await;
    let during = log.stats();
    assert_eq!(during.sinks[0].delivered, 0);
    assert!(during.sinks[0].consecutive_failures > 0);
    assert!(
        during.sinks[0]
            .last_error
            .as_deref()
            .unwrap()
            .contains("503")
    );
    let refused = collector.refused.load(std::sync::atomic::Ordering::SeqCst);

    let back = Instant::now();
    collector.set_down(false);
    assert!(
        wait_until(Duration::from_secs(20), || dedupe_by_seq(
            &collector.lines()
        )
        .len()
            >= 2000)
        .await,
        "the sink got {} records",
        dedupe_by_seq(&collector.lines()).len()
    );
    let caught_up_in = back.elapsed();
    let stats = log.clone().shutdown(Duration::from_secs(5)).await;

    let received = collector.lines();
    let unique = dedupe_by_seq(&received);
    let seqs: Vec<u64> = unique.iter().map(|l| seq_of(l)).collect();
    assert_eq!(
        seqs,
        (1..=2000).collect::<Vec<_>>(),
        "every record once, in order"
    );
    let (report, problems) = check(&unique);
    assert_eq!(problems, Vec::<Tamper>::new());
    assert_eq!(report.records, 2000);
    assert!(report.chains["gw-test"].from_genesis);
    // Each task's records appear in the order it recorded them.
    let mut last_n = [None::<u64>; 4];
    for line in &unique {
        let v: Value = serde_json::from_str(line).unwrap();
        let (task, n) = (
            v["task"].as_u64().unwrap() as usize,
            v["n"].as_u64().unwrap(),
        );
        assert!(last_n[task].is_none_or(|last| n == last + 1));
        last_n[task] = Some(n);
    }
    assert_eq!(stats.records_lost, 0);
    assert_eq!(stats.records_spooled, 2000);
    let sink = &stats.sinks[0];
    assert_eq!((sink.delivered, sink.lost, sink.backlog), (2000, 0, 0));
    assert_eq!(sink.acked_seq, 2000);
    let requests = collector.requests();
    assert!(requests.iter().all(|r| r.path == "/ingest"
        && r.content_type == "application/x-ndjson"
        && r.authorization == "Splunk test-token"));
    println!(
        "outage: 2000 records from 4 tasks in {written_in:?} (record() p50 {p50:?}, p99 {p99:?}); \
         {refused} requests refused with 503 while down; caught up {caught_up_in:?} after the sink came back; \
         {} lines received ({} resent), {} requests",
        received.len(),
        received.len() - unique.len(),
        requests.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_beyond_the_spool_bound_are_counted_and_show_as_a_gap() {
    let spool = tempfile::tempdir().unwrap();
    let collector = Collector::start(true).await;
    let mut config = config(
        spool.path(),
        vec![webhook("siem", collector.base.clone(), 50)],
    );
    config.spool_max_bytes = 16 * 1024;
    config.segment_max_bytes = Some(2 * 1024);
    let log = AuditLog::start(config).unwrap();

    const N: u64 = 400;
    // The first records reach the sink (and are refused) before the bound
    // bites: that batch stays in flight, so the loss is a gap after it.
    for n in 0..10 {
        log.record(llm_record(0, n));
    }
    assert!(
        wait_until(Duration::from_secs(10), || collector
            .refused
            .load(std::sync::atomic::Ordering::SeqCst)
            > 0)
        .await
    );
    for n in 10..N {
        log.record(llm_record(0, n));
    }
    assert!(wait_until(Duration::from_secs(10), || log.stats().last_seq == N).await);
    let full = log.stats();
    assert!(full.spool_bytes <= 16 * 1024, "{} bytes", full.spool_bytes);
    let lost_while_down = full.sinks[0].lost;
    assert!(lost_while_down > 0);

    collector.set_down(false);
    assert!(
        wait_until(Duration::from_secs(20), || {
            let sink = &log.stats().sinks[0];
            sink.backlog == 0 && sink.acked_seq == N
        })
        .await,
        "{:?}",
        log.stats()
    );
    let stats = log.clone().shutdown(Duration::from_secs(5)).await;
    let sink = &stats.sinks[0];

    let unique = dedupe_by_seq(&collector.lines());
    let received = unique.len() as u64;
    assert_eq!(sink.lost, N - received, "lost = what the sink never got");
    assert_eq!(sink.lost, lost_while_down, "counted when it happened");
    assert_eq!(sink.delivered, received);
    // The gap is visible in what the sink received.
    let (report, problems) = check(&unique);
    assert_eq!(report.records, received);
    let gaps: Vec<u64> = problems
        .iter()
        .map(|p| match p {
            Tamper::Missing { previous, seq, .. } => seq - previous - 1,
            other => panic!("unexpected {other}"),
        })
        .collect();
    assert_eq!(seq_of(&unique[0]), 1, "the batch in flight was kept");
    assert_eq!(gaps.len(), 1);
    assert_eq!(gaps[0], sink.lost);
    assert_eq!(
        seq_of(unique.last().unwrap()),
        N,
        "the newest records survive"
    );
    let Some(Tamper::Missing { previous, seq, .. }) = problems.first() else {
        panic!("a gap")
    };
    println!(
        "bound: {N} records into a 16 KiB spool (2 KiB segments) with the sink down: \
         {received} delivered (#1..#{previous} in flight before the bound hit, then #{seq}..#{N}), \
         {} lost = the gap verify reports; the spool held {} bytes in {} segments (~{} bytes a record)",
        sink.lost,
        full.spool_bytes,
        full.spool_segments,
        full.spool_bytes / (N - seq + 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_continues_the_chain_and_delivers_the_backlog() {
    let spool = tempfile::tempdir().unwrap();
    // Nothing listens on this port: connection refused.
    let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", unused.local_addr().unwrap());
    drop(unused);

    let first = AuditLog::start(config(spool.path(), vec![webhook("siem", dead, 100)])).unwrap();
    for n in 0..300 {
        first.record(llm_record(1, n));
    }
    let stopped = first.shutdown(Duration::from_millis(300)).await;
    assert_eq!(stopped.records_spooled, 300);
    assert_eq!(stopped.sinks[0].delivered, 0);
    assert_eq!(stopped.sinks[0].backlog, 300);
    assert!(stopped.sinks[0].last_error.is_some());

    let collector = Collector::start(false).await;
    let second = AuditLog::start(config(
        spool.path(),
        vec![webhook("siem", collector.base.clone(), 100)],
    ))
    .unwrap();
    for n in 0..200 {
        second.record(llm_record(2, n));
    }
    assert!(
        wait_until(Duration::from_secs(20), || dedupe_by_seq(
            &collector.lines()
        )
        .len()
            >= 500)
        .await
    );
    let stats = second.shutdown(Duration::from_secs(5)).await;
    let unique = dedupe_by_seq(&collector.lines());
    let (report, problems) = check(&unique);
    assert_eq!(problems, Vec::<Tamper>::new(), "one chain across both runs");
    let chain = &report.chains["gw-test"];
    assert_eq!(
        (chain.first, chain.last, chain.from_genesis),
        (1, 500, true)
    );
    assert_eq!(
        (stats.sinks[0].delivered, stats.sinks[0].lost),
        (500, 0),
        "the backlog of the first run came with the second"
    );
    println!(
        "restart: 300 records spooled with the sink refusing connections, 200 more after the restart: \
         500 delivered as one chain, {} lines sent",
        collector.lines().len()
    );
}

fn read_rotated(base: &Path) -> (Vec<String>, usize) {
    let mut files = Vec::new();
    for n in (1..10_000).rev() {
        let rotated = Path::new(&format!("{}.{n}", base.display())).to_path_buf();
        if rotated.exists() {
            files.push(rotated);
        }
    }
    files.push(base.to_path_buf());
    let lines = files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    (lines, files.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_files_read_oldest_first_verify_as_one_chain() {
    let spool = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let file_sink = |name: &str, max_files| {
        SinkConfig::File(FileSinkConfig {
            name: Some(name.into()),
            path: out.path().join(name).join("audit.log"),
            max_bytes: 4096,
            max_files,
            fsync: false,
            batch_size: 64,
        })
    };
    let log = AuditLog::start(config(
        spool.path(),
        vec![file_sink("all", 1000), file_sink("recent", 3)],
    ))
    .unwrap();
    const N: u64 = 1000;
    for n in 0..N {
        log.record(llm_record(0, n));
    }
    assert!(
        wait_until(Duration::from_secs(20), || log
            .stats()
            .sinks
            .iter()
            .all(|s| s.acked_seq == N))
        .await
    );
    let stats = log.shutdown(Duration::from_secs(5)).await;
    assert!(stats.sinks.iter().all(|s| s.delivered == N && s.lost == 0));

    let (all, files) = read_rotated(&out.path().join("all/audit.log"));
    assert!(files > 10, "{files} files");
    assert_eq!(all.len() as u64, N);
    let (report, problems) = check(&all);
    assert_eq!(problems, Vec::<Tamper>::new());
    assert!(report.chains["gw-test"].from_genesis);
    let biggest = (1..files)
        .map(|n| {
            std::fs::metadata(out.path().join(format!("all/audit.log.{n}")))
                .unwrap()
                .len()
        })
        .max()
        .unwrap();
    assert!(biggest <= 4096);

    // Keeping 3 rotated files: the newest records, still one valid chain.
    let (recent, recent_files) = read_rotated(&out.path().join("recent/audit.log"));
    assert_eq!(recent_files, 4);
    let (report, problems) = check(&recent);
    assert_eq!(problems, Vec::<Tamper>::new());
    let chain = &report.chains["gw-test"];
    assert_eq!(chain.last, N);
    assert!(!chain.from_genesis);
    assert_eq!(chain.last - chain.first + 1, recent.len() as u64);
    println!(
        "rotation: {N} records into {files} files of at most {biggest} bytes; keeping 3 rotated files leaves \
         records #{}..#{N}",
        chain.first
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_export_carries_each_record_as_a_log_record() {
    let spool = tempfile::tempdir().unwrap();
    let collector = Collector::start(false).await;
    let log = AuditLog::start(config(
        spool.path(),
        vec![SinkConfig::Otlp(OtlpSinkConfig {
            name: None,
            endpoint: format!("{}/", collector.base),
            http: quick_http(25),
        })],
    ))
    .unwrap();
    for n in 0..60 {
        log.record(llm_record(0, n));
    }
    assert!(
        wait_until(Duration::from_secs(10), || log.stats().sinks[0].acked_seq
            == 60)
        .await
    );
    log.shutdown(Duration::from_secs(5)).await;

    let mut bodies = Vec::new();
    for request in collector.requests() {
        assert_eq!(request.path, "/v1/logs");
        assert_eq!(request.content_type, "application/json");
        let export: Value = serde_json::from_slice(&request.body).unwrap();
        let resource = &export["resourceLogs"][0];
        assert_eq!(
            resource["resource"]["attributes"][0]["value"]["stringValue"],
            "tollgate"
        );
        let scope = &resource["scopeLogs"][0];
        assert_eq!(scope["scope"]["name"], "tollgate.audit");
        for record in scope["logRecords"].as_array().unwrap() {
            assert!(
                record["timeUnixNano"]
                    .as_str()
                    .unwrap()
                    .parse::<u64>()
                    .unwrap()
                    > 0
            );
            bodies.push(record["body"]["stringValue"].as_str().unwrap().to_string());
        }
    }
    let unique = dedupe_by_seq(&bodies);
    assert_eq!(unique.len(), 60);
    assert_eq!(check(&unique).1, Vec::<Tamper>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_is_counted_and_marked_in_the_chain() {
    let spool = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut config = config(
        spool.path(),
        vec![SinkConfig::File(FileSinkConfig {
            name: None,
            path: out.path().join("audit.log"),
            max_bytes: 1 << 30,
            max_files: 1,
            fsync: false,
            batch_size: 256,
        })],
    );
    config.queue_capacity = 2;
    let log = AuditLog::start(config).unwrap();
    for n in 0..20_000 {
        log.record(llm_record(0, n));
    }
    // Once the writer has drained, one more record carries any pending count.
    tokio::time::sleep(Duration::from_millis(200)).await;
    log.record(llm_record(0, 20_000));
    let last = log.stats().records_recorded;
    assert!(
        wait_until(Duration::from_secs(20), || log.stats().sinks[0].acked_seq
            == last)
        .await
    );
    let stats = log.shutdown(Duration::from_secs(5)).await;

    let lines: Vec<String> = std::fs::read_to_string(out.path().join("audit.log"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let (report, problems) = check(&lines);
    assert_eq!(
        problems,
        Vec::<Tamper>::new(),
        "losses leave no gap in the chain"
    );
    let mut marked = 0;
    let mut kept = 0;
    for line in &lines {
        let v: Value = serde_json::from_str(line).unwrap();
        if v["kind"] == "audit.lost" {
            marked += v["lost"].as_u64().unwrap();
        } else {
            kept += 1;
        }
    }
    assert_eq!(marked, stats.records_lost, "every loss is in a marker");
    assert_eq!(kept + marked, 20_001);
    assert_eq!(report.records, stats.records_spooled);
    println!("queue of 2: 20001 records, {kept} spooled, {marked} lost and marked in the chain");
}

/// A process that dies mid-delivery: its runtime vanishes without a
/// shutdown. The next start resends from the persisted cursor: duplicates
/// are possible, gaps are not.
#[test]
fn a_crash_mid_delivery_resends_but_skips_nothing() {
    let runtime = |threads| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
            .unwrap()
    };
    let server = runtime(1);
    let collector = server.block_on(Collector::start(false));
    let spool = tempfile::tempdir().unwrap();
    let sinks = || vec![webhook("siem", collector.base.clone(), 20)];

    let doomed = runtime(2);
    let log = doomed.block_on(async {
        let log = AuditLog::start(config(spool.path(), sinks())).unwrap();
        for n in 0..500 {
            log.record(llm_record(1, n));
        }
        wait_until(Duration::from_secs(10), || {
            log.stats().sinks[0].delivered >= 40
        })
        .await;
        log
    });
    let acked_at_crash = log.stats().sinks[0].acked_seq;
    doomed.shutdown_background();
    // The spool writer finishes what the queue held once its sender goes.
    drop(log);
    std::thread::sleep(Duration::from_millis(200));

    let after = runtime(2);
    let stats = after.block_on(async {
        let log = AuditLog::start(config(spool.path(), sinks())).unwrap();
        for n in 0..100 {
            log.record(llm_record(2, n));
        }
        assert!(
            wait_until(Duration::from_secs(20), || log.stats().sinks[0].acked_seq
                == 600)
            .await,
            "{:?}",
            log.stats()
        );
        log.shutdown(Duration::from_secs(5)).await
    });
    let received = collector.lines();
    let unique = dedupe_by_seq(&received);
    let seqs: Vec<u64> = unique.iter().map(|l| seq_of(l)).collect();
    assert_eq!(seqs, (1..=600).collect::<Vec<_>>());
    assert_eq!(check(&unique).1, Vec::<Tamper>::new());
    assert_eq!(stats.sinks[0].lost, 0);
    println!(
        "crash: cursor at #{acked_at_crash} when the runtime vanished; after the restart all 600 \
         arrived once deduplicated ({} lines, {} resent)",
        received.len(),
        received.len() - unique.len()
    );
}
