//! The tailer, end to end: the real daemon follows files in a temp dir while the tests
//! rotate, truncate, half-write, corrupt and kill.

use crate::common;

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use common::*;

crate::on_postgres!(
    rename_and_create_rotation_reads_every_line_once,
    lines_written_to_the_old_file_after_the_new_one_appears_are_kept,
    copytruncate_keeps_lines_written_just_before_the_copy,
    rotation_while_stopped_finishes_the_old_file_then_reads_the_new_one,
    copytruncate_reads_the_rewritten_file_from_its_start,
    rotation_counts_the_old_files_unfinished_last_line,
    copytruncate_while_stopped_reads_the_new_content_from_its_start,
    truncation_to_a_shorter_file_is_picked_up,
    partial_last_line_waits_for_its_newline,
    partial_last_line_survives_a_kill_9,
    over_long_line_is_one_dead_letter_between_good_lines,
    over_long_line_written_in_pieces_is_one_dead_letter,
    over_long_unfinished_line_is_not_rejected_again_after_a_restart,
    bad_lines_become_dead_letters_with_offset_and_reason,
    kill_9_mid_ingest_neither_loses_nor_repeats_a_line,
    restart_without_new_data_reads_nothing_again,
    tail_start_end_skips_existing_lines,
    tail_start_end_keeps_its_position_across_a_restart,
    mapped_csv_reads_rows_and_rereads_its_header_after_a_restart,
);

const INGESTED: &str = "driftwarden_events_ingested_total";
const DUPLICATE: &str = "driftwarden_events_duplicate_total";
const REJECTED: &str = "driftwarden_records_rejected_total";
const SKIPPED: &str = "driftwarden_records_skipped_total";

/// Wait until exactly `events` events and `dead` dead letters are stored and the
/// tailer of `path` has read to the end of it, then check the counts did not overshoot.
fn settle(app: &TestApp, path: &Path, events: u64, dead: u64) -> Stats {
    app.wait_stats(&format!("{events} events and {dead} dead letters"), |s| {
        s.events >= events && s.dead_letters >= dead
    });
    app.wait_tail_behind(path, 0);
    let s = app.stats();
    assert_eq!(
        (s.events, s.dead_letters),
        (events, dead),
        "stored (events, dead letters); dead letters: {:#?}",
        app.dead_letters(None)
            .into_iter()
            .map(|d| (d.position, d.reason))
            .collect::<Vec<_>>()
    );
    s
}

fn sorted_ids(prefix: &str, count: usize) -> Vec<String> {
    let mut ids: Vec<String> = (0..count).map(|i| format!("{prefix}-{i}")).collect();
    ids.sort();
    ids
}

#[test]
fn rename_and_create_rotation_reads_every_line_once() {
    let b = TestApp::builder().tail("usage.log");
    let log = b.path("usage.log");
    let rotated = b.path("usage.log.1");
    let ts = recent_ms();
    // The gateway's logger keeps its file open across the rename, as loggers do.
    let mut logger = File::create(&log).unwrap();
    logger
        .write_all(native_lines("before", 50, ts).as_bytes())
        .unwrap();
    let app = b.spawn();
    settle(&app, &log, 50, 0);

    std::fs::rename(&log, &rotated).unwrap();
    // Not reopened yet: these land in the renamed file.
    logger
        .write_all(native_lines("late", 5, ts + 1000).as_bytes())
        .unwrap();
    logger.flush().unwrap();
    drop(logger);
    append(&log, &native_lines("after", 30, ts + 2000));

    settle(&app, &log, 85, 0);
    let mut want = [
        sorted_ids("before", 50),
        sorted_ids("late", 5),
        sorted_ids("after", 30),
    ]
    .concat();
    want.sort();
    assert_eq!(app.stored_ids(), want);
    assert!(
        app.metric(&rotations_metric(&log)) >= 1.0,
        "rotation counted"
    );
    assert_eq!(app.metric(&tail_counter(DUPLICATE, &log, "native")), 0.0);
    assert_eq!(app.metric(&tail_counter(INGESTED, &log, "native")), 85.0);
}

