//! The admin HTTP server: health, readiness, status, metrics and plugin
//! reloads, on one port (`[admin] listen`), off by default.
//!
//! - `GET /healthz`: 200 while the process serves requests.
//! - `GET /readyz`: 200 when every pipeline is running, 503 otherwise, with
//!   the state of each.
//! - `GET /status`: every pipeline's state, plugin and counters, as JSON.
//! - `GET /metrics`: the same counters in the Prometheus text format.
//! - `POST /pipelines/{name}/reload`: loads the plugin file again; answers
//!   the active digest (200) or why the new version was rejected (422).

use crate::pipeline::{Command, Histogram, PipelineStats, State};
use axum::Json;
use axum::extract::{Path, State as Shared};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use tokio::sync::{mpsc, oneshot};

/// A running pipeline, as the admin server and signal handlers see it.
#[derive(Clone)]
pub struct PipelineHandle {
    pub name: String,
    pub commands: mpsc::UnboundedSender<Command>,
    pub stats: Arc<PipelineStats>,
}

impl PipelineHandle {
    /// Asks the pipeline to reload its plugin; the active digest, or why the
    /// new version was rejected.
    pub async fn reload(&self) -> Result<String, String> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Reload { reply })
            .map_err(|_| format!("pipeline {} is not running", self.name))?;
        answer
            .await
            .map_err(|_| format!("pipeline {} stopped before reloading", self.name))?
    }
}

impl PipelineHandle {
    /// Asks the pipeline's source to publish the current state again; the
    /// resync's id once it started, or why it cannot.
    pub async fn resync(&self) -> Result<String, String> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Resync { reply })
            .map_err(|_| format!("pipeline {} is not running", self.name))?;
        answer
            .await
            .map_err(|_| format!("pipeline {} stopped before resyncing", self.name))?
    }

    /// The pipeline's parked lanes; none when it is not running.
    pub async fn parked(&self) -> Vec<crate::pipeline::ParkedLane> {
        let (reply, answer) = oneshot::channel();
        if self.commands.send(Command::Parked { reply }).is_err() {
            return Vec::new();
        }
        answer.await.unwrap_or_default()
    }
}

type Pipelines = Arc<[PipelineHandle]>;

/// Binds `listen` and serves until the process ends. Binding happens before
/// this returns, so a port in use is an error at start.
pub async fn serve(
    listen: SocketAddr,
    pipelines: Vec<PipelineHandle>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("admin.listen: cannot listen on {listen}: {e}"))?;
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/pipelines/{name}/reload", post(reload))
        .route("/pipelines/{name}/resync", post(resync))
        .with_state(Pipelines::from(pipelines));
    tracing::info!(%listen, "Admin HTTP server listening.");
    Ok(tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "The admin HTTP server stopped.");
        }
    }))
}

async fn readyz(Shared(pipelines): Shared<Pipelines>) -> Response {
    let states: serde_json::Map<String, Value> = pipelines
        .iter()
        .map(|p| (p.name.clone(), json!(p.stats.state().0)))
        .collect();
    // Ready: every pipeline running and its source connected (a Postgres
    // source reconnecting, or waiting for a slot in use, is not).
    let ready = pipelines
        .iter()
        .all(|p| p.stats.state().0 == State::Running && p.stats.source.connected());
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(json!({ "ready": ready, "pipelines": states }))).into_response()
}

async fn status(Shared(pipelines): Shared<Pipelines>) -> Json<Value> {
    let mut all = Vec::with_capacity(pipelines.len());
    for pipeline in pipelines.iter() {
        all.push(pipeline_status(pipeline).await);
    }
    Json(json!({ "pipelines": all }))
}

