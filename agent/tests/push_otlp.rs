//! `goheap agent --push otlp+http://...` against a real OpenTelemetry Collector (fixtures/otelcol:
//! otelcol + otlpreceiver + contrib's fileexporter, v0.161.0, profiles feature gate on). What the
//! collector wrote is decoded with the collector's own pdata/pprofile (`goheap-otelcol decode`) and
//! compared with goheap's own delta profile of the same process and interval (`--output-dir`):
//! every stack's alloc_objects and alloc_space within ±1, the totals too, and the resource
//! attributes of the semantic conventions (agent_common/otelcol.rs, shared with push_tls.rs).

mod agent_common;

use agent_common::otelcol::push_to_collector;

#[test]
fn otlp_http_profiles_reach_a_real_collector_equal_to_goheaps_own() {
    push_to_collector(
        "http",
        None,
        |c| format!("otlp+http://127.0.0.1:{}", c.port),
        &[],
    );
}

#[test]
fn otlp_grpc_profiles_reach_a_real_collector_equal_to_goheaps_own() {
    push_to_collector(
        "grpc",
        None,
        |c| format!("otlp+grpc://127.0.0.1:{}", c.grpc_port),
        &[],
    );
}