#[test]
fn lines_written_to_the_old_file_after_the_new_one_appears_are_kept() {
    let b = TestApp::builder().tail("usage.log");
    let log = b.path("usage.log");
    let ts = recent_ms();
    let mut logger = File::create(&log).unwrap();
    logger
        .write_all(native_lines("before", 20, ts).as_bytes())
        .unwrap();
    let app = b.spawn();
    settle(&app, &log, 20, 0);

    // logrotate `create`: rename, then a new file at once; the gateway reopens later.
    std::fs::rename(&log, app.path("usage.log.1")).unwrap();
    append(&log, &native_lines("new", 10, ts + 2000));
    // Let the tailer see the new file, then keep writing to the renamed one (within
    // the grace), with a line split across two writes.
    std::thread::sleep(std::time::Duration::from_millis(300));
    logger
        .write_all(native_lines("late", 5, ts + 1000).as_bytes())
        .unwrap();
    let last = native_line("late-split", ts + 1500);
    let (head, tail) = last.split_at(last.len() / 2);
    logger.write_all(head.as_bytes()).unwrap();
    logger.flush().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    logger.write_all(format!("{tail}\n").as_bytes()).unwrap();
    drop(logger);

    settle(&app, &log, 36, 0);
    assert_eq!(app.metric(&tail_counter(DUPLICATE, &log, "native")), 0.0);
}

#[test]
fn copytruncate_keeps_lines_written_just_before_the_copy() {
    let b = TestApp::builder().tail("usage.log");
    let log = b.path("usage.log");
    let ts = recent_ms();
    append(&log, &native_lines("seen", 20, ts));
    let app = b.spawn();
    settle(&app, &log, 20, 0);
    // Written and rotated within a poll interval: the tailer reads them from the copy.
    append(&log, &native_lines("unread", 10, ts + 1000));
    std::fs::copy(&log, app.path("usage.log.1")).unwrap();
    File::options()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(0)
        .unwrap();
    append(&log, &native_lines("fresh", 5, ts + 2000));
    settle(&app, &log, 35, 0);
    assert_eq!(app.metric(&tail_counter(DUPLICATE, &log, "native")), 0.0);
}

#[test]
fn rotation_while_stopped_finishes_the_old_file_then_reads_the_new_one() {
    let b = TestApp::builder().tail("usage.log");
    let log = b.path("usage.log");
    let ts = recent_ms();
    append(&log, &native_lines("before", 40, ts));
    let mut app = b.spawn();
    settle(&app, &log, 40, 0);
    app.kill9();

    std::fs::rename(&log, app.path("usage.log.1")).unwrap();
    append(
        &app.path("usage.log.1"),
        &native_lines("late", 7, ts + 1000),
    );
    append(&log, &native_lines("after", 20, ts + 2000));
    app.restart();

    settle(&app, &log, 67, 0);
    assert_eq!(app.metric(&tail_counter(DUPLICATE, &log, "native")), 0.0);
    assert_eq!(
        app.metric(&tail_counter(INGESTED, &log, "native")),
        27.0,
        "after the restart: the 7 late lines of the old file and the 20 of the new"
    );
}

#[test]
fn copytruncate_reads_the_rewritten_file_from_its_start() {
    let b = TestApp::builder().tail("usage.log");
    let log = b.path("usage.log");
    let ts = recent_ms();
    let mut logger = File::options()
        .create(true)
        .append(true)
        .open(&log)
        .unwrap();
    let old = native_lines("old", 10, ts);
    logger.write_all(old.as_bytes()).unwrap();
    let app = b.spawn();
    settle(&app, &log, 10, 0);

    // logrotate's copytruncate: copy aside, truncate in place; the logger (O_APPEND)
    // goes on writing at the new end. Here it writes more than the file held before,
    // all before the tailer's next poll, as a busy gateway does.
    std::fs::copy(&log, app.path("usage.log.1")).unwrap();
    File::options()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(0)
        .unwrap();
    let new = native_lines("copytruncated-new", 40, ts + 1000);
    assert!(new.len() > old.len());
    let mut boundary = 0;
    let starts: Vec<usize> = new
        .split_inclusive('\n')
        .map(|l| {
            let s = boundary;
            boundary += l.len();
            s
        })
        .collect();
    assert!(
        !starts.contains(&old.len()),
        "test setup: the old offset must fall inside a new line"
    );
    logger.write_all(new.as_bytes()).unwrap();

    settle(&app, &log, 50, 0);
    assert!(app.metric(&rotations_metric(&log)) >= 1.0);
    assert_eq!(
        app.metric(&tail_counter(DUPLICATE, &log, "native")),
        0.0,
        "no line read twice"
    );
    assert_eq!(app.metric(&tail_counter(INGESTED, &log, "native")), 50.0);
}

