"""Generates the Grafana dashboards in dashboards/ (checked in; rerun after editing):
    python3 monitoring/grafana/dashboards.py
Every panel's query is run against a live Prometheus by tests/tests/it/observability.rs."""
import json
import os

DS = {"type": "prometheus", "uid": "prometheus"}


def panel(pid, title, exprs, unit="short", x=0, y=0, w=12, h=8):
    targets = [{"refId": chr(65 + i), "expr": e, "legendFormat": legend, "datasource": DS}
               for i, (e, legend) in enumerate(exprs)]
    return {"id": pid, "type": "timeseries", "title": title, "datasource": DS, "targets": targets,
            "gridPos": {"x": x, "y": y, "w": w, "h": h},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom"}}}


def dashboard(uid, title, panels):
    laid = []
    for i, (t, exprs, unit) in enumerate(panels):
        laid.append(panel(i + 1, t, exprs, unit, x=(i % 2) * 12, y=(i // 2) * 8))
    return {"uid": uid, "title": title, "tags": ["driftwood"], "timezone": "utc", "schemaVersion": 39,
            "version": 1, "refresh": "30s", "time": {"from": "now-6h", "to": "now"}, "panels": laid,
            "templating": {"list": []}, "annotations": {"list": []}}


PIPELINE = dashboard("driftwood-pipeline", "Driftwood / Pipeline overview", [
    ("Records in (text.raw)", [("sum(rate(driftwood_ingest_records_total[1m]))", "records/s")], "ops"),
    ("Bytes in", [("sum(rate(driftwood_ingest_bytes_total[1m]))", "bytes/s")], "Bps"),
    ("Dead letters by reason", [("sum by (reason) (rate(driftwood_ingest_dead_letters_total[5m]))", "{{reason}}")], "ops"),
    ("Rows in the latest version", [("driftwood_snapshot_rows", "rows")], "short"),
    ("Snapshot commits", [("sum(increase(driftwood_snapshot_commits_total[5m]))", "commits / 5m"),
                          ("sum(increase(driftwood_snapshot_rows_added_total[5m]))", "rows added / 5m")], "short"),
    ("Snapshot commit duration (p95)", [("histogram_quantile(0.95, sum by (le) (rate(driftwood_snapshot_commit_duration_seconds_bucket[5m])))", "p95")], "s"),
    ("Consumer lag", [("sum(driftwood_snapshot_lag_records)", "snapshot"),
                      ("sum(driftwood_scorer_lag_records)", "scorer")], "short"),
    ("Scored records", [("sum by (status) (rate(driftwood_scorer_records_total[1m]))", "{{status}}")], "ops"),
    ("Partitions held per scorer (0: more scorers than partitions)",
     [("driftwood_scorer_assigned_partitions", "{{instance}}")], "short"),
    ("Scorer end-to-end latency", [
        ("histogram_quantile(0.5, sum by (le) (rate(driftwood_scorer_end_to_end_seconds_bucket[5m])))", "p50"),
        ("histogram_quantile(0.99, sum by (le) (rate(driftwood_scorer_end_to_end_seconds_bucket[5m])))", "p99")], "s"),
])

SERVING = dashboard("driftwood-serving", "Driftwood / Serving", [
    ("Requests by route and status", [("sum by (route, status) (rate(driftwood_serving_requests_total[1m]))", "{{route}} {{status}}")], "reqps"),
    ("Predict latency", [
        ("histogram_quantile(0.5, sum by (le) (rate(driftwood_serving_request_duration_seconds_bucket{route=\"/v1/predict\"}[5m])))", "p50"),
        ("histogram_quantile(0.99, sum by (le) (rate(driftwood_serving_request_duration_seconds_bucket{route=\"/v1/predict\"}[5m])))", "p99")], "s"),
    ("Errors by type", [("sum by (error_type) (rate(driftwood_serving_errors_total[5m]))", "{{error_type}}")], "ops"),
    ("Batch size (p50)", [("histogram_quantile(0.5, sum by (le, channel) (rate(driftwood_serving_batch_size_bucket[5m])))", "{{channel}}")], "short"),
    ("Model version served", [("driftwood_serving_model_version", "version")], "short"),
    ("Model queue depth", [("driftwood_serving_queue_depth", "jobs waiting")], "short"),
    ("Prediction log drops", [("sum by (channel) (rate(driftwood_prediction_log_dropped_total[5m]))", "{{channel}}")], "ops"),
])

DRIFT = dashboard("driftwood-drift", "Driftwood / Drift and model quality", [
    ("PSI per feature", [("driftwood_drift_statistic{statistic=\"psi\"}", "{{feature}}")], "short"),
    ("KS D per feature", [("driftwood_drift_statistic{statistic=\"ks\"}", "{{feature}}")], "short"),
    ("Predicted-class chi-square", [("driftwood_drift_statistic{statistic=\"chi_square\"}", "chi-square")], "short"),
    ("Accuracy on labelled records", [("driftwood_drift_statistic{statistic=\"accuracy\"}", "accuracy")], "percentunit"),
    ("Windows evaluated", [("sum(increase(driftwood_drift_windows_total[15m]))", "windows / 15m")], "short"),
    ("Confirmed drift", [("sum by (feature, statistic) (increase(driftwood_drift_detected_total[1h]))", "{{feature}} {{statistic}}")], "short"),
    ("Retraining", [("sum(increase(driftwood_drift_retrain_requests_total[1h]))", "requested"),
                    ("sum by (outcome) (increase(driftwood_retrain_total[1h]))", "{{outcome}}")], "short"),
    ("Training runs (retrainer)", [("sum by (status) (increase(driftwood_training_runs_total[1d]))", "{{status}}"),
                                   ("histogram_quantile(0.5, sum by (le) (rate(driftwood_training_duration_seconds_bucket[1d])))", "median duration (s)")], "short"),
    ("Model version watched", [("driftwood_drift_model_version", "monitor"),
                               ("driftwood_serving_model_version", "serving")], "short"),
])

here = os.path.dirname(os.path.abspath(__file__))
for name, d in [("pipeline", PIPELINE), ("serving", SERVING), ("drift", DRIFT)]:
    with open(os.path.join(here, "dashboards", f"{name}.json"), "w") as f:
        json.dump(d, f, indent=2)
        f.write("\n")
print("wrote", ", ".join(f"{n}.json" for n in ["pipeline", "serving", "drift"]))
