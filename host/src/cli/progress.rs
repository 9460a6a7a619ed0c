//! Progress bars for bulk reads (an initial snapshot, a resync): drawn by
//! `ferry run` on a terminal, by `ferry status` and by `ferry resync`.

use crate::admin::PipelineHandle;
use crate::sources::BulkProgress;
use std::io::{IsTerminal as _, Write as _};
use std::time::Duration;

const WIDTH: usize = 30;

/// `snapshot [#########.....................]  30%  3,000/10,000 rows`.
pub(crate) fn bar(bulk: &BulkProgress) -> String {
    let done = if bulk.done { "  done" } else { "" };
    match bulk.total {
        Some(total) => {
            let fraction = if total == 0 {
                1.0
            } else {
                (bulk.delivered as f64 / total as f64).min(1.0)
            };
            let filled = (fraction * WIDTH as f64).round() as usize;
            format!(
                "{} [{}{}] {:>3}%  {}/{} {}{done}",
                bulk.kind,
                "#".repeat(filled),
                ".".repeat(WIDTH - filled),
                (fraction * 100.0).floor() as u64,
                thousands(bulk.delivered),
                thousands(total),
                bulk.unit,
            )
        }
        None => format!(
            "{}  {} {} delivered, {} read{done}",
            bulk.kind,
            thousands(bulk.delivered),
            bulk.unit,
            thousands(bulk.read)
        ),
    }
}

/// `12345678` → `12,345,678`.
pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (at, digit) in digits.chars().enumerate() {
        if at > 0 && (digits.len() - at).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// While ferry runs on a terminal: redraws one line per pipeline whose
/// bulk read is under way, and leaves its last state on screen when done.
pub(crate) async fn draw_while_running(pipelines: Vec<PipelineHandle>) {
    if !std::io::stderr().is_terminal() {
        return;
    }
    let mut shown: Vec<Option<BulkProgress>> = vec![None; pipelines.len()];
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        for (pipeline, shown) in pipelines.iter().zip(shown.iter_mut()) {
            let Some(bulk) = pipeline.stats.source.bulk() else {
                continue;
            };
            if shown.as_ref() == Some(&bulk) || shown.as_ref().is_some_and(|s| s.done) {
                continue;
            }
            let end = if bulk.done { "\n" } else { "" };
            let mut stderr = std::io::stderr().lock();
            let _ = write!(stderr, "\r\x1b[2K{}: {}{end}", pipeline.name, bar(&bulk));
            let _ = stderr.flush();
            *shown = Some(bulk);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(delivered: u64, total: Option<u64>, done: bool) -> BulkProgress {
        BulkProgress {
            kind: "snapshot".into(),
            id: "0/1".into(),
            unit: "rows".into(),
            total,
            read: delivered + 5,
            delivered,
            done,
        }
    }

    #[test]
    fn bars_show_the_delivered_share() {
        assert_eq!(
            bar(&bulk(3000, Some(10_000), false)),
            "snapshot [#########.....................]  30%  3,000/10,000 rows"
        );
        assert_eq!(
            bar(&bulk(0, Some(0), true)),
            "snapshot [##############################] 100%  0/0 rows  done"
        );
        assert_eq!(
            bar(&bulk(7, None, false)),
            "snapshot  7 rows delivered, 12 read"
        );
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(12_345_678), "12,345,678");
    }
}