#[test]
fn rotation_counts_the_old_files_unfinished_last_line() {
    let b = TestApp::builder().tail("usage.log");
    let log = b.path("usage.log");
    let ts = recent_ms();
    // The logger died mid-write: the old file ends without a newline.
    let last = native_line("unterminated", ts + 100);
    append(&log, &format!("{}{last}", native_lines("before", 5, ts)));
    let app = b.spawn();
    app.wait_tail_behind(&log, last.len() as u64);
    assert_eq!(app.stats().events, 5);

    std::fs::rename(&log, app.path("usage.log.1")).unwrap();
    append(&log, &native_lines("after", 4, ts + 1000));
    // The old file will never be finished now, so its last line counts as a line.
    settle(&app, &log, 10, 0);
    assert_eq!(
        app.sql_i64("SELECT COUNT(*) FROM events WHERE id = 'unterminated'"),
        1
    );
}

#[test]
fn copytruncate_while_stopped_reads_the_new_content_from_its_start() {
    let b = TestApp::builder().tail("usage.log");
    let log = b.path("usage.log");
    let ts = recent_ms();
    append(&log, &native_lines("old", 10, ts));
    let mut app = b.spawn();
    settle(&app, &log, 10, 0);
    app.terminate();

    std::fs::copy(&log, app.path("usage.log.1")).unwrap();
    File::options()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(0)
        .unwrap();
    // More than the checkpoint's offset: only the leading bytes tell it is new.
    append(&log, &native_lines("copytruncated-new", 40, ts + 1000));
    app.restart();
    settle(&app, &log, 50, 0);
    assert_eq!(app.metric(&tail_counter(DUPLICATE, &log, "native")), 0.0);
    assert_eq!(app.metric(&tail_counter(INGESTED, &log, "native")), 40.0);
}

#[test]
fn truncation_to_a_shorter_file_is_picked_up() {
    let b = TestApp::builder().tail("usage.log");
    let log = b.path("usage.log");
    let ts = recent_ms();
    append(&log, &native_lines("long", 20, ts));
    let app = b.spawn();
    settle(&app, &log, 20, 0);

    File::options()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(0)
        .unwrap();
    append(&log, &native_lines("short", 3, ts + 1000));

    settle(&app, &log, 23, 0);
    assert!(app.metric(&rotations_metric(&log)) >= 1.0);
    let ids = app.stored_ids();
    assert_eq!(ids.iter().filter(|id| id.starts_with("short-")).count(), 3);
}

#[test]
fn partial_last_line_waits_for_its_newline() {
    let b = TestApp::builder().tail("usage.log");
    let log = b.path("usage.log");
    let ts = recent_ms();
    append(&log, &native_lines("whole", 3, ts));
    let app = b.spawn();
    settle(&app, &log, 3, 0);

    let line = native_line("half-written", ts + 500);
    let (head, tail) = line.split_at(line.len() / 2);
    append(&log, head);
    // The tailer has seen the half line once it reports it as the bytes it holds back.
    app.wait_tail_behind(&log, head.len() as u64);
    let s = app.stats();
    assert_eq!(
        (s.events, s.dead_letters),
        (3, 0),
        "half a line is neither stored nor rejected"
    );

    append(&log, &format!("{tail}\n"));
    settle(&app, &log, 4, 0);
    assert_eq!(
        app.sql_i64("SELECT COUNT(*) FROM events WHERE id = 'half-written'"),
        1
    );
}