async fn pipeline_status(pipeline: &PipelineHandle) -> Value {
    let parked: Vec<Value> = pipeline
        .parked()
        .await
        .into_iter()
        .map(|lane| {
            json!({
                "key": lane.lane.to_string(),
                "position": lane.position,
                "error": lane.error,
                "held": lane.held,
            })
        })
        .collect();
    let stats = &pipeline.stats;
    let (state, error) = stats.state();
    let engine = &stats.engine;
    json!({
        "name": pipeline.name,
        "state": state,
        "connected": stats.source.connected(),
        "error": error,
        "plugin": {
            "digest": stats.plugin.active(),
            "reloads": stats.plugin.reloads.load(Relaxed),
            "rejected": stats.plugin.rejected.load(Relaxed),
        },
        "checkpoint": stats.source.checkpoint(),
        "lag": stats.source.lag_unit().map(|unit| json!({
            "value": stats.source.lag.load(Relaxed),
            "unit": unit,
        })),
        "bulk": stats.source.bulk(),
        "items_read": stats.items_read.load(Relaxed),
        "delivered": engine.delivered.load(Relaxed),
        "retries": engine.retries.load(Relaxed),
        "dead_letters": engine.dead_letters.load(Relaxed),
        "parked_keys": engine.parked_lanes.load(Relaxed),
        "parked": parked,
        "parked_items": engine.parked_items.load(Relaxed),
        "open_items": engine.open_items.load(Relaxed),
    })
}

async fn resync(Shared(pipelines): Shared<Pipelines>, Path(name): Path<String>) -> Response {
    let Some(pipeline) = pipelines.iter().find(|p| p.name == name) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": format!("no pipeline named {name}") })),
        )
            .into_response();
    };
    match pipeline.resync().await {
        Ok(id) => Json(json!({ "pipeline": name, "resync": id })).into_response(),
        Err(error) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({ "pipeline": name, "error": error })),
        )
            .into_response(),
    }
}

async fn reload(Shared(pipelines): Shared<Pipelines>, Path(name): Path<String>) -> Response {
    let Some(pipeline) = pipelines.iter().find(|p| p.name == name) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": format!("no pipeline named {name}") })),
        )
            .into_response();
    };
    match pipeline.reload().await {
        Ok(digest) => Json(json!({ "pipeline": name, "digest": digest })).into_response(),
        Err(error) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({ "pipeline": name, "error": error })),
        )
            .into_response(),
    }
}

async fn metrics(Shared(pipelines): Shared<Pipelines>) -> Response {
    (
        [("content-type", "text/plain; version=0.0.4")],
        render_metrics(&pipelines),
    )
        .into_response()
}

/// One metric family: its help, type, and a value per pipeline.
struct Family {
    name: &'static str,
    help: &'static str,
    kind: &'static str,
    value: fn(&PipelineStats) -> u64,
}

const FAMILIES: &[Family] = &[
    Family {
        name: "ferry_items_read_total",
        help: "Items read from the source (events, undecodable input, transaction ends).",
        kind: "counter",
        value: |s| s.items_read.load(Relaxed),
    },
    Family {
        name: "ferry_outputs_delivered_total",
        help: "Outputs the sink acknowledged.",
        kind: "counter",
        value: |s| s.engine.delivered.load(Relaxed),
    },
    Family {
        name: "ferry_retries_total",
        help: "Retries of failed deliveries, remaps and dead-letter writes.",
        kind: "counter",
        value: |s| s.engine.retries.load(Relaxed),
    },
    Family {
        name: "ferry_dead_letters_total",
        help: "Failures written to the dead-letter destination.",
        kind: "counter",
        value: |s| s.engine.dead_letters.load(Relaxed),
    },
    Family {
        name: "ferry_parked_keys",
        help: "Keys (or tenants) held by the park policy.",
        kind: "gauge",
        value: |s| s.engine.parked_lanes.load(Relaxed),
    },
    Family {
        name: "ferry_open_items",
        help: "Items read and not yet delivered.",
        kind: "gauge",
        value: |s| s.engine.open_items.load(Relaxed),
    },
    Family {
        name: "ferry_plugin_reloads_total",
        help: "New plugin versions swapped in.",
        kind: "counter",
        value: |s| s.plugin.reloads.load(Relaxed),
    },
    Family {
        name: "ferry_plugin_reloads_rejected_total",
        help: "New plugin versions rejected (the running one stayed).",
        kind: "counter",
        value: |s| s.plugin.rejected.load(Relaxed),
    },
];

/// A histogram family: its help and a histogram per pipeline.
struct HistogramFamily {
    name: &'static str,
    help: &'static str,
    value: fn(&PipelineStats) -> &Histogram,
}

const HISTOGRAMS: &[HistogramFamily] = &[
    HistogramFamily {
        name: "ferry_plugin_call_seconds",
        help: "Time of each plugin call (one batch).",
        value: |s| &s.plugin_calls,
    },
    HistogramFamily {
        name: "ferry_sink_call_seconds",
        help: "Time of each sink call (a slice of one unit of order), until acknowledged or failed.",
        value: |s| &s.engine.sink_calls,
    },
];