#[test]
fn partial_last_line_survives_a_kill_9() {
    let b = TestApp::builder().tail("usage.log");
    let log = b.path("usage.log");
    let ts = recent_ms();
    append(&log, &native_lines("whole", 3, ts));
    let line = native_line("half-written", ts + 500);
    let (head, tail) = line.split_at(line.len() / 2);
    append(&log, head);
    let mut app = b.spawn();
    app.wait_tail_behind(&log, head.len() as u64);
    assert_eq!(app.stats().events, 3);
    app.kill9();

    append(&log, &format!("{tail}\n"));
    app.restart();
    settle(&app, &log, 4, 0);
    assert_eq!(app.metric(&tail_counter(DUPLICATE, &log, "native")), 0.0);
    assert_eq!(app.metric(&tail_counter(INGESTED, &log, "native")), 1.0);
}

const SMALL_LINES: &str = "max_line_bytes = 1024\n";

/// A valid native record of more than 1024 bytes: were it not over-long, it would be stored.
fn long_line(id: &str, ts: i64) -> String {
    let line = native_line(id, ts).replace(
        r#""route":"chat""#,
        &format!(r#""route":"{}""#, "r".repeat(1500)),
    );
    assert!(line.len() > 1024);
    line
}

#[test]
fn over_long_line_is_one_dead_letter_between_good_lines() {
    let b = TestApp::builder().tail("usage.log").config(SMALL_LINES);
    let log = b.path("usage.log");
    let ts = recent_ms();
    let first = native_line("good-1", ts) + "\n";
    let long = long_line("too-long", ts + 1) + "\n";
    let last = native_line("good-2", ts + 2) + "\n";
    append(&log, &format!("{first}{long}{last}"));
    let app = b.spawn();

    settle(&app, &log, 2, 1);
    let dl = app.dead_letters(None);
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0].source, tail_source(&log));
    assert_eq!(dl[0].position, format!("{}@{}", log.display(), first.len()));
    assert!(
        dl[0].reason.contains("1024") && dl[0].reason.contains("max_line_bytes"),
        "{}",
        dl[0].reason
    );
    assert_eq!(app.stored_ids(), vec!["good-1", "good-2"]);
    assert_eq!(app.metric(&tail_counter(REJECTED, &log, "native")), 1.0);
}

#[test]
fn over_long_line_written_in_pieces_is_one_dead_letter() {
    let b = TestApp::builder().tail("usage.log").config(SMALL_LINES);
    let log = b.path("usage.log");
    let ts = recent_ms();
    let first = native_line("good-1", ts) + "\n";
    let long = long_line("too-long", ts + 1);
    let (head, rest) = long.split_at(1100);
    append(&log, &format!("{first}{head}"));
    let app = b.spawn();
    app.wait_stats("the over-long head rejected", |s| s.dead_letters >= 1);
    append(&log, &rest[..200]);
    // Pacing, not an assertion: give the tailer a few polls to read the middle piece
    // on its own (its position inside a skipped line is not observable).
    std::thread::sleep(Duration::from_millis(300));
    append(
        &log,
        &format!("{}\n{}\n", &rest[200..], native_line("good-2", ts + 2)),
    );

    settle(&app, &log, 2, 1);
    assert_eq!(app.stored_ids(), vec!["good-1", "good-2"]);
    let dl = app.dead_letters(None);
    assert_eq!(dl[0].position, format!("{}@{}", log.display(), first.len()));
}

#[test]
fn over_long_unfinished_line_is_not_rejected_again_after_a_restart() {
    let b = TestApp::builder().tail("usage.log").config(SMALL_LINES);
    let log = b.path("usage.log");
    let ts = recent_ms();
    let long = long_line("too-long", ts + 1);
    let (head, rest) = long.split_at(1100);
    append(&log, &format!("{}\n{head}", native_line("good-1", ts)));
    let mut app = b.spawn();
    app.wait_stats("the over-long head rejected", |s| s.dead_letters >= 1);
    app.restart();
    let behind = behind_metric(&log);
    wait_until("the restarted tailer at the end of the file", WAIT, || {
        app.metric_opt(&behind).is_some()
    });
    append(
        &log,
        &format!("{rest}\n{}\n", native_line("good-2", ts + 2)),
    );

    settle(&app, &log, 2, 1);
}