fn render_metrics(pipelines: &[PipelineHandle]) -> String {
    let mut text = String::new();
    for family in FAMILIES {
        let _ = writeln!(text, "# HELP {} {}", family.name, family.help);
        let _ = writeln!(text, "# TYPE {} {}", family.name, family.kind);
        for pipeline in pipelines {
            let _ = writeln!(
                text,
                "{}{{pipeline=\"{}\"}} {}",
                family.name,
                pipeline.name,
                (family.value)(&pipeline.stats)
            );
        }
    }
    text.push_str("# HELP ferry_plugin_info The plugin version new batches go to.\n");
    text.push_str("# TYPE ferry_plugin_info gauge\n");
    for pipeline in pipelines {
        let _ = writeln!(
            text,
            "ferry_plugin_info{{pipeline=\"{}\",digest=\"{}\"}} 1",
            pipeline.name,
            pipeline.stats.plugin.active()
        );
    }
    for family in HISTOGRAMS {
        let _ = writeln!(text, "# HELP {} {}", family.name, family.help);
        let _ = writeln!(text, "# TYPE {} histogram", family.name);
        for pipeline in pipelines {
            let labels = format!("pipeline=\"{}\"", pipeline.name);
            (family.value)(&pipeline.stats).render(family.name, &labels, &mut text);
        }
    }
    text.push_str("# HELP ferry_source_lag How far the source's checkpoint is behind its end (Postgres: WAL bytes; Kafka: records, with statistics.interval.ms set).\n");
    text.push_str("# TYPE ferry_source_lag gauge\n");
    for pipeline in pipelines {
        if let Some(unit) = pipeline.stats.source.lag_unit() {
            let _ = writeln!(
                text,
                "ferry_source_lag{{pipeline=\"{}\",unit=\"{unit}\"}} {}",
                pipeline.name,
                pipeline.stats.source.lag.load(Relaxed)
            );
        }
    }
    text.push_str("# HELP ferry_bulk_progress A bulk read (initial snapshot, resync): items read, delivered, and the total when known.\n");
    text.push_str("# TYPE ferry_bulk_progress gauge\n");
    for pipeline in pipelines {
        let Some(bulk) = pipeline.stats.source.bulk() else {
            continue;
        };
        let counts = [
            ("read", Some(bulk.read)),
            ("delivered", Some(bulk.delivered)),
            ("total", bulk.total),
        ];
        for (count, value) in counts {
            if let Some(value) = value {
                let _ = writeln!(
                    text,
                    "ferry_bulk_progress{{pipeline=\"{}\",kind=\"{}\",count=\"{count}\"}} {value}",
                    pipeline.name, bulk.kind
                );
            }
        }
    }
    text.push_str("# HELP ferry_pipeline_up 1 while the pipeline is running.\n");
    text.push_str("# TYPE ferry_pipeline_up gauge\n");
    for pipeline in pipelines {
        let (state, _) = pipeline.stats.state();
        let _ = writeln!(
            text,
            "ferry_pipeline_up{{pipeline=\"{}\",state=\"{}\"}} {}",
            pipeline.name,
            state.as_str(),
            u8::from(state == State::Running)
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_prometheus_text_per_pipeline() {
        let (commands, _) = mpsc::unbounded_channel();
        let stats = Arc::new(PipelineStats::default());
        stats.engine.delivered.store(7, Relaxed);
        stats.plugin.reloads.store(2, Relaxed);
        stats.set_state(State::Running, None);
        let text = render_metrics(&[PipelineHandle {
            name: "orders".into(),
            commands,
            stats,
        }]);
        assert!(text.contains("# TYPE ferry_outputs_delivered_total counter\n"));
        assert!(text.contains("ferry_outputs_delivered_total{pipeline=\"orders\"} 7\n"));
        assert!(text.contains("ferry_plugin_reloads_total{pipeline=\"orders\"} 2\n"));
        assert!(text.contains("ferry_pipeline_up{pipeline=\"orders\",state=\"running\"} 1\n"));
        assert!(text.contains("# TYPE ferry_plugin_call_seconds histogram\n"));
        assert!(text.contains("ferry_sink_call_seconds_count{pipeline=\"orders\"} 0\n"));
    }
}