#[test]
fn bad_lines_become_dead_letters_with_offset_and_reason() {
    let b = TestApp::builder().tail("usage.log");
    let log = b.path("usage.log");
    let ts = recent_ms();
    let future = now_ms() + 2 * 3600 * 1000;
    let lines = [
        native_line("good-1", ts),
        r#"{"id":"broken","ts":"#.to_string(),
        native_line("good-2", ts + 1),
        native_line("negative", ts + 2).replace(r#""prompt_tokens":120"#, r#""prompt_tokens":-5"#),
        native_line("from-the-future", future),
        native_line("good-3", ts + 3),
    ];
    let mut offsets = Vec::new();
    let mut text = String::new();
    for l in &lines {
        offsets.push(text.len());
        text.push_str(l);
        text.push('\n');
    }
    append(&log, &text);
    let app = b.spawn();

    settle(&app, &log, 3, 3);
    assert_eq!(app.stored_ids(), vec!["good-1", "good-2", "good-3"]);
    let mut dl = app.dead_letters(Some(&tail_source(&log)));
    dl.sort_by_key(|d| d.id);
    let want = [
        (1, "invalid record"),
        (3, "prompt_tokens is negative (-5)"),
        (4, "in the future"),
    ];
    assert_eq!(dl.len(), want.len());
    for (d, (line, reason)) in dl.iter().zip(want) {
        assert_eq!(d.position, format!("{}@{}", log.display(), offsets[line]));
        assert!(d.reason.contains(reason), "{}: {}", d.position, d.reason);
        assert_eq!(d.raw, lines[line], "raw line kept for inspection");
    }
    assert_eq!(app.metric(&tail_counter(REJECTED, &log, "native")), 3.0);
    assert_eq!(app.metric(&tail_counter(INGESTED, &log, "native")), 3.0);
}

#[test]
fn kill_9_mid_ingest_neither_loses_nor_repeats_a_line() {
    const TOTAL: usize = 200_000;
    const BURST: usize = 2_000;
    let b = TestApp::builder().tail("usage.log");
    let log = b.path("usage.log");
    File::create(&log).unwrap();
    let mut app = b.spawn();

    let path = log.clone();
    let base = now_ms() - 10 * 60_000;
    let writer = std::thread::spawn(move || {
        let mut f = File::options().append(true).open(&path).unwrap();
        for burst in 0..TOTAL / BURST {
            let mut buf = String::with_capacity(BURST * 200);
            for i in burst * BURST..(burst + 1) * BURST {
                buf.push_str(&native_line(&format!("k-{i}"), base + i as i64));
                buf.push('\n');
            }
            f.write_all(buf.as_bytes()).unwrap();
            std::thread::sleep(Duration::from_millis(15));
        }
    });

    for fifth in 1..=3u64 {
        let at = fifth * TOTAL as u64 / 5;
        app.wait_stats(&format!("{at} events before kill {fifth}"), |s| {
            s.events >= at
        });
        app.kill9();
        app.restart();
    }
    writer.join().unwrap();

    let total = TOTAL as u64;
    settle(&app, &log, total, 0);
    assert_eq!(
        app.metric(&tail_counter(DUPLICATE, &log, "native")),
        0.0,
        "the checkpoint makes a restart resume exactly where the last commit ended"
    );
    assert_eq!(
        app.sql_i64("SELECT CAST(SUM(requests) AS BIGINT) FROM agg_minute WHERE dim = 'global'"),
        TOTAL as i64,
        "aggregates count every event once"
    );
}

#[test]
fn restart_without_new_data_reads_nothing_again() {
    let b = TestApp::builder().tail("usage.log");
    let log = b.path("usage.log");
    append(&log, &native_lines("once", 100, recent_ms()));
    let mut app = b.spawn();
    let before = settle(&app, &log, 100, 0);

    // A clean stop, then a crash: neither may re-read a line.
    app.restart();
    app.wait_tail_behind(&log, 0);
    assert_eq!(app.metric(&tail_counter(INGESTED, &log, "native")), 0.0);
    assert_eq!(app.metric(&tail_counter(DUPLICATE, &log, "native")), 0.0);
    assert_eq!(app.stats().events, before.events);

    app.kill9();
    app.restart();
    app.wait_tail_behind(&log, 0);
    assert_eq!(app.metric(&tail_counter(INGESTED, &log, "native")), 0.0);
    assert_eq!(app.metric(&tail_counter(DUPLICATE, &log, "native")), 0.0);
    let after = app.stats();
    assert_eq!((after.events, after.dead_letters), (100, 0));
}

#[test]
fn tail_start_end_skips_existing_lines() {
    let b = TestApp::builder().tail("usage.log").tail_start("end");
    let log = b.path("usage.log");
    let ts = recent_ms();
    let half = native_line("old-unfinished", ts);
    let (head, tail) = half.split_at(40);
    append(&log, &format!("{}{head}", native_lines("old", 10, ts)));
    let app = b.spawn();
    app.wait_tail_behind(&log, 0);
    assert_eq!(app.stats().events, 0);

    // The unfinished line was begun before we started: skipped, not half-read.
    append(
        &log,
        &format!("{tail}\n{}", native_lines("new", 5, ts + 100)),
    );
    settle(&app, &log, 5, 0);
    assert_eq!(app.stored_ids(), sorted_ids("new", 5));
}

#[test]
fn tail_start_end_keeps_its_position_across_a_restart() {
    let b = TestApp::builder().tail("usage.log").tail_start("end");
    let log = b.path("usage.log");
    let ts = recent_ms();
    append(&log, &native_lines("old", 10, ts));
    let mut app = b.spawn();
    app.wait_tail_behind(&log, 0);
    app.terminate();

    // Written while the daemon was down, after it had started following the file.
    append(&log, &native_lines("while-down", 5, ts + 100));
    app.restart();
    app.wait_tail_behind(&log, 0);
    let s = app.stats();
    assert_eq!(
        s.events, 5,
        "lines written while stopped are read after the restart, old ones still not"
    );
    assert_eq!(app.stored_ids(), sorted_ids("while-down", 5));
}

const ROUTER: &str = r#"
[formats.router]
kind = "csv"
[formats.router.fields]
ts = "time"
model = "model"
cost_usd = "cost"
"#;

fn csv_rows(from: usize, count: usize, ts: i64) -> String {
    (from..from + count)
        .map(|i| {
            let t = chrono::DateTime::from_timestamp_millis(ts + i as i64 * 10)
                .unwrap()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            format!("{t},gpt-4o-mini,0.00{i:03}\n")
        })
        .collect()
}

#[test]
fn mapped_csv_reads_rows_and_rereads_its_header_after_a_restart() {
    let b = TestApp::builder()
        .tail_as("router.csv", "router")
        .config(ROUTER);
    let log = b.path("router.csv");
    let ts = recent_ms();
    append(&log, &format!("time,model,cost\n{}", csv_rows(0, 20, ts)));
    let mut app = b.spawn();
    settle(&app, &log, 20, 0);
    assert_eq!(app.metric(&tail_counter(SKIPPED, &log, "router")), 1.0);
    assert_eq!(app.metric(&tail_counter(INGESTED, &log, "router")), 20.0);

    app.kill9();
    append(&log, &csv_rows(20, 15, ts));
    app.restart();
    settle(&app, &log, 35, 0);
    assert_eq!(app.metric(&tail_counter(INGESTED, &log, "router")), 15.0);
    assert_eq!(app.metric(&tail_counter(SKIPPED, &log, "router")), 0.0);
    assert_eq!(app.metric(&tail_counter(DUPLICATE, &log, "router")), 0.0);

    // Rotated: the new file starts with its own header.
    std::fs::rename(&log, app.path("router.csv.1")).unwrap();
    append(&log, &format!("time,model,cost\n{}", csv_rows(35, 5, ts)));
    settle(&app, &log, 40, 0);

    let (models, cost) = app
        .sql_rows(
            "SELECT COUNT(DISTINCT model), SUM(cost_usd) FROM events",
            |r| Ok((r.int(0)?, r.real(1)?)),
        )
        .remove(0);
    assert_eq!(models, 1);
    let want: f64 = (0..40).map(|i| i as f64 / 100_000.0).sum();
    assert!((cost - want).abs() < 1e-9, "cost {cost} != {want}");
}
